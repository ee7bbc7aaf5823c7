{#- The computed traits at build time: the stored aggregates of person_computed_base, days-since traits
    counted to now, and RFM scores (config/traits.yaml `rfm:`): quintiles 1-5 by rank among persons with a
    purchase, 5 being the most recent / most frequent / highest spending; equal values share a score. -#}
{{ config(schema='core') }}
{%- set traits = var('computed_traits') %}
{%- set rfm = var('rfm', none) %}

with base as (
    select * from {{ ref('person_computed_base') }}
)
{%- if rfm %},

buyers as (
    select
        person_id,
        {%- for score, trait in [('recency', rfm.recency), ('frequency', rfm.frequency), ('monetary', rfm.monetary)] %}
        1 + floor(5 * (rank() over (order by {{ cdp_ident(trait) }} nulls last) - 1) / count(*) over ())::integer as rfm_{{ score }}
        {{- "," if not loop.last }}
        {%- endfor %}
    from base
    where {{ cdp_ident(rfm.frequency) }} > 0
)
{%- endif %}

select
    base.person_id
{%- for name, spec in traits.items() %},
    {{ computed_final(spec, 'base.' ~ cdp_ident(name)) }} as {{ cdp_ident(name) }}
{%- endfor %}
{%- if rfm %},
    buyers.rfm_recency,
    buyers.rfm_frequency,
    buyers.rfm_monetary,
    case
        when buyers.person_id is null then null
        when rfm_recency >= 4 and rfm_frequency >= 4 and rfm_monetary >= 4 then 'champions'
        when rfm_recency >= 4 and rfm_frequency <= 2 then 'new_customers'
        when rfm_recency <= 2 and rfm_frequency >= 3 then 'at_risk'
        when rfm_frequency >= 4 then 'loyal'
        when rfm_recency <= 2 then 'hibernating'
        else 'promising'
    end as rfm_segment
{%- endif %}
from base
{%- if rfm %}
left join buyers using (person_id)
{%- endif %}
