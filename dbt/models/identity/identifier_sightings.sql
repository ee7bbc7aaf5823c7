{#- Every identifier seen on a validated record (events and table sources), raw as received: the input of
    identity. Incremental by record: records changed since the last run are re-read, removed ones forgotten. -#}
{{ config(
    tags=['identity_inputs'],
    materialized='incremental',
    unique_key='record_id',
    incremental_strategy='delete+insert',
    pre_hook=["{{ forget_all_if_config_changed() }}", "{{ forget_removed_records() }}"],
    post_hook=["{{ advance_watermark() }}", "{{ record_config_digest() }}"],
) }}

select *, {{ current_batch() }} as _batch_id
from ({{ sightings_since(watermark()) }}) as s
