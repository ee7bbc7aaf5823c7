{#- The persons whose profile inputs changed in a batch: the persons holding an identifier of a record changed
    or removed since the last run, both sides of every change of cdp.id_map (merges, splits, new
    identifiers), and every person reporting a purchase id that a changed or removed record reports. Per-person models recompute only these (each reads the batches after its own watermark). -#}
{{ config(
    schema='core',
    materialized='incremental',
    incremental_strategy='append',
    post_hook=["{{ advance_watermark() }}", "{{ record_config_digest() }}"],
) }}

with touched as (
    select identifier_type, raw_value from ({{ sightings_since(watermark()) }}) as s
    union
    select identifier_type, raw_value from ({{ sightings_since(watermark(), removed=true) }}) as s
),

persons as (
    select p.person_id from touched as t join {{ ref('identifier_persons') }} as p using (identifier_type, raw_value)
    union
    select person_before from {{ bookkeeping('id_map_changes') }} where _batch_id > {{ watermark() }}
    union
    select person_after from {{ bookkeeping('id_map_changes') }} where _batch_id > {{ watermark() }}
    union
    {#- one record per purchase id wins across persons: a changed claim can move the purchase to another person #}
    select c.person_id from {{ ref('purchase_claims') }} as c
    where c.purchase_id in (select purchase_id from ({{ purchase_ids_since(watermark()) }}) as ids)
)

select distinct person_id, {{ current_batch() }} as _batch_id from persons where person_id is not null
