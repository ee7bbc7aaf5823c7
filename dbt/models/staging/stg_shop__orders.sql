select
    order_id,
    customer_email,
    amount,
    currency,
    status,
    items,
    created_at
from {{ source('validated', 'orders') }}
