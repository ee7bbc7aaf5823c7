{#- Which person holds a raw identifier value: the one join every model uses to put a record with its person
    (raw value -> normalized value -> person). -#}
{{ config(materialized='view') }}

select l.identifier_type, l.raw_value, m.person_id
from {{ ref('identifier_lookup') }} as l
join {{ source('cdp', 'id_map') }} as m using (identifier_type, identifier_value)
