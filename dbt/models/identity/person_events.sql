{#- Each event with its person: the person of its userId, else of its anonymousId, else (a webhook's event,
    which names its person by email or phone only) of its traits' email, else phone. Two branches, so the
    traits' JSON is read only for the few events without either id. A view: a merge or split of persons moves
    their events at once, and a query for some persons reads only their events. -#}
{{ config(materialized='view') }}

select
    coalesce(u.person_id, a.person_id) as person_id,
    e.event_id, e.event_type, e.event_name, e.occurred_at, e.received_at, e.source, e.properties, e.traits, e.context,
    e.group_id
from {{ source('cdp', 'events') }} as e
left join {{ ref('identifier_persons') }} as u on u.identifier_type = 'user_id' and u.raw_value = e.user_id
left join {{ ref('identifier_persons') }} as a on a.identifier_type = 'anonymous_id' and a.raw_value = e.anonymous_id
where (e.user_id is not null or e.anonymous_id is not null) and coalesce(u.person_id, a.person_id) is not null

union all

select
    coalesce(m.person_id, p.person_id) as person_id,
    e.event_id, e.event_type, e.event_name, e.occurred_at, e.received_at, e.source, e.properties, e.traits, e.context,
    e.group_id
from (select * from {{ source('cdp', 'events') }} where user_id is null and anonymous_id is null) as e
left join {{ ref('identifier_persons') }} as m
    on m.identifier_type = 'email' and m.raw_value = {{ json_text('e.traits', '$.email') }}
left join {{ ref('identifier_persons') }} as p
    on p.identifier_type = 'phone' and p.raw_value = {{ json_text('e.traits', '$.phone') }}
where coalesce(m.person_id, p.person_id) is not null
