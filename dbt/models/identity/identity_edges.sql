{#- Every link between two normalized identifiers seen on one record, per source, with first and last
    sighting (contract §4). Each record links its highest-priority identifier (its anchor, by the order of
    config/identity.yaml) to each of the others, which connects them all without listing every pair; blocked
    values link nothing. Incremental: an edge can only change when a record carrying both its ends changed, so
    the edges of the identifiers touched since the last run are recomputed from every record carrying them. -#}
{{ config(
    tags=['identity_inputs'],
    schema='cdp',
    materialized='incremental',
    incremental_strategy='append',
    pre_hook=[
        "{{ forget_all_if_config_changed() }}",
        "{% if is_incremental() %}{{ forget_touched_identifiers([('left_type', 'left_value'), ('right_type', 'right_value')]) }}{% else %}select 1{% endif %}",
    ],
    post_hook=["{{ advance_watermark() }}", "{{ record_config_digest() }}"],
) }}

with touched as (
    select distinct identifier_type, identifier_value from {{ ref('touched_identifiers') }} where _batch_id > {{ watermark() }}
),

sightings as (
    select s.record_id, s.source, s.seen_at, l.identifier_type, l.identifier_value
    from {{ ref('identifier_sightings') }} as s
    join {{ ref('identifier_lookup') }} as l using (identifier_type, raw_value)
    where l.identifier_value is not null
),

records as (
    {%- if is_incremental() and not full_rebuild_needed() %}
    select distinct s.record_id from sightings as s semi join touched as t using (identifier_type, identifier_value)
    {%- else %}
    select distinct record_id from sightings
    {%- endif %}
),

ranked as (
    select distinct s.record_id, s.source, s.seen_at, s.identifier_type, s.identifier_value,
           {{ identifier_rank('s.identifier_type') }} as rank
    from sightings as s semi join records as r using (record_id)
),

anchors as (
    select record_id, identifier_type as left_type, identifier_value as left_value
    from ranked
    qualify row_number() over (partition by record_id order by rank, identifier_value) = 1
),

edges as (
    select a.left_type, a.left_value, r.identifier_type as right_type, r.identifier_value as right_value,
           r.source, min(r.seen_at) as first_seen_at, max(r.seen_at) as last_seen_at
    from ranked as r
    join anchors as a using (record_id)
    where not (r.identifier_type = a.left_type and r.identifier_value = a.left_value)
    group by all
)

select e.*, {{ current_batch() }} as _batch_id
from edges as e
{%- if is_incremental() and not full_rebuild_needed() %}
{#- two membership tests, not one join on `left = t or right = t` (a nested loop: quadratic in the new hour's size) #}
where (e.left_type, e.left_value) in (select identifier_type, identifier_value from touched)
   or (e.right_type, e.right_value) in (select identifier_type, identifier_value from touched)
{%- endif %}
