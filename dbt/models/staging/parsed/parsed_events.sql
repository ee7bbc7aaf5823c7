{#- Every events source's messages (config/sources.yaml `kind: events`), typed. A view: validation reads only
    the raw partitions that changed through it, and parsing costs nothing until then. -#}
-- depends_on: {{ source('raw', 'web') }}
{%- set names = [] %}
{%- for name, source in var('sources').items() if source.kind in ('events', 'webhook') %}{% do names.append(name) %}{% endfor %}
{%- if not names %}{% do names.append(none) %}{% endif %}  {#- no events source: no rows, same columns #}
{%- for name in names %}
{%- if not loop.first %}
union all
{% endif %}
select * from (
    {%- if name and var('sources')[name].kind == 'webhook' %}
    {{ parse_webhook_source(name) }}
    {%- else %}
    {{ parse_events_source(name) }}
    {%- endif %}
)
{%- endfor %}
