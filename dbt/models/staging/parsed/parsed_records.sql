{#- Every table source's records (config/sources.yaml kinds cdc, api, csv, postgres), typed by its declared
    columns and packed in `typed` (a JSON object). A view, like parsed_events. -#}
{%- set names = [] %}
{%- for name, source in var('sources').items() if source.kind not in ('events', 'webhook') %}{% do names.append(name) %}{% endfor %}
-- depends_on: {{ source('raw', 'crm_customers') }}, {{ source('raw', 'orders') }}, {{ source('raw', 'pos') }}
{%- if not names %}
select {{ typed_null('string') }} as raw_source, {{ typed_null('string') }} as partition_key, {{ typed_null('string') }} as file,
       {{ typed_null('bigint') }} as line_no, {{ typed_null('string') }} as record, {{ typed_null('timestamp') }} as loaded_at,
       {{ typed_null('boolean') }} as parsed, {{ typed_null('timestamp') }} as received_at,
       {{ empty_strings() }} as parse_errors, {{ empty_strings() }} as unreadable_columns, {{ typed_null('json') }} as typed,
       {{ typed_null('string') }} as op, {{ typed_null('bigint') }} as source_lsn, {{ typed_null('bigint') }} as source_ts_ms
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
