{#- Every purchase with its person: completed API orders (by email) and in-store purchases (by phone). A view,
    like person_events. -#}
{{ config(materialized='view') }}

with orders as (
    select 'orders' as channel, o.order_id as purchase_id, p.person_id, o.amount, o.created_at as purchased_at,
           coalesce(o.items, []::varchar[]) as items
    from {{ ref('stg_shop__orders') }} as o
    join {{ ref('identifier_persons') }} as p on p.identifier_type = 'email' and p.raw_value = o.customer_email
    where o.status = 'completed'
),

store as (
    select 'pos' as channel, s.receipt_id as purchase_id, p.person_id, s.amount, s.purchased_at, []::varchar[] as items
    from {{ ref('stg_pos__purchases') }} as s
    join {{ ref('identifier_persons') }} as p on p.identifier_type = 'phone' and p.raw_value = s.phone
)

select * from orders
union all
select * from store
