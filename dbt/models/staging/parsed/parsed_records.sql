{#- Every table source's records (config/sources.yaml kinds cdc, api, csv, postgres), typed by its declared
    columns and packed in `typed` (a JSON object). A view, like parsed_events. -#}
{%- set names = [] %}
{%- for name, source in var('sources').items() if source.kind not in ('events', 'webhook') %}{% do names.append(name) %}{% endfor %}
-- depends_on: {{ source('raw', 'crm_customers') }}, {{ source('raw', 'orders') }}, {{ source('raw', 'pos') }}
{%- if not names %}
select null::varchar as raw_source, null::varchar as partition_key, null::varchar as file, null::bigint as line_no,
       null::varchar as record, null::timestamp as loaded_at, null::boolean as parsed, null::timestamp as received_at,
       []::varchar[] as parse_errors, []::varchar[] as unreadable_columns, null::json as typed, null::varchar as op,
       null::bigint as source_lsn, null::bigint as source_ts_ms
where false
{%- endif %}
{%- for name in names %}
{%- if not loop.first %}
union all
{% endif %}
select * from (
    {{ parse_table_source(name) }}
)
{%- endfor %}
