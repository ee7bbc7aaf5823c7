{#- Every purchase with its person: of the records reporting one purchase id (core.purchase_claims), a table
    source's record (the system of record) wins over an event reporting the same order, then the source listed
    first; a record its `only:` leaves out (a refunded order) still wins, so the event reporting that order does
    not count it either. A view, like person_events. -#}
{{ config(materialized='view') }}

select channel, purchase_id, person_id, amount, purchased_at, items
from (
    select * from {{ ref('purchase_claims') }}
    qualify row_number() over (partition by purchase_id order by source_rank, source_order, purchased_at nulls last, channel nulls last) = 1
) as claimed
where counts and amount is not null and {{ is_finite('amount') }}
