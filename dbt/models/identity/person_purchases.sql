-- Every purchase with its person: completed API orders (by email) and in-store purchases (by phone).
with orders as (
    select
        'orders' as channel,
        order_id as purchase_id,
        {{ person_of('email', normalized_identifier('email', 'customer_email')) }} as person_id,
        amount,
        created_at as purchased_at,
        coalesce(items, []::varchar[]) as items
    from {{ ref('stg_shop__orders') }}
    where status = 'completed'
),

store as (
    select
        'pos' as channel,
        receipt_id as purchase_id,
        {{ person_of('phone', normalized_identifier('phone', 'phone')) }} as person_id,
        amount,
        purchased_at,
        []::varchar[] as items
    from {{ ref('stg_pos__purchases') }}
)

select * from orders where person_id is not null
union all
select * from store where person_id is not null
