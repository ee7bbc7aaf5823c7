{#- Persons and what relates them without merging them: the accounts (groups) a person belongs to from `group`
    calls, and per source the columns `relationships:` maps to a kind (a household id, a parent's CRM id). They
    are kept beside the identity graph, never in it: two members of one household stay two persons.
    Incremental: the persons affected since the last run are recomputed, persons gone are dropped. -#}
{{ config(
    schema='cdp',
    materialized='incremental',
    incremental_strategy='append',
    pre_hook=[
        "{{ forget_all_if_config_changed() }}",
        "{% if is_incremental() %}{{ delete_rows(this, 'person_id in (select person_id from ' ~ ref('affected_persons') ~ ' where _batch_id > ' ~ watermark() ~ ') or person_id not in (select person_id from ' ~ source('core', 'persons') ~ ')') }}{% else %}select 1{% endif %}",
    ],
    post_hook=["{{ advance_watermark() }}", "{{ record_config_digest() }}"],
) }}
-- depends_on: {{ ref('affected_persons') }}

with related as (
    select person_id, 'group_member' as kind, group_id as related_value, source, occurred_at as seen_at
    from {{ ref('person_events') }}
    where event_type = 'group' and group_id is not null
    {%- for name, source in table_sources_with('relationships').items() if source.get('identifiers') %}
    {%- set column = strongest_identifier(source.identifiers) %}
    {%- set seen = cdp_ident(source.time_column) if source.get('time_column') else 'received_at' %}
    {%- for related, kind in source.relationships.items() %}
    union all
    select p.person_id, {{ cdp_literal(kind) }}, t.{{ cdp_ident(related) }}::{{ t_string() }}, {{ cdp_literal(name) }}, t.{{ seen }}::timestamp
    from {{ warehouse_relation('validated', name) }} as t
    join {{ ref('identifier_persons') }} as p
        on p.identifier_type = {{ cdp_literal(source.identifiers[column]) }} and p.raw_value = t.{{ cdp_ident(column) }}::{{ t_string() }}
    where t.{{ cdp_ident(related) }} is not null
    {%- endfor %}
    {%- endfor %}
)

select person_id, kind, related_value, source, min(seen_at) as first_seen_at, max(seen_at) as last_seen_at,
       {{ current_batch() }} as _batch_id
from related
{%- if is_incremental() and not full_rebuild_needed() %}
where person_id in (select person_id from {{ ref('affected_persons') }} where _batch_id > {{ watermark() }})
{%- endif %}
group by person_id, kind, related_value, source
