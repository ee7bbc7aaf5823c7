-- pos records, typed by the columns config/sources.yaml declares (a table source's parse view is this one line).
-- depends_on: {{ source('raw', 'pos') }}
{{ parse_table_source('pos') }}
