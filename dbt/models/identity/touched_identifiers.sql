{#- The normalized identifiers whose sightings changed in a batch: on a record changed (its old and new
    version) or removed since the last run. Identity edges, first/last sightings and the resolution of persons
    recompute only what touches these (each reads the batches after its own watermark). -#}
{{ config(
    tags=['identity_inputs'],
    materialized='incremental',
    incremental_strategy='append',
    post_hook=["{{ advance_watermark() }}", "{{ record_config_digest() }}"],
) }}

with touched as (
    select identifier_type, raw_value from {{ ref('identifier_sightings') }} where _batch_id > {{ watermark() }}
    union
    select identifier_type, raw_value from ({{ sightings_since(watermark(), removed=true) }}) as gone
)

select distinct l.identifier_type, l.identifier_value, {{ current_batch() }} as _batch_id
from touched as t
join {{ ref('identifier_lookup') }} as l using (identifier_type, raw_value)
where l.identifier_value is not null
