{#- Trait observations (config/traits.yaml `traits:` and sources' `traits:`): every value a record reports
    for a profile trait, keyed by the raw identifier that names whom the record is about, ranked by
    survivorship (position of the source in the trait's list; an unlisted source ranks after the listed). -#}
{% macro trait_rank(trait, source) -%}
    {%- set order = var('trait_sources', {}).get(trait, []) -%}
    {{ order.index(source) if source in order else order | length }}
{%- endmacro %}

{# Of a source's identifier columns (column -> type), the one naming whom a row is about: the highest priority. #}
{% macro strongest_identifier(identifiers) -%}
    {%- set types = var('identifier_types') -%}
    {%- set ranked = [] -%}
    {%- for column, type in identifiers.items() -%}
        {%- do ranked.append(((types.index(type) if type in types else types | length), column)) -%}
    {%- endfor -%}
    {{ return((ranked | sort | first)[1]) }}
{%- endmacro %}

{# (record_id, identifier_type, raw_value, trait, value, source, source_rank, observed_at) of identify calls and
   of table sources with `traits:`, over the given rows (see record_sightings). #}
{% macro record_observations(events, tables) -%}
    {#- webhook sources map traits onto their events: those report traits like identify calls, ranked as their source -#}
    {%- set webhooks = [] -%}
    {%- for name, source in var('sources').items() if source.kind == 'webhook' and source.get('mapping', {}).get('traits') -%}
        {%- do webhooks.append(name) -%}
    {%- endfor -%}
    {%- set email = "nullif(trim(" ~ json_text('traits', '$.email') ~ "), '')" -%}
    {%- set phone = "nullif(trim(" ~ json_text('traits', '$.phone') ~ "), '')" -%}
    select * from (
    {%- for trait in var('profile_traits') %}
        {{ 'union all' if not loop.first }}
        select 'events:' || event_id as record_id,
               case when user_id is not null then 'user_id' when anonymous_id is not null then 'anonymous_id'
                    when {{ email }} is not null then 'email' else 'phone' end as identifier_type,
               {#- raw as the sightings hold it (core.identifier_lookup is keyed by the raw value) #}
               case when user_id is not null then user_id when anonymous_id is not null then anonymous_id
                    when {{ email }} is not null then {{ json_text('traits', '$.email') }}
                    else {{ json_text('traits', '$.phone') }} end as raw_value, {{ cdp_literal(trait) }} as trait,
               {{ json_text('traits', '$.' ~ trait) }} as value,
               case when event_type = 'identify' then 'events' else source end as source,
               case when event_type = 'identify' then {{ trait_rank(trait, 'events') }}
               {%- for name in webhooks %} when source = {{ cdp_literal(name) }} then {{ trait_rank(trait, name) }}{% endfor %}
               end as source_rank, occurred_at as observed_at
        from ({{ events }}) as e
        where event_type = 'identify'
        {%- if webhooks %} or (event_type = 'track' and source in ({% for name in webhooks %}{{ cdp_literal(name) }}{{ ', ' if not loop.last }}{% endfor %})){% endif %}
    {%- endfor %}
    {%- for name, rows in tables.items() %}
        {%- set source = var('sources')[name] -%}
        {%- set column = strongest_identifier(source.identifiers) -%}
        {%- set seen = cdp_ident(source.time_column) if source.get('time_column') else 'received_at' -%}
        {%- for trait in source.traits %}
        union all
        select {{ cdp_literal(name ~ ':') }} || {{ cdp_ident(source.primary_key) }}::{{ t_string() }},
               {{ cdp_literal(source.identifiers[column]) }}, {{ cdp_ident(column) }}::{{ t_string() }}, {{ cdp_literal(trait) }},
               {{ cdp_ident(trait) }}::{{ t_string() }}, {{ cdp_literal(name) }}, {{ trait_rank(trait, name) }}, {{ seen }}::timestamp
        from ({{ rows }}) as t
        {%- endfor %}
    {%- endfor %}
    ) as o
    where trim(value) <> '' and raw_value is not null
{%- endmacro %}

{% macro observations_since(since, removed=false) -%}
    {%- set tables = {} -%}
    {%- for name, source in table_sources_with('traits').items() if source.get('identifiers') -%}
        {%- do tables.update({name: validated_since(name, since, removed)}) -%}
    {%- endfor -%}
    {{ record_observations(events_since(since, removed), tables) }}
{%- endmacro %}

{# One row per person of (person_id, trait, value) rows `relation`, a column per trait of `traits`. #}
{% macro pivot_traits(relation, traits) -%}
    {{ return(adapter.dispatch('pivot_traits', 'cdp')(relation, traits)) }}
{%- endmacro %}
{% macro default__pivot_traits(relation, traits) -%}
    pivot (select person_id, trait, value from {{ relation }})
    on trait in ({% for trait in traits %}'{{ trait }}'{{ ", " if not loop.last }}{% endfor %})
    using first(value)
    group by person_id
{%- endmacro %}
{#- survivorship keeps one value per person and trait (tested): max() is that value -#}
{% macro spark__pivot_traits(relation, traits) -%}
    select person_id
    {%- for trait in traits %},
        max(value) filter (where trait = {{ cdp_literal(trait) }}) as {{ cdp_ident(trait) }}
    {%- endfor %}
    from {{ relation }}
    group by person_id
{%- endmacro %}
