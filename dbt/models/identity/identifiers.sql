{#- Every normalized identifier seen, with its first and last sighting (identifiers without any link too).
    Incremental: the identifiers touched since the last run are recomputed from every sighting of them. -#}
{{ config(
    tags=['identity_inputs'],
    materialized='incremental',
    incremental_strategy='append',
    pre_hook=[
        "{{ forget_all_if_config_changed() }}",
        "{% if is_incremental() %}{{ forget_touched_identifiers([('identifier_type', 'identifier_value')]) }}{% else %}select 1{% endif %}",
    ],
    post_hook=["{{ advance_watermark() }}", "{{ record_config_digest() }}"],
) }}
-- depends_on: {{ ref('touched_identifiers') }}

select l.identifier_type, l.identifier_value, min(s.seen_at) as first_seen_at, max(s.seen_at) as last_seen_at,
       {{ current_batch() }} as _batch_id
from {{ ref('identifier_sightings') }} as s
join {{ ref('identifier_lookup') }} as l using (identifier_type, raw_value)
{%- if is_incremental() and not full_rebuild_needed() %}
semi join (select distinct identifier_type, identifier_value from {{ ref('touched_identifiers') }} where _batch_id > {{ watermark() }}) as t
    using (identifier_type, identifier_value)
{%- endif %}
where l.identifier_value is not null
group by all
