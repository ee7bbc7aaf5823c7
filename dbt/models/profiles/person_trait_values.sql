{{ config(schema='core') }}
-- The surviving value of each trait of each person, with the source it came from: the observation of the
-- highest-priority source (config/traits.yaml), then the most recent. Emails and phones are normalized
-- as the identity stage normalized them.
with observed as (
    select
        m.person_id,
        o.trait,
        coalesce(normalized.identifier_value, trim(o.value)) as value,
        o.source,
        o.source_rank,
        o.observed_at
    from {{ source('core', 'trait_observations') }} as o
    join {{ source('core', 'identifier_lookup') }} as l
        on l.identifier_type = o.identifier_type and l.raw_value = o.raw_value
    join {{ source('cdp', 'id_map') }} as m
        on m.identifier_type = l.identifier_type and m.identifier_value = l.identifier_value
    left join {{ source('core', 'identifier_lookup') }} as normalized
        on normalized.identifier_type = o.trait and normalized.raw_value = o.value
)

select person_id, trait, value, source, observed_at
from observed
qualify row_number() over (
    partition by person_id, trait order by source_rank, observed_at desc, value
) = 1
