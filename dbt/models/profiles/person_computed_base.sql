{#- The aggregates of the computed traits (config/traits.yaml `computed:`), one row per person, refreshed
    incrementally: a run recomputes only the persons whose events or purchases changed (a digest of their
    rows' ids and times differs: new rows, deleted rows, rows moved between persons by identity resolution),
    new persons, and persons with a row that has left a trait's window since their row was computed. A changed
    declaration recomputes everyone; `dbt build --full-refresh` rebuilds. Equal to a full rebuild (tested). -#}
{{ config(
    schema='core',
    materialized='incremental',
    unique_key='person_id',
    incremental_strategy='delete+insert',
    on_schema_change='sync_all_columns',
    post_hook="delete from {{ this }} where person_id not in (select person_id from {{ source('core', 'persons') }})",
) }}
{%- set traits = var('computed_traits') %}
{%- set spec_digest = local_md5(tojson(traits)) %}
{%- set sources = {'events': ref('person_events'), 'purchases': ref('person_purchases')} %}

with events as (
    select person_id, event_id, event_type, event_name, source, occurred_at, properties from {{ sources.events }}
),

purchases as (
    select person_id, purchase_id, channel, amount, purchased_at, items from {{ sources.purchases }}
),

inputs as (
    select p.person_id, hash(e.rows, e.digest, b.rows, b.digest) as inputs_digest
    from {{ source('core', 'persons') }} as p
    left join (
        select person_id, count(*) as rows, bit_xor(hash(event_id, occurred_at, event_name)) as digest
        from events group by person_id
    ) as e using (person_id)
    left join (
        select person_id, count(*) as rows, bit_xor(hash(purchase_id, channel, amount, purchased_at, items)) as digest
        from purchases group by person_id
    ) as b using (person_id)
),

changed as (
{%- if is_incremental() %}
    select i.person_id
    from inputs as i
    left join {{ this }} as t using (person_id)
    where t.person_id is null or t.inputs_digest <> i.inputs_digest or t.spec_digest <> '{{ spec_digest }}'
    {%- for spec in computed_windows(traits) %}
    {%- set time = computed_over(spec.over).time %}
    union
    select r.person_id
    from {{ spec.over }} as r
    join {{ this }} as t using (person_id)
    where {{ computed_filter(spec, window=false) }}
      and r.{{ time }} >= t.computed_at - interval ({{ spec.within_days | int }}) day
      and r.{{ time }} < {{ utc_now() }} - interval ({{ spec.within_days | int }}) day
    {%- endfor %}
{%- else %}
    select person_id from inputs
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
        {{ computed_aggregate(spec) }} as "{{ name }}"{{ "," if not loop.last }}
    {%- endfor %}
    from {{ over }}
    where person_id in (select person_id from changed)
    group by person_id
)
{%- endif %}
{%- endfor %}

select
    i.person_id,
{%- for name, spec in traits.items() %}
    {{ computed_default(spec, spec.over ~ '_traits."' ~ name ~ '"') }} as "{{ name }}",
{%- endfor %}
    i.inputs_digest,
    '{{ spec_digest }}' as spec_digest,
    {{ utc_now() }} as computed_at
from inputs as i
join changed using (person_id)
{%- for over in ['events', 'purchases'] %}
{%- if traits.values() | selectattr('over', 'equalto', over) | list %}
left join {{ over }}_traits using (person_id)
{%- endif %}
{%- endfor %}
