-- Each event with its person: the person of its userId, else of its anonymousId.
with resolved as (
    select
        coalesce({{ person_of('user_id', 'e.user_id') }}, {{ person_of('anonymous_id', 'e.anonymous_id') }}) as person_id,
        e.*
    from {{ ref('stg_events') }} as e
)

select person_id, event_id, event_type, event_name, occurred_at, received_at, source, properties, traits, context
from resolved
where person_id is not null
