{# The normalized form of a raw identifier value (email, phone, ...), as the identity stage computed it. #}
{% macro normalized_identifier(identifier_type, raw_value) -%}
    (select l.identifier_value
     from {{ source('core', 'identifier_lookup') }} as l
     where l.identifier_type = '{{ identifier_type }}' and l.raw_value = ({{ raw_value }})::varchar)
{%- endmacro %}

{# The person holding a normalized identifier, from cdp.id_map. #}
{% macro person_of(identifier_type, normalized_value) -%}
    (select m.person_id
     from {{ source('cdp', 'id_map') }} as m
     where m.identifier_type = '{{ identifier_type }}' and m.identifier_value = {{ normalized_value }})
{%- endmacro %}

{# The build time as a UTC timestamp, the type of every event and purchase time; `--vars '{now: ...}'` fixes
   it (a rebuild "as of" a time, and tests). #}
{% macro utc_now() -%}
    {%- if var('now', none) -%}
        '{{ var('now') | replace("'", "''") }}'::timestamp
    {%- else -%}
        (now() at time zone 'UTC')::timestamp
    {%- endif -%}
{%- endmacro %}
