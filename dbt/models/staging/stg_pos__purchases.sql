select
    receipt_id,
    phone,
    amount,
    store_id,
    purchased_at
from {{ source('validated', 'pos') }}
