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
    select * from (
    {%- for trait in var('profile_traits') %}
        {{ 'union all' if not loop.first }}
        select 'events:' || event_id as record_id,
               case when user_id is not null then 'user_id' else 'anonymous_id' end as identifier_type,
               coalesce(user_id, anonymous_id) as raw_value, {{ cdp_literal(trait) }} as trait,
               {{ json_text('traits', '$.' ~ trait) }} as value, 'events' as source,
               {{ trait_rank(trait, 'events') }} as source_rank, occurred_at as observed_at
        from ({{ events }}) as e where event_type = 'identify'
    {%- endfor %}
    {%- for name, rows in tables.items() %}
        {%- set source = var('sources')[name] -%}
        {%- set column = strongest_identifier(source.identifiers) -%}
        {%- set seen = cdp_ident(source.time_column) if source.get('time_column') else 'received_at' -%}
        {%- for trait in source.traits %}
        union all
        select {{ cdp_literal(name ~ ':') }} || {{ cdp_ident(source.primary_key) }}::varchar,
               {{ cdp_literal(source.identifiers[column]) }}, {{ cdp_ident(column) }}::varchar, {{ cdp_literal(trait) }},
               {{ cdp_ident(trait) }}::varchar, {{ cdp_literal(name) }}, {{ trait_rank(trait, name) }}, {{ seen }}::timestamp
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
