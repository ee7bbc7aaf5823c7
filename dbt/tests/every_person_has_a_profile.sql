-- Every person of the id map has a profile (the relationships test on profiles.person_id checks the other way).
select distinct m.person_id
from {{ source('cdp', 'id_map') }} m
left join {{ ref('profiles') }} p on p.person_id = m.person_id
where p.person_id is null
