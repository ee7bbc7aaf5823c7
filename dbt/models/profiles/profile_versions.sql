{#- What profile_history versions: the profile without the traits that change with the clock alone (days
    since...), which would otherwise make a new version of every person every day, and without bookkeeping. -#}
{{ config(schema='core', materialized='view') }}
{%- set clock = ['row_hash', '_batch_id'] %}
{%- for name, spec in var('computed_traits').items() if spec.aggregate in ('days_since_first', 'days_since_last') %}
{%- do clock.append(cdp_ident(name)) %}
{%- endfor %}
select {{ star_except(none, clock) }}
from {{ ref('profiles') }}
