select
    event_id,
    event_type,
    event_name,
    anonymous_id,
    user_id,
    occurred_at,
    received_at,
    source,
    properties::json as properties,
    traits::json as traits,
    context::json as context
from {{ source('cdp', 'events') }}
