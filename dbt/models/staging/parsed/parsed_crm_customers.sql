-- crm_customers records, typed by the columns config/sources.yaml declares (a table source's parse view is this one line).
-- depends_on: {{ source('raw', 'crm_customers') }}
{{ parse_table_source('crm_customers') }}
