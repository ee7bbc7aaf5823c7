{#- What profile_history versions: the profile without the traits that change with the clock alone (days
    since...), which would otherwise make a new version of every person every day. -#}
{{ config(schema='core', materialized='view') }}
{%- set clock = [] %}
{%- for name, spec in var('computed_traits').items() if spec.aggregate in ('days_since_first', 'days_since_last') %}
{%- do clock.append('"' ~ name ~ '"') %}
{%- endfor %}
select *{% if clock %} exclude ({{ clock | join(', ') }}){% endif %}
from {{ ref('profiles') }}
