{#- Every record that reports a purchase, with its person, from the sources config/sources.yaml declares
    `purchases:` for: table sources' rows (the person of the row's identifier; `counts` false where `only:`
    leaves the row out) and events such as Segment's order_completed (the person of the event). Several may
    report one purchase id; core.person_purchases keeps one per id, and core.affected_persons recomputes
    every person reporting an id when any record reporting it changes. A view, like person_events. -#}
{{ config(materialized='view') }}
-- depends_on: {{ source('validated', 'orders') }}, {{ source('validated', 'pos') }}
{%- set parts = [] %}
{%- for name, source in var('sources').items() if source.get('purchases') %}
{%- set p = source.purchases %}
{%- if source.kind in ('events', 'webhook') %}
{%- set items = "coalesce(" ~ json_strings_at('e.properties', '$.' ~ p['items']) ~ ", " ~ empty_strings() ~ ")" if p.get('items') else empty_strings() %}
{%- do parts.append("select " ~ cdp_literal(name) ~ " as channel, 1 as source_rank, " ~ loop.index ~ " as source_order, true as counts, "
    ~ "nullif(trim(" ~ json_text('e.properties', '$.' ~ p['id']) ~ "), '') as purchase_id, e.person_id, "
    ~ "try_cast(" ~ json_text('e.properties', '$.' ~ p['amount']) ~ " as double) as amount, e.occurred_at as purchased_at, "
    ~ items ~ " as items from " ~ ref('person_events') ~ " as e where e.event_type = 'track' and e.event_name = " ~ cdp_literal(p['event'])) %}
{%- else %}
{%- set column = p.get('identifier') or strongest_identifier(source.identifiers) %}
{%- set conditions = [] %}
{%- for only_column, value in (p.get('only') or {}).items() %}{% do conditions.append('t.' ~ cdp_ident(only_column) ~ ' = ' ~ cdp_literal(value)) %}{% endfor %}
{%- do parts.append("select " ~ cdp_literal(name) ~ " as channel, 0 as source_rank, " ~ loop.index ~ " as source_order, "
    ~ "coalesce(" ~ (conditions | join(' and ') if conditions else 'true') ~ ", false) as counts, t." ~ cdp_ident(p['id']) ~ "::" ~ t_string() ~ " as purchase_id, i.person_id, t." ~ cdp_ident(p['amount']) ~ "::double as amount, "
    ~ "t." ~ cdp_ident(p['at']) ~ "::timestamp as purchased_at, "
    ~ ("coalesce(t." ~ cdp_ident(p['items']) ~ "::" ~ t_strings() ~ ", " ~ empty_strings() ~ ")" if p.get('items') else empty_strings()) ~ " as items "
    ~ "from " ~ warehouse_relation('validated', name) ~ " as t "
    ~ "join " ~ ref('identifier_persons') ~ " as i on i.identifier_type = " ~ cdp_literal(source.identifiers[column])
    ~ " and i.raw_value = t." ~ cdp_ident(column) ~ "::" ~ t_string()) %}
{%- endif %}
{%- endfor %}

select * from (
{%- if parts %}
    {{ parts | join('\n    union all\n    ') }}
{%- else %}
    select null::{{ t_string() }} as channel, 0 as source_rank, 0 as source_order, true as counts, null::{{ t_string() }} as purchase_id,
           null::{{ t_string() }} as person_id, null::double as amount, null::timestamp as purchased_at, {{ empty_strings() }} as items
    where false
{%- endif %}
) as claims
where purchase_id is not null
