{#- Debezium's encodings of column values, decoded to the text the declared column type reads
    (https://debezium.io/documentation/reference/stable/connectors/postgresql.html#postgresql-data-types).

    When the envelope carries Kafka Connect's `schema` (JsonConverter `schemas.enable=true`), each field's
    schema `name` says how its value is encoded:
      io.debezium.time.Date, org.apache.kafka.connect.data.Date     int days since 1970-01-01
      io.debezium.time.Time, org.apache.kafka.connect.data.Time     int ms past midnight
      io.debezium.time.MicroTime / NanoTime                         µs / ns past midnight
      io.debezium.time.Timestamp, org.apache.kafka.connect.data.Timestamp   ms since the epoch (UTC)
      io.debezium.time.MicroTimestamp / NanoTimestamp               µs / ns since the epoch (UTC)
      io.debezium.time.ZonedTimestamp / ZonedTime / Iso*            ISO-8601 text, read as it is
      org.apache.kafka.connect.data.Decimal                         base64 big-endian two's-complement unscaled
                                                                    bytes, schema parameter `scale`
      io.debezium.data.VariableScaleDecimal                         {"scale": s, "value": base64 bytes}
    Without a schema, the declared column type decides: an integer in a `timestamp` column is microseconds
    since the epoch (io.debezium.time.MicroTimestamp: PostgreSQL's TIMESTAMP under the default
    time.precision.mode=adaptive). Decimals are exact text (then read by the column type); a value that does
    not decode keeps its raw text, so the column's type check reports it. -#}

{# The field schemas of the row image (`after`, else `before`) of a record with a `schema`; null otherwise. #}
{% macro debezium_row_schema(record) -%}
    {{ return(adapter.dispatch('debezium_row_schema', 'cdp')(record)) }}
{%- endmacro %}
{% macro default__debezium_row_schema(record) -%}
    case when {{ json_type_at(record, '$.schema.fields') }} = 'ARRAY' then
        cast(list_filter(cast(json_extract({{ record }}, '$.schema.fields') as json[]),
                         lambda f: f->>'field' in ('after', 'before') and json_type(f, '$.fields') = 'ARRAY')[1] -> '$.fields'
             as json[])
    end
{%- endmacro %}

{# The text of column `column` of row image `img`, decoded by its field schema `field_schema` (a SQL
   expression of a JSON object, null without a schema) or, failing that, by its declared type `kind`. #}
{% macro debezium_text(img, column, kind, field_schema) -%}
    {{ return(adapter.dispatch('debezium_text', 'cdp')(img, column, kind, field_schema)) }}
{%- endmacro %}
{% macro default__debezium_text(img, column, kind, field_schema) -%}
    {%- set path = '$.' ~ column -%}
    {%- set raw = json_text(img, path) -%}
    {%- set n = "try_cast(" ~ raw ~ " as bigint)" -%}
    {%- set by_type = "'io.debezium.time.MicroTimestamp'" if kind == 'timestamp' else "null" -%}
    {%- set midnight = " || ' 00:00:00+00'" if kind == 'timestamp' else "" -%}
    coalesce(
        case coalesce(({{ field_schema }}) ->> 'name',
                      case when {{ json_type_at(img, path) }} in ('BIGINT', 'UBIGINT') then {{ by_type }} end)
            when 'io.debezium.time.Date' then {{ debezium_date(n) }}{{ midnight }}
            when 'org.apache.kafka.connect.data.Date' then {{ debezium_date(n) }}{{ midnight }}
            when 'io.debezium.time.Time' then {{ debezium_time_of_day("try(" ~ n ~ " * 1000)") }}
            when 'org.apache.kafka.connect.data.Time' then {{ debezium_time_of_day("try(" ~ n ~ " * 1000)") }}
            when 'io.debezium.time.MicroTime' then {{ debezium_time_of_day(n) }}
            when 'io.debezium.time.NanoTime' then {{ debezium_time_of_day(n ~ " // 1000") }}
            when 'io.debezium.time.Timestamp' then {{ debezium_epoch_micros("try(" ~ n ~ " * 1000)") }}
            when 'org.apache.kafka.connect.data.Timestamp' then {{ debezium_epoch_micros("try(" ~ n ~ " * 1000)") }}
            when 'io.debezium.time.MicroTimestamp' then {{ debezium_epoch_micros(n) }}
            when 'io.debezium.time.NanoTimestamp' then {{ debezium_epoch_micros(n ~ " // 1000") }}
            when 'org.apache.kafka.connect.data.Decimal' then
                {{ debezium_decimal(raw, "(" ~ field_schema ~ ") ->> '$.parameters.scale'") }}
            when 'io.debezium.data.VariableScaleDecimal' then
                {{ debezium_decimal(json_text(img, path ~ '.value'), json_text(img, path ~ '.scale')) }}
        end,
        {{ raw }}
    )
{%- endmacro %}

{% macro debezium_date(days) -%}
    strftime(try(date '1970-01-01' + cast({{ days }} as integer)), '%Y-%m-%d')
{%- endmacro %}

{# µs since the epoch as 'YYYY-MM-DD HH:MM:SS.ffffff+00'; null outside years 1-9999 (PostgreSQL's ±infinity
   arrive as huge values: they are no time). #}
{% macro debezium_epoch_micros(micros) -%}
    case when ({{ micros }}) between -62135596800000000 and 253402300799999999
         then strftime(make_timestamp({{ micros }}), '%Y-%m-%d %H:%M:%S.%f') || '+00' end
{%- endmacro %}

{# µs past midnight as 'HH:MM:SS.ffffff'. #}
{% macro debezium_time_of_day(micros) -%}
    case when ({{ micros }}) between 0 and 86400000000 - 1
         then strftime(make_timestamp({{ micros }}), '%H:%M:%S.%f') end
{%- endmacro %}

{# Base64 big-endian two's-complement unscaled bytes (at most 16, 38 digits) and a scale, as exact decimal
   text; null when the text is not base64 or the scale not a number. #}
{% macro debezium_decimal(base64, scale) -%}
    {%- set b = "try(from_base64(" ~ base64 ~ "))" -%}
    {%- set h = "hex(" ~ b ~ ")" -%}
    {%- set byte = "('0x' || substr(" ~ h ~ ", 2 * i + 1, 2))::integer" -%}
    {%- set unscaled = "list_reduce(list_transform(range(octet_length(" ~ b ~ ")), lambda i: (" ~ byte
        ~ " - case when i = 0 and " ~ byte ~ " >= 128 then 256 else 0 end)::hugeint), lambda a, x: a * 256 + x)" -%}
    {%- set s = "try_cast(" ~ scale ~ " as integer)" -%}
    {%- set magnitude = "abs(" ~ unscaled ~ ")::varchar" -%}
    {%- set digits = "lpad(" ~ magnitude ~ ", greatest(length(" ~ magnitude ~ "), " ~ s ~ " + 1)::integer, '0')" -%}
    case when regexp_full_match({{ base64 }}, '([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?')
              and length({{ base64 }}) between 4 and 24 and octet_length({{ b }}) between 1 and 16
              and {{ s }} between 0 and 38
         then try(case when {{ unscaled }} < 0 then '-' else '' end
                  || left({{ digits }}, length({{ digits }}) - {{ s }})
                  || case when {{ s }} > 0 then '.' || right({{ digits }}, {{ s }}) else '' end)
    end
{%- endmacro %}
