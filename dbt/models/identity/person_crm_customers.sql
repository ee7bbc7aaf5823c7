-- CRM customers with their person and normalized email/phone.
select
    {{ person_of('crm_id', 'c.crm_id') }} as person_id,
    c.crm_id,
    {{ normalized_identifier('email', 'c.email') }} as email,
    {{ normalized_identifier('phone', 'c.phone') }} as phone,
    c.first_name,
    c.last_name,
    c.gender,
    c.city,
    c.updated_at
from {{ ref('stg_crm__customers') }} as c
