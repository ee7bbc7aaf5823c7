{#- Parsing raw records into typed columns (the staging.parsed_* views). Each parsed row keeps its raw
    position (source, partition_key, file, line_no, loaded_at), whether it is a JSON object (`parsed`), its
    parse errors ("code: detail") and the columns whose present value is not of its type; validation
    (cdp_assets/events) judges the typed values by the suites in expectations/. Source and column names
    come from the configuration (var `sources`, checked by cdp_assets.config) and are quoted. -#}

{# (value, error, failed column) of one JSON field read as `kind`: the error and the failed column are set when
   a value is present but not of its type. #}
{% macro typed_field(json, path, kind, name, text=none) -%}
    {#- `text`: the value as text when it is not the JSON text at `path` (a decoded Debezium value) -#}
    {%- set text = text or json_text(json, path) -%}
    {%- if kind == 'string' -%}
        {%- do return({'value': "nullif(trim(" ~ text ~ "), '')", 'error': 'null', 'failed': 'null'}) -%}
    {%- elif kind == 'list' -%}
        {%- set value = json_to_strings(json_member(json, path)) -%}
    {%- elif kind == 'timestamp' -%}
        {%- set value = utc_timestamp(text) -%}
    {%- elif kind == 'number' -%}
        {#- NaN and infinities are no amounts: refused like any other unreadable number -#}
        {%- set value = "case when " ~ is_finite("try_cast(" ~ text ~ " as double)") ~ " then try_cast(" ~ text ~ " as double) end" -%}
    {%- elif kind == 'boolean' -%}
        {%- set value = text_to_boolean(text) -%}
    {%- else -%}
        {{ exceptions.raise_compiler_error("column " ~ name ~ ": unknown type " ~ kind) }}
    {%- endif -%}
    {%- set code = 'bad_timestamp' if kind == 'timestamp' else 'wrong_type' -%}
    {%- set failed = "(nullif(trim(" ~ text ~ "), '') is not null and " ~ value ~ " is null)" -%}
    {%- do return({
        'value': value,
        'error': "case when " ~ failed ~ " then " ~ cdp_literal(code ~ ': ' ~ name ~ ' ') ~ " || " ~ text ~ " || " ~ cdp_literal(' is not a ' ~ kind) ~ " end",
        'failed': "case when " ~ failed ~ " then " ~ cdp_literal(name) ~ " end",
    }) -%}
{%- endmacro %}

{# An ISO-8601 text as a UTC timestamp without time zone (null when it is not a time). #}
{% macro utc_timestamp(text) -%}
    {{ return(adapter.dispatch('utc_timestamp', 'cdp')(text)) }}
{%- endmacro %}
{% macro default__utc_timestamp(text) -%}
    timezone('UTC', try_cast({{ text }} as timestamptz))
{%- endmacro %}
{#- (the session's zone is UTC; Spark also reads a bare year or year-month as a time, DuckDB does not) -#}
{% macro spark__utc_timestamp(text) -%}
    case when ltrim({{ text }}) rlike '^[0-9]{4}-[0-9]{2}-[0-9]{2}' then try_cast({{ text }} as timestamp) end
{%- endmacro %}

{# A text as a boolean (null when it is not one). #}
{% macro text_to_boolean(text) -%}
    {{ return(adapter.dispatch('text_to_boolean', 'cdp')(text)) }}
{%- endmacro %}
{% macro default__text_to_boolean(text) -%} try_cast({{ text }} as boolean) {%- endmacro %}
{#- the spellings DuckDB reads (Spark would also trim blanks) -#}
{% macro spark__text_to_boolean(text) -%}
    case when lower({{ text }}) in ('true', 'false', 't', 'f', '1', '0', 'yes', 'no', 'y', 'n') then try_cast({{ text }} as boolean) end
{%- endmacro %}

{# Seconds since the epoch (a number's text) as a UTC timestamp without time zone; null when out of range. #}
{% macro epoch_seconds_utc(text) -%}
    {{ return(adapter.dispatch('epoch_seconds_utc', 'cdp')(text)) }}
{%- endmacro %}
{% macro default__epoch_seconds_utc(text) -%}
    try(timezone('UTC', to_timestamp(try_cast({{ text }} as double))))
{%- endmacro %}
{% macro spark__epoch_seconds_utc(text) -%}
    timestamp_micros(try_cast(round(try_cast({{ text }} as double) * 1000000) as bigint))
{%- endmacro %}

{# A typed null: kind one of string, bigint, timestamp. #}
{% macro typed_null(kind) -%}
    {{ return(adapter.dispatch('typed_null', 'cdp')(kind)) }}
{%- endmacro %}
{% macro default__typed_null(kind) -%} null::{{ {'string': 'varchar'}.get(kind, kind) }} {%- endmacro %}
{% macro spark__typed_null(kind) -%} cast(null as {{ {'json': 'string'}.get(kind, kind) }}) {%- endmacro %}

{# A list of string literals. #}
{% macro strings_of(texts) -%}
    {{ return(adapter.dispatch('strings_of', 'cdp')(texts)) }}
{%- endmacro %}
{% macro default__strings_of(texts) -%}
    [{% for text in texts %}{{ cdp_literal(text) }}{{ ', ' if not loop.last }}{% endfor %}]
{%- endmacro %}
{% macro spark__strings_of(texts) -%}
    array({% for text in texts %}{{ cdp_literal(text) }}{{ ', ' if not loop.last }}{% endfor %})
{%- endmacro %}

{# The non-null elements of a list of SQL expressions, as a SQL list. #}
{% macro non_null_list(expressions) -%}
    {{ return(adapter.dispatch('non_null_list', 'cdp')(expressions)) }}
{%- endmacro %}
{% macro default__non_null_list(expressions) -%}
    {%- if expressions -%} list_filter([{{ expressions | join(', ') }}], x -> x is not null)
    {%- else -%} []::varchar[]
    {%- endif -%}
{%- endmacro %}
{% macro spark__non_null_list(expressions) -%}
    {%- if expressions -%} filter(array({{ expressions | join(', ') }}), x -> x is not null)
    {%- else -%} {{ empty_strings() }}
    {%- endif -%}
{%- endmacro %}

{# The raw table of a configured source. #}
{% macro raw_relation(name) -%}
    {{ return(warehouse_relation('raw', name)) }}
{%- endmacro %}

{# Raw rows with their JSON (null when the record is not one JSON object); `name` none: no rows. #}
{% macro raw_records(name) -%}
    select
        {{ cdp_literal(name or '') }} as raw_source,
        partition_key, file, line_no, record, loaded_at,
        {{ is_json_object('record') }} as parsed
    {%- if name %}
    from {{ raw_relation(name) }}
    {%- else %}
    from (select {{ typed_null('string') }} as partition_key, {{ typed_null('string') }} as file, {{ typed_null('bigint') }} as line_no,
                 {{ typed_null('string') }} as record, {{ typed_null('timestamp') }} as loaded_at where false)
    {%- endif %}
{%- endmacro %}

{#- Segment-spec messages of one events source → the columns of cdp.events (contract §4).
    Event time is Segment's: `timestamp` when given, else `originalTimestamp` corrected for the device's
    clock skew (receivedAt - (sentAt - originalTimestamp)), else the time received; the raw values are kept.
    Identify traits are `traits` over `context.traits` (RudderStack's SDKs send the latter). -#}
{% macro parse_events_source(name) -%}
    {%- set ts = typed_field('m', '$.timestamp', 'timestamp', 'timestamp') -%}
    {%- set original = typed_field('m', '$.originalTimestamp', 'timestamp', 'originalTimestamp') -%}
    {%- set sent = typed_field('m', '$.sentAt', 'timestamp', 'sentAt') -%}
    {%- set received = typed_field('m', '$.receivedAt', 'timestamp', 'receivedAt') -%}
    with raw as (
        {{ raw_records(name) }}
    ),

    messages as (
        select *, case when parsed then {{ as_json('record') }} end as m from raw
    ),

    fields as (
        select
            *,
            {{ json_type_at('m', '$.messageId') }} as message_id_type,
            case when {{ json_type_at('m', '$.messageId') }} = 'VARCHAR'
                 then nullif(trim({{ json_text('m', '$.messageId') }}), '') end as event_id,
            {{ json_text('m', '$.type') }} as event_type,
            coalesce({{ json_text('m', '$.event') }}, {{ json_text('m', '$.name') }}) as event_name,
            nullif(trim({{ json_text('m', '$.anonymousId') }}), '') as anonymous_id,
            nullif(trim({{ json_text('m', '$.userId') }}), '') as user_id,
            nullif(trim({{ json_text('m', '$.previousId') }}), '') as previous_id,
            nullif(trim({{ json_text('m', '$.groupId') }}), '') as group_id,
            {{ ts.value }} as event_timestamp,
            {{ original.value }} as original_timestamp,
            {{ sent.value }} as sent_at,
            coalesce({{ received.value }}, loaded_at) as received_at,
            case
                when {{ json_member('m', '$.context.traits') }} is null then {{ json_member('m', '$.traits') }}
                when {{ json_member('m', '$.traits') }} is null then {{ json_member('m', '$.context.traits') }}
                else {{ json_merge_patch(json_member('m', '$.context.traits'), json_member('m', '$.traits')) }}
            end as merged_traits
        from messages
    )

    select
        raw_source, partition_key, file, line_no, record, loaded_at, parsed,
        case when parsed then {{ non_null_list([
                ts.error,
                "case when event_timestamp is null then " ~ original.error ~ " end",
                "case when message_id_type not in ('VARCHAR', 'NULL') then 'missing_message_id: messageId must be a string, not ' || lower(message_id_type) end",
            ]) }}
             else {{ strings_of(['malformed_json: the line is not a JSON object']) }} end as parse_errors,
        {{ non_null_list([ts.failed, "case when event_timestamp is null then " ~ original.failed ~ " end"]) }} as unreadable_columns,
        event_id, event_type, event_name, anonymous_id, user_id, previous_id, group_id,
        coalesce(
            event_timestamp,
            case when original_timestamp is not null and sent_at is not null
                 then received_at - (sent_at - original_timestamp) end,
            original_timestamp,
            received_at
        ) as occurred_at,
        received_at,
        original_timestamp,
        sent_at,
        coalesce({{ json_text('m', '$.source') }}, {{ cdp_literal(name) }}) as source,
        {{ json_member('m', '$.properties') }} as properties,
        merged_traits as traits,
        {{ json_member('m', '$.context') }} as context,
        coalesce(user_id, anonymous_id, previous_id) as identity,
        lower(trim({{ json_text('merged_traits', '$.email') }})) as email
    from fields
{%- endmacro %}

{# A JSON object of key -> the value at a body path of webhook message `m` (paths: key -> path). #}
{% macro webhook_body_object(paths) -%}
    {%- set body_paths = {} -%}
    {%- for key, path in paths.items() %}{% do body_paths.update({key: '$.body.' ~ path}) %}{% endfor -%}
    {{ json_object_at('m', body_paths) }}
{%- endmacro %}

{# The trimmed text at a body path of webhook message `m` (null when the path is not mapped or empty). #}
{% macro webhook_body_text(path) -%}
    {%- if path -%} nullif(trim({{ json_text('m', '$.body.' ~ path) }}), '') {%- else -%} {{ typed_null('string') }} {%- endif -%}
{%- endmacro %}

{#- Webhooks of one webhook source (landing lines {"webhook_id", "source", "receivedAt", "body"}, as the
    collector writes them) → the columns of cdp.events, by the source's `mapping:` of body paths
    (config/sources.yaml): a `track` event named by `event` (renamed by `event_names`), at `timestamp`
    (ISO-8601 text or Unix seconds; the time received when the body has none), about the mapped
    `identifiers` (user_id, anonymous_id; email and phone are carried as traits, as identify calls carry
    them), with the mapped `traits` and `properties` (the whole body when none are mapped). Its id is
    `<source>:<webhook-id>` (or the body's `message_id`), so replays count once and never meet a messageId. -#}
{% macro parse_webhook_source(name) -%}
    {%- set mapping = var('sources')[name].mapping -%}
    {%- set ids = mapping.get('identifiers', {}) -%}
    {%- set at = mapping.get('timestamp') -%}
    {%- set text_at = json_text('m', '$.body.' ~ at) if at else 'null' -%}
    {%- set ts = typed_field('m', '$.body.' ~ at, 'timestamp', at, text_at) if at else none -%}
    {%- set received = typed_field('m', '$.receivedAt', 'timestamp', 'receivedAt') -%}
    {%- set trait_paths = {} -%}
    {%- for type in ['email', 'phone'] if ids.get(type) %}{% do trait_paths.update({type: ids[type]}) %}{% endfor -%}
    {%- do trait_paths.update(mapping.get('traits', {})) -%}
    with raw as (
        {{ raw_records(name) }}
    ),

    lines as (
        select *, case when parsed then {{ as_json('record') }} end as line from raw
    ),

    messages as (
        select *, case when {{ json_type_at('line', '$.body') }} = 'OBJECT' then line end as m from lines
    ),

    fields as (
        select
            *,
            coalesce({{ webhook_body_text(mapping.get('message_id')) }},
                     {{ cdp_literal(name ~ ':') }} || nullif(trim({{ json_text('m', '$.webhook_id') }}), '')) as event_id,
            {{ webhook_body_text(mapping.event) }} as body_event,
            {{ webhook_body_text(ids.get('anonymous_id')) }} as anonymous_id,
            {{ webhook_body_text(ids.get('user_id')) }} as user_id,
            {%- if at %}
            case when {{ json_type_at('m', '$.body.' ~ at) }} in ('BIGINT', 'UBIGINT', 'DOUBLE')
                 then {{ epoch_seconds_utc(text_at) }}
                 else {{ ts.value }} end as event_timestamp,
            {%- else %}
            {{ typed_null('timestamp') }} as event_timestamp,
            {%- endif %}
            coalesce({{ received.value }}, loaded_at) as received_at,
            {{ webhook_body_object(trait_paths) }} as traits,
            {% if mapping.get('properties') %}{{ webhook_body_object(mapping.properties) }}{% else %}{{ json_member('m', '$.body') }}{% endif %} as properties
        from messages
    )

    select
        raw_source, partition_key, file, line_no, record, loaded_at, parsed and m is not null as parsed,
        case
            when not parsed then {{ strings_of(['malformed_json: the line is not a JSON object']) }}
            when m is null then {{ strings_of(['unmapped_webhook: the webhook body is not a JSON object']) }}
            {%- if at %}
            else {{ non_null_list(["case when event_timestamp is null then " ~ ts.error ~ " end"]) }}
            {%- else %}
            else {{ empty_strings() }}
            {%- endif %}
        end as parse_errors,
        {%- if at %}
        {{ non_null_list(["case when event_timestamp is null then " ~ ts.failed ~ " end"]) }} as unreadable_columns,
        {%- else %}
        {{ empty_strings() }} as unreadable_columns,
        {%- endif %}
        event_id,
        case when m is not null then 'track' end as event_type,
        {%- if mapping.get('event_names') %}
        case body_event
            {%- for raw_name, event in mapping.event_names.items() %}
            when {{ cdp_literal(raw_name) }} then {{ cdp_literal(event) }}
            {%- endfor %}
            else body_event end as event_name,
        {%- else %}
        body_event as event_name,
        {%- endif %}
        anonymous_id, user_id, {{ typed_null('string') }} as previous_id, {{ typed_null('string') }} as group_id,
        coalesce(event_timestamp, received_at) as occurred_at,
        received_at,
        {{ typed_null('timestamp') }} as original_timestamp,
        {{ typed_null('timestamp') }} as sent_at,
        {{ cdp_literal(name) }} as source,
        properties,
        traits,
        {{ json_object_of([('webhook_id', json_text('m', '$.webhook_id'))]) }} as context,
        coalesce(user_id, anonymous_id, nullif(trim({{ json_text('traits', '$.email') }}), ''),
                 nullif(trim({{ json_text('traits', '$.phone') }}), '')) as identity,
        lower(trim({{ json_text('traits', '$.email') }})) as email
    from fields
{%- endmacro %}

{#- Records of a table source (API pull, CSV row, PostgreSQL row, CDC change) → its declared, typed columns,
    packed in one JSON object `typed` so that every table source fits one view (validation unpacks it by the
    source's declared types).
    A CDC record is a Debezium envelope (optionally inside `payload`) or a DMS CSV row (`Op` I/U/D); each
    change gets `op` (c/u/d/r, or t for a tombstone), its row image (`after`, or `before` for a delete) and
    its source position: (lsn, ts_ms) for Debezium, (file, line) for DMS. -#}
{% macro parse_table_source(name) -%}
    {%- set source = var('sources')[name] -%}
    {%- set cdc = source.kind == 'cdc' -%}
    {%- set columns = [] -%}
    {%- set errors = [] -%}
    {%- set failed = [] -%}
    {%- for column, kind in source.columns.items() -%}
        {%- set decoded = debezium_text('img', column, kind, debezium_field_schema('img_schema', column)) if cdc and kind != 'list' else none -%}
        {%- set t = typed_field('img', '$.' ~ column, kind, column, decoded) -%}
        {%- do columns.append((column, t.value)) -%}
        {%- do errors.append(t.error) -%}
        {%- do failed.append(t.failed) -%}
    {%- endfor -%}
    {%- set envelope = "coalesce(" ~ json_member('j', '$.payload') ~ ", j)" -%}
    with raw as (
        {{ raw_records(name) }}
    ),

    records as (
        select *, case when parsed then {{ as_json('record') }} end as j from raw
    ),

    images as (
        select
            *,
        {%- if cdc %}
            case
                when {{ json_type_at('j', '$.payload') }} = 'NULL' and {{ json_text('j', '$.op') }} is null then 't'
                else coalesce(
                    {{ json_text(envelope, '$.op') }},
                    case {{ json_text('j', '$.Op') }} when 'I' then 'c' when 'U' then 'u' when 'D' then 'd' end)
            end as op,
            case
                when {{ json_text('j', '$.Op') }} is not null then j
                when {{ json_text(envelope, '$.op') }} = 'd' then {{ json_member(envelope, '$.before') }}
                else {{ json_member(envelope, '$.after') }}
            end as img,
            {#- the row image's field schemas when the envelope carries Kafka Connect's `schema` (JsonConverter schemas.enable) -#}
            {{ debezium_row_schema('j') }} as img_schema
        {%- else %}
            j as img
        {%- endif %}
        from records
    )

    select
        raw_source, partition_key, file, line_no, record, loaded_at, parsed,
        loaded_at as received_at,
        case when parsed then {{ non_null_list(errors) }}
             else {{ strings_of(['malformed_json: the record is not a JSON object']) }} end as parse_errors,
        {{ non_null_list(failed) }} as unreadable_columns,
        {{ json_object_of(columns) }} as typed,
    {%- if cdc %}
        op,
        try_cast({{ json_text(envelope, '$.source.lsn') }} as bigint) as source_lsn,
        try_cast(coalesce({{ json_text(envelope, '$.source.ts_ms') }}, {{ json_text(envelope, '$.ts_ms') }}) as bigint) as source_ts_ms
    {%- else %}
        {{ typed_null('string') }} as op, {{ typed_null('bigint') }} as source_lsn, {{ typed_null('bigint') }} as source_ts_ms
    {%- endif %}
    from images
{%- endmacro %}

{#- on-run-start: an empty raw table for every configured source not extracted yet, so the parse views bind
    (the same shape the extract assets create: cdp_assets/sources/assets.py RAW_DDL). -#}
{% macro create_raw_tables() -%}
    {{ return(adapter.dispatch('create_raw_tables', 'cdp')()) }}
{%- endmacro %}
{% macro default__create_raw_tables() -%}
    create schema if not exists raw;
    {%- for name in var('sources') %}
    create table if not exists {{ raw_relation(name) }} (
        partition_key varchar, file varchar, line_no bigint, record varchar, loaded_at timestamp);
    {%- endfor %}
{%- endmacro %}
{% macro spark__create_raw_tables() -%}
    {%- if execute -%}
    {%- do run_query('create schema if not exists raw') -%}
    {%- for name in var('sources') %}
    {%- do run_query('create table if not exists ' ~ raw_relation(name) ~ ' (partition_key string, file string, line_no bigint, record string, loaded_at timestamp) using parquet') -%}
    {%- endfor %}
    {%- endif -%}
    select 1
{%- endmacro %}
