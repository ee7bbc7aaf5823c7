-- One row per person: identity, traits by survivorship, activity and purchase totals.
-- Survivorship: the CRM wins for names and gender, the latest identify call wins for city; email and
-- phone prefer the CRM, then the latest identify call, then any identifier the person holds.
with persons as (
    select person_id, created_at from {{ source('core', 'persons') }}
),

identifiers as (
    select
        m.person_id,
        min(i.first_seen_at) as first_seen_at,
        max(i.last_seen_at) as last_seen_at,
        min(m.identifier_value) filter (where m.identifier_type = 'email') as any_email,
        min(m.identifier_value) filter (where m.identifier_type = 'phone') as any_phone
    from {{ source('cdp', 'id_map') }} as m
    join {{ source('core', 'identifiers') }} as i using (identifier_type, identifier_value)
    group by m.person_id
),

crm as (
    select
        person_id,
        arg_max(email, updated_at) as email,
        arg_max(phone, updated_at) as phone,
        arg_max(first_name, updated_at) as first_name,
        arg_max(last_name, updated_at) as last_name,
        arg_max(gender, updated_at) as gender,
        arg_max(city, updated_at) as city
    from {{ ref('person_crm_customers') }}
    where person_id is not null
    group by person_id
),

identified as (
    select
        person_id,
        arg_max({{ normalized_identifier('email', "traits ->> '$.email'") }}, occurred_at)
            filter (where traits ->> '$.email' is not null) as email,
        arg_max({{ normalized_identifier('phone', "traits ->> '$.phone'") }}, occurred_at)
            filter (where traits ->> '$.phone' is not null) as phone,
        arg_max(traits ->> '$.first_name', occurred_at) filter (where traits ->> '$.first_name' is not null) as first_name,
        arg_max(traits ->> '$.last_name', occurred_at) filter (where traits ->> '$.last_name' is not null) as last_name,
        arg_max(traits ->> '$.gender', occurred_at) filter (where traits ->> '$.gender' is not null) as gender,
        arg_max(traits ->> '$.city', occurred_at) filter (where traits ->> '$.city' is not null) as city
    from {{ ref('person_events') }}
    where event_type = 'identify'
    group by person_id
),

activity as (
    select person_id, count(*) as event_count, max(occurred_at) as last_event_at
    from {{ ref('person_events') }}
    group by person_id
),

purchases as (
    select
        person_id,
        count(*) as order_count,
        sum(amount) as total_revenue,
        min(purchased_at) as first_order_at,
        max(purchased_at) as last_order_at,
        list_sort(list_distinct(flatten(list(items)))) as products_purchased
    from {{ ref('person_purchases') }}
    group by person_id
)

select
    p.person_id,
    coalesce(crm.email, identified.email, identifiers.any_email) as email,
    coalesce(crm.phone, identified.phone, identifiers.any_phone) as phone,
    coalesce(crm.first_name, identified.first_name) as first_name,
    coalesce(crm.last_name, identified.last_name) as last_name,
    coalesce(crm.gender, identified.gender) as gender,
    coalesce(identified.city, crm.city) as city,
    identifiers.first_seen_at,
    identifiers.last_seen_at,
    activity.last_event_at,
    coalesce(activity.event_count, 0) as event_count,
    coalesce(purchases.order_count, 0) as order_count,
    coalesce(purchases.total_revenue, 0)::double as total_revenue,
    purchases.first_order_at,
    purchases.last_order_at,
    coalesce(purchases.products_purchased, []::varchar[]) as products_purchased,
    computed.signed_up_at,
    coalesce(computed.orders_30d, 0) as orders_30d,
    coalesce(computed.spend_30d, 0)::double as spend_30d,
    computed.rfm_recency,
    computed.rfm_frequency,
    computed.rfm_monetary,
    computed.rfm_segment,
    p.created_at as person_created_at
from persons as p
left join identifiers using (person_id)
left join crm using (person_id)
left join identified using (person_id)
left join activity using (person_id)
left join purchases using (person_id)
left join {{ ref('person_computed_traits') }} as computed using (person_id)
