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

{#- the field schemas as an array of JSON texts -#}
{% macro spark__debezium_row_schema(record) -%}
    case when {{ json_type_at(record, '$.schema.fields') }} = 'ARRAY' then
        from_json(get_json_object(try_element_at(filter(from_json(get_json_object({{ record }}, '$.schema.fields'), 'array<string>'),
                                                        f -> get_json_object(f, '$.field') in ('after', 'before') and {{ json_type_at('f', '$.fields') }} = 'ARRAY'), 1),
                                  '$.fields'), 'array<string>')
    end
{%- endmacro %}

{# The field schema (JSON object) of column `column` among `schemas` (what debezium_row_schema gives). #}
{% macro debezium_field_schema(schemas, column) -%}
    {{ return(adapter.dispatch('debezium_field_schema', 'cdp')(schemas, column)) }}
{%- endmacro %}
{% macro default__debezium_field_schema(schemas, column) -%}
    list_filter({{ schemas }}, lambda f: f->>'field' = {{ cdp_literal(column) }})[1]
{%- endmacro %}
{% macro spark__debezium_field_schema(schemas, column) -%}
    try_element_at(filter({{ schemas }}, f -> get_json_object(f, '$.field') = {{ cdp_literal(column) }}), 1)
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

{#- Each value is read once and bound to a lambda variable (`x`, `d`, ...): written out, the decoders of every
    column made an expression too large for Spark's code generation. -#}
{% macro spark__debezium_text(img, column, kind, field_schema) -%}
    {%- set path = '$.' ~ column -%}
    {%- set raw = json_text(img, path) -%}
    {%- set by_type = "'io.debezium.time.MicroTimestamp'" if kind == 'timestamp' else "cast(null as string)" -%}
    {%- set midnight = " || ' 00:00:00+00'" if kind == 'timestamp' else "" -%}
    {%- set date = "date_format(date_from_unix_date(try_cast(x.n as int)), 'yyyy-MM-dd')" -%}
    coalesce(
        transform(array(named_struct(
            'name', coalesce(get_json_object({{ field_schema }}, '$.name'),
                             case when {{ json_type_at(img, path) }} in ('BIGINT', 'UBIGINT') then {{ by_type }} end),
            'raw', {{ raw }}, 'n', try_cast({{ raw }} as bigint),
            'scale', get_json_object({{ field_schema }}, '$.parameters.scale'),
            'variable', {{ json_text(img, path ~ '.value') }}, 'variable_scale', {{ json_text(img, path ~ '.scale') }})),
            x -> case x.name
                when 'io.debezium.time.Date' then {{ date }}{{ midnight }}
                when 'org.apache.kafka.connect.data.Date' then {{ date }}{{ midnight }}
                when 'io.debezium.time.Time' then {{ spark_time_of_day("try_multiply(x.n, 1000)") }}
                when 'org.apache.kafka.connect.data.Time' then {{ spark_time_of_day("try_multiply(x.n, 1000)") }}
                when 'io.debezium.time.MicroTime' then {{ spark_time_of_day("x.n") }}
                when 'io.debezium.time.NanoTime' then {{ spark_time_of_day("floor(x.n / 1000)") }}
                when 'io.debezium.time.Timestamp' then {{ spark_epoch_micros("try_multiply(x.n, 1000)") }}
                when 'org.apache.kafka.connect.data.Timestamp' then {{ spark_epoch_micros("try_multiply(x.n, 1000)") }}
                when 'io.debezium.time.MicroTimestamp' then {{ spark_epoch_micros("x.n") }}
                when 'io.debezium.time.NanoTimestamp' then {{ spark_epoch_micros("floor(x.n / 1000)") }}
                when 'org.apache.kafka.connect.data.Decimal' then {{ spark_debezium_decimal("x.raw", "x.scale") }}
                when 'io.debezium.data.VariableScaleDecimal' then {{ spark_debezium_decimal("x.variable", "x.variable_scale") }}
            end)[0],
        {{ raw }}
    )
{%- endmacro %}

{% macro spark_epoch_micros(micros) -%}
    transform(array({{ micros }}), m -> case when m between -62135596800000000 and 253402300799999999
         then date_format(timestamp_micros(m), 'yyyy-MM-dd HH:mm:ss.SSSSSS') || '+00' end)[0]
{%- endmacro %}

{% macro spark_time_of_day(micros) -%}
    transform(array({{ micros }}), m -> case when m between 0 and 86400000000 - 1
         then date_format(timestamp_micros(m), 'HH:mm:ss.SSSSSS') end)[0]
{%- endmacro %}

{# debezium_decimal on Spark: the unscaled value summed byte by byte as DECIMAL(38, 0). #}
{% macro spark_debezium_decimal(base64, scale) -%}
    {%- set byte = "cast(conv(hex(substring(d.b, i + 1, 1)), 16, 10) as int)" -%}
    transform(array(named_struct('t', {{ base64 }}, 'b', try_to_binary({{ base64 }}, 'base64'), 's', try_cast({{ scale }} as int))), d ->
        case when d.t rlike '^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$'
                  and length(d.t) between 4 and 24 and octet_length(d.b) between 1 and 16 and d.s between 0 and 38
             then transform(array(aggregate(sequence(0, octet_length(d.b) - 1), cast(0 as decimal(38, 0)),
                                            (a, i) -> cast(try_add(try_multiply(a, 256), {{ byte }} - case when i = 0 and {{ byte }} >= 128 then 256 else 0 end) as decimal(38, 0)))),
                            u -> transform(array(cast(abs(u) as string)), m -> transform(array(lpad(m, greatest(length(m), d.s + 1), '0')), g ->
                                     case when u < 0 then '-' else '' end || left(g, length(g) - d.s)
                                     || case when d.s > 0 then '.' || right(g, d.s) else '' end)[0])[0])[0]
        end)[0]
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
