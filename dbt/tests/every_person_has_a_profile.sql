-- Every person of the id map has a profile (the relationships test on profiles.person_id checks the other way).
-- Shown in Dagster as a check on cdp.profiles (a test reading two relations names the one it guards).
{{ config(meta={'dagster': {'ref': {'name': 'profiles'}}}) }}
select distinct m.person_id
from {{ source('cdp', 'id_map') }} m
left join {{ ref('profiles') }} p on p.person_id = m.person_id
where p.person_id is null
