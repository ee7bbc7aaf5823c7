{#- One row per person: identity, traits by survivorship (config/traits.yaml `traits:`, applied in
    person_trait_values) and computed traits (`computed:` and `rfm:`, in person_computed_traits). Email and
    phone fall back to any identifier the person holds when no source reported one as a trait.
    Every profile is computed (a pass over persons, not events); only the rows whose content changed are
    written, with the batch that changed them, so segments re-evaluate only the persons whose profile moved
    (clock-driven traits and RFM ranks included); persons gone are deleted. -#}
{{ config(
    schema='cdp',
    materialized='incremental',
    unique_key='person_id',
    incremental_strategy='delete+insert',
    on_schema_change='sync_all_columns',
    pre_hook=["{{ forget_all_if_config_changed() }}"],
    post_hook=[
        "{{ delete_rows(this, 'person_id not in (select person_id from ' ~ source('core', 'persons') ~ ')') }}",
        "{{ record_config_digest() }}",
    ],
) }}

with persons as (
    select person_id, created_at from {{ source('core', 'persons') }}
),

identifiers as (
    select
        m.person_id,
        min(i.first_seen_at) as first_seen_at,
        max(i.last_seen_at) as last_seen_at,
        min(m.identifier_value) filter (where m.identifier_type = 'email') as any_email,
        min(m.identifier_value) filter (where m.identifier_type = 'phone') as any_phone
    from {{ source('cdp', 'id_map') }} as m
    join {{ ref('identifiers') }} as i using (identifier_type, identifier_value)
    group by m.person_id
),

traits as (
    {{ pivot_traits(ref('person_trait_values'), var('profile_traits')) }}
),

profiles as (
select
    p.person_id,
    coalesce(traits.email, identifiers.any_email) as email,
    coalesce(traits.phone, identifiers.any_phone) as phone,
{%- for trait in var('profile_traits') if trait not in ('email', 'phone') %}
    traits.{{ cdp_ident(trait) }},
{%- endfor %}
    identifiers.first_seen_at,
    identifiers.last_seen_at,
    {{ star_except('computed', ['person_id']) }},  -- the computed traits, then the RFM scores if `rfm:` is set
    p.created_at as person_created_at
from persons as p
left join identifiers using (person_id)
left join traits using (person_id)
left join {{ ref('person_computed_traits') }} as computed using (person_id)
),

hashed as (
    select *, {{ row_hash('profiles') }} as row_hash from profiles
)

select h.*, {{ current_batch() }} as _batch_id
from hashed as h
{%- if is_incremental() and not full_rebuild_needed() %}
where not exists (select 1 from {{ this }} as t where t.person_id = h.person_id and t.row_hash = h.row_hash)
{%- endif %}
