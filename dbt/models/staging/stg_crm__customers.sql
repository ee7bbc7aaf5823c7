select
    id as crm_id,
    email,
    phone,
    first_name,
    last_name,
    gender,
    city,
    updated_at
from {{ source('validated', 'crm_customers') }}
