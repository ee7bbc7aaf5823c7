{#- The purchase ids reported by the records changed or removed after batch `since` (config/sources.yaml
    `purchases:`): every person with a record reporting one of them (core.purchase_claims) may have gained or
    lost that purchase, since one record per id wins across persons and sources. -#}
{% macro purchase_ids_since(since) -%}
    {%- set parts = [] -%}
    {%- for name, source in var('sources').items() if source.get('purchases') -%}
        {%- set p = source.purchases -%}
        {%- for removed in [false, true] -%}
            {%- if source.kind in ('events', 'webhook') -%}
                {%- do parts.append("select nullif(trim(" ~ json_text('e.properties', '$.' ~ p['id']) ~ "), '') as purchase_id from ("
                    ~ events_since(since, removed) ~ ") as e where e.event_type = 'track' and e.event_name = " ~ cdp_literal(p['event'])) -%}
            {%- else -%}
                {%- do parts.append("select t." ~ cdp_ident(p['id']) ~ "::" ~ t_string() ~ " as purchase_id from (" ~ validated_since(name, since, removed) ~ ") as t") -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endfor -%}
    {%- if parts -%}
    {{ parts | join('\n    union\n    ') }}
    {%- else -%}
    select null::{{ t_string() }} as purchase_id where false
    {%- endif -%}
{%- endmacro %}
