{#- The identifiers a record carries (contract §4, config/sources.yaml `identifiers:`), one row each:
    (record_id, source, identifier_type, raw_value, seen_at). Events link what a Segment message carries:
    userId, anonymousId, an alias's previousId (an earlier anonymous id of the same person),
    `context.device.id` and the identify traits email and phone; table sources the columns mapped to
    identifier types. `events` is a query of cdp.events-shaped rows, `tables` maps a source to a query of
    its validated rows (the live rows changed, or the rows removed, since some batch). -#}
{% macro record_sightings(events, tables) -%}
    {%- set event_identifiers = [
        ('user_id', 'user_id'),
        ('anonymous_id', 'anonymous_id'),
        ('anonymous_id', "case when event_type = 'alias' then previous_id end"),
        ('device_id', json_text('context', '$.device.id')),
        ('email', json_text('traits', '$.email')),
        ('phone', json_text('traits', '$.phone')),
    ] -%}
    select * from (
    {%- for type, expression in event_identifiers %}
        {{ 'union all' if not loop.first }}
        select 'events:' || event_id as record_id, source, {{ cdp_literal(type) }} as identifier_type,
               ({{ expression }})::{{ t_string() }} as raw_value, occurred_at as seen_at
        from ({{ events }}) as e
    {%- endfor %}
    {%- for name, rows in tables.items() %}
        {%- set source = var('sources')[name] -%}
        {%- set seen = cdp_ident(source.time_column) if source.get('time_column') else 'received_at' -%}
        {%- for column, type in source.identifiers.items() %}
        union all
        select {{ cdp_literal(name ~ ':') }} || {{ cdp_ident(source.primary_key) }}::{{ t_string() }}, {{ cdp_literal(name) }},
               {{ cdp_literal(type) }}, {{ cdp_ident(column) }}::{{ t_string() }}, {{ seen }}::timestamp
        from ({{ rows }}) as t
        {%- endfor %}
    {%- endfor %}
    ) as sightings
    where raw_value is not null
{%- endmacro %}

{# The sightings of the records changed (live rows) or removed (removed=true) after batch `since`. #}
{% macro sightings_since(since, removed=false) -%}
    {%- set tables = {} -%}
    {%- for name in table_sources_with('identifiers') -%}
        {%- do tables.update({name: validated_since(name, since, removed)}) -%}
    {%- endfor -%}
    {{ record_sightings(events_since(since, removed), tables) }}
{%- endmacro %}

{# The rank of an identifier type: its position in config/identity.yaml, unknown types after every named one. #}
{% macro identifier_rank(column) -%}
    {%- set types = var('identifier_types') -%}
    case {{ column }}
    {%- for type in types %} when {{ cdp_literal(type) }} then {{ loop.index0 }}{% endfor %}
    else {{ types | length }} end
{%- endmacro %}

{# The build time as a UTC timestamp, the type of every event and purchase time; `--vars '{now: ...}'` fixes
   it (a rebuild "as of" a time, and tests). #}
{% macro utc_now() -%}
    {%- if var('now', none) -%}
        '{{ var('now') | replace("'", "''") }}'::timestamp
    {%- else -%}
        {{ now_utc() }}
    {%- endif -%}
{%- endmacro %}
