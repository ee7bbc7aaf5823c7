{#- core.identifier_lookup on Spark (dbt-spark runs Python models only on Databricks clusters): the same rows
    as the Python model identity/identifier_lookup.py, normalized by the same Python code, which the session
    offers as the SQL function cdp_identifier_value (registered by cdp_assets/dbt/spark.py before dbt runs).
    Incremental like it: the raw values of sightings added since the last run and not looked up under the
    current rules; when the rules change, every value again. -#}
{{ config(
    enabled=target.type == 'spark',
    tags=['identity_inputs'],
    materialized='incremental',
    unique_key=['identifier_type', 'raw_value'],
    incremental_strategy='delete+insert',
) }}

{%- set rules = cdp_literal(var('identity_rules')) %}
{%- set same_rules = is_incremental() and execute and run_query('select count(*) from ' ~ this ~ ' where rules <> ' ~ rules).rows[0][0] == 0 %}

select identifier_type, raw_value, cdp_identifier_value(identifier_type, raw_value) as identifier_value,
       {{ rules }} as rules
from (
    select distinct s.identifier_type, s.raw_value
    from {{ ref('identifier_sightings') }} as s
    {%- if same_rules %}
    where s._batch_id > (select coalesce(max(batch_id), -1) from {{ bookkeeping('watermarks') }} where consumer = 'identifier_lookup')
      and not exists (select 1 from {{ this }} as k
                      where k.identifier_type = s.identifier_type and k.raw_value = s.raw_value)
    {%- endif %}
) as v
