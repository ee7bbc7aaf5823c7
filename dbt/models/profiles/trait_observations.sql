{#- Every value any source reports for a profile trait (identify calls' traits, the `traits:` columns of table
    sources), keyed by the raw identifier it came with, ranked by config/traits.yaml. Incremental by record. -#}
{{ config(
    schema='core',
    materialized='incremental',
    unique_key='record_id',
    incremental_strategy='delete+insert',
    pre_hook=["{{ forget_all_if_config_changed() }}", "{{ forget_removed_records() }}"],
    post_hook=["{{ advance_watermark() }}", "{{ record_config_digest() }}"],
) }}

select *, {{ current_batch() }} as _batch_id
from ({{ observations_since(watermark()) }}) as o
