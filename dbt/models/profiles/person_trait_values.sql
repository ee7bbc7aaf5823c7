{#- The surviving value of each trait of each person, with the source it came from: the observation of the
    highest-priority source (config/traits.yaml), then the most recent. Emails and phones are normalized as
    the identity stage normalized them. Incremental: the persons affected since the last run are recomputed,
    persons that no longer exist (merged away, erased) are dropped. -#}
{{ config(
    schema='core',
    materialized='incremental',
    incremental_strategy='append',
    pre_hook=[
        "{{ forget_all_if_config_changed() }}",
        "{% if is_incremental() %}{{ delete_rows(this, 'person_id in (select person_id from ' ~ ref('affected_persons') ~ ' where _batch_id > ' ~ watermark() ~ ') or person_id not in (select person_id from ' ~ source('core', 'persons') ~ ')') }}{% else %}select 1{% endif %}",
    ],
    post_hook=["{{ advance_watermark() }}", "{{ record_config_digest() }}"],
) }}
-- depends_on: {{ ref('affected_persons') }}

with observed as (
    select
        p.person_id,
        o.trait,
        coalesce(normalized.identifier_value, trim(o.value)) as value,
        o.source,
        o.source_rank,
        o.observed_at
    from {{ ref('trait_observations') }} as o
    join {{ ref('identifier_persons') }} as p using (identifier_type, raw_value)
    left join {{ ref('identifier_lookup') }} as normalized
        on normalized.identifier_type = o.trait and normalized.raw_value = o.value
    {%- if is_incremental() and not full_rebuild_needed() %}
    where p.person_id in (select person_id from {{ ref('affected_persons') }} where _batch_id > {{ watermark() }})
    {%- endif %}
)

select person_id, trait, value, source, observed_at, {{ current_batch() }} as _batch_id
from observed
qualify row_number() over (partition by person_id, trait order by source_rank nulls last, observed_at desc nulls last, value nulls last) = 1
