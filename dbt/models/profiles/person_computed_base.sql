{#- The aggregates of the computed traits (config/traits.yaml `computed:`), one row per person, refreshed
    incrementally: a run recomputes only the persons affected since the last run (their records or identifiers
    changed: core.affected_persons), new persons, and persons with a row that has left a trait's window since
    the last run (every person's aggregates are right as of the last run, so only rows that crossed a window
    boundary since then matter). A changed declaration recomputes everyone; `dbt build --full-refresh` rebuilds.
    Equal to a full rebuild (tested). -#}
{{ config(
    schema='core',
    materialized='incremental',
    unique_key='person_id',
    incremental_strategy='delete+insert',
    on_schema_change='sync_all_columns',
    pre_hook=["{{ forget_all_if_config_changed() }}"],
    post_hook=[
        "{{ delete_rows(this, 'person_id not in (select person_id from ' ~ source('core', 'persons') ~ ')') }}",
        "{{ advance_watermark() }}",
        "{{ record_config_digest() }}",
    ],
) }}
-- depends_on: {{ ref('affected_persons') }}
{%- set traits = var('computed_traits') %}
{%- set sources = {'events': ref('person_events'), 'purchases': ref('person_purchases')} %}
{%- set incremental = is_incremental() and not full_rebuild_needed() %}

with events as (
    select person_id, event_id, event_type, event_name, source, occurred_at, properties from {{ sources.events }}
),

purchases as (
    select person_id, purchase_id, channel, amount, purchased_at, items from {{ sources.purchases }}
),

changed as (
{%- if incremental %}
    select person_id from {{ ref('affected_persons') }} where _batch_id > {{ watermark() }}
    union
    select p.person_id from {{ source('core', 'persons') }} as p anti join {{ this }} as t using (person_id)
    {%- for spec in computed_windows(traits) %}
    {%- set time = computed_over(spec.over).time %}
    union
    select r.person_id
    from {{ spec.over }} as r
    where {{ computed_filter(spec, window=false) }}
      and r.{{ time }} >= {{ days_before('(select max(computed_at) from ' ~ this ~ ')', spec.within_days) }}
      and r.{{ time }} < {{ days_before(utc_now(), spec.within_days) }}
    {%- endfor %}
{%- else %}
    select person_id from {{ source('core', 'persons') }}
{%- endif %}
)
{%- for over in ['events', 'purchases'] %}
{%- set over_traits = [] %}
{%- for name, spec in traits.items() if spec.over == over %}{% do over_traits.append((name, spec)) %}{% endfor %}
{%- if over_traits %},

{{ over }}_traits as (
    select
        person_id,
    {%- for name, spec in over_traits %}
        {{ computed_aggregate(spec) }} as {{ cdp_ident(name) }}{{ "," if not loop.last }}
    {%- endfor %}
    from {{ over }}
    where person_id in (select person_id from changed)
    group by person_id
)
{%- endif %}
{%- endfor %}

select
    c.person_id,
{%- for name, spec in traits.items() %}
    {{ computed_default(spec, spec.over ~ '_traits.' ~ cdp_ident(name)) }} as {{ cdp_ident(name) }},
{%- endfor %}
    {{ utc_now() }} as computed_at
from (select distinct person_id from changed) as c
join {{ source('core', 'persons') }} using (person_id)
{%- for over in ['events', 'purchases'] %}
{%- if traits.values() | selectattr('over', 'equalto', over) | list %}
left join {{ over }}_traits using (person_id)
{%- endif %}
{%- endfor %}
