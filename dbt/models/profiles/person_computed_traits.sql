{{ config(schema='core') }}
-- Computed traits per person: windows over purchases and events, and RFM scores.
-- "Now" is the build time in UTC; RFM scores are quintiles (1-5) among persons who bought anything,
-- 5 being the most recent / most frequent / highest spending.
with purchases as (
    select
        person_id,
        count(*) as order_count,
        sum(amount) as total_revenue,
        max(purchased_at) as last_order_at,
        count(*) filter (where purchased_at >= {{ utc_now() }} - interval 30 day) as orders_30d,
        coalesce(sum(amount) filter (where purchased_at >= {{ utc_now() }} - interval 30 day), 0) as spend_30d
    from {{ ref('person_purchases') }}
    group by person_id
),

scored as (
    select
        *,
        ntile(5) over (order by last_order_at, person_id) as rfm_recency,
        ntile(5) over (order by order_count, person_id) as rfm_frequency,
        ntile(5) over (order by total_revenue, person_id) as rfm_monetary
    from purchases
),

sign_ups as (
    select person_id, min(occurred_at) as signed_up_at
    from {{ ref('person_events') }}
    where event_name = 'signed_up'
    group by person_id
)

select
    coalesce(scored.person_id, sign_ups.person_id) as person_id,
    sign_ups.signed_up_at,
    coalesce(scored.orders_30d, 0) as orders_30d,
    coalesce(scored.spend_30d, 0)::double as spend_30d,
    scored.rfm_recency,
    scored.rfm_frequency,
    scored.rfm_monetary,
    case
        when scored.person_id is null then null
        when rfm_recency >= 4 and rfm_frequency >= 4 and rfm_monetary >= 4 then 'champions'
        when rfm_recency >= 4 and rfm_frequency <= 2 then 'new_customers'
        when rfm_recency <= 2 and rfm_frequency >= 3 then 'at_risk'
        when rfm_frequency >= 4 then 'loyal'
        when rfm_recency <= 2 then 'hibernating'
        else 'promising'
    end as rfm_segment
from scored
full outer join sign_ups on sign_ups.person_id = scored.person_id
