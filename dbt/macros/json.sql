{#- JSON access, the one place where engines differ in how they read a JSON text (adapter.dispatch).
    `path` is a JSONPath such as '$.traits.email'; values are quoted here, never pasted from data. -#}

{% macro json_text(json, path) -%}
    {{ return(adapter.dispatch('json_text', 'cdp')(json, path)) }}
{%- endmacro %}
{% macro default__json_text(json, path) -%}
    ({{ json }} ->> {{ cdp_literal(path) }})
{%- endmacro %}
{% macro spark__json_text(json, path) -%}
    get_json_object({{ json }}, {{ cdp_literal(path) }})
{%- endmacro %}

{# The JSON value at `path` as JSON text (objects and arrays kept whole), null when absent. #}
{% macro json_value(json, path) -%}
    {{ return(adapter.dispatch('json_value', 'cdp')(json, path)) }}
{%- endmacro %}
{% macro default__json_value(json, path) -%}
    ({{ json }} -> {{ cdp_literal(path) }})
{%- endmacro %}
{% macro spark__json_value(json, path) -%}
    get_json_object({{ json }}, {{ cdp_literal(path) }})
{%- endmacro %}

{# The JSON type of the value at `path`: OBJECT ARRAY VARCHAR BIGINT UBIGINT DOUBLE BOOLEAN NULL, or null when absent. #}
{% macro json_type_at(json, path) -%}
    {{ return(adapter.dispatch('json_type_at', 'cdp')(json, path)) }}
{%- endmacro %}
{% macro default__json_type_at(json, path) -%}
    json_type({{ json }}, {{ cdp_literal(path) }})
{%- endmacro %}
{#- Spark 4's VARIANT names the type; named here as DuckDB names it: a whole number is UBIGINT when not negative
    (and below 2^64), BIGINT when negative, a number with a fraction (or beyond) DOUBLE. The lambdas read the
    value once: the expression stays small enough for Spark's code generation however often a model asks. -#}
{% macro spark__json_type_at(json, path) -%}
    transform(array(try_variant_get(try_parse_json({{ json }}), {{ cdp_literal(path) }})), v ->
        transform(array(schema_of_variant(v)), t -> case
            when t = 'VOID' then 'NULL' when t = 'STRING' then 'VARCHAR'
            when t like 'OBJECT%' then 'OBJECT' when t like 'ARRAY%' then 'ARRAY'
            when t in ('BIGINT', 'INT', 'SMALLINT', 'TINYINT') then case when cast(v as bigint) >= 0 then 'UBIGINT' else 'BIGINT' end
            when t like 'DECIMAL(%,0)' and cast(v as decimal(38, 0)) between 0 and 18446744073709551615 then 'UBIGINT'
            when t like 'DECIMAL%' or t = 'FLOAT' then 'DOUBLE'
            else t end)[0])[0]
{%- endmacro %}

{# True when `text` is one JSON object (the only shape a record may have). #}
{% macro is_json_object(text) -%}
    {{ return(adapter.dispatch('is_json_object', 'cdp')(text)) }}
{%- endmacro %}
{% macro default__is_json_object(text) -%}
    (json_valid({{ text }}) and starts_with(ltrim({{ text }}), '{'))
{%- endmacro %}
{#- Spark's parser stops after the first value (`{"a": 1} x` parses): inside brackets, whatever follows it
    must be JSON too, and the array must hold that one object -#}
{% macro spark__is_json_object(text) -%}
    coalesce(transform(array(try_parse_json('[' || {{ text }} || ']')), a ->
        schema_of_variant(try_variant_get(a, '$[0]')) like 'OBJECT%' and try_variant_get(a, '$[1]') is null)[0], false)
{%- endmacro %}

{# The JSON value at `path` as JSON text (a string stays a quoted JSON string, a JSON null is `null`), null when
   absent: what the parse views keep of a record (DuckDB's `->`). #}
{% macro json_member(json, path) -%}
    {{ return(adapter.dispatch('json_member', 'cdp')(json, path)) }}
{%- endmacro %}
{% macro default__json_member(json, path) -%}
    {{ json_value(json, path) }}
{%- endmacro %}
{#- get_json_object writes numbers as DuckDB does (109.0 stays 109.0; VARIANT would write 109), VARIANT keeps a
    string a JSON string and a JSON null `null` -#}
{% macro spark__json_member(json, path) -%}
    transform(array(try_variant_get(try_parse_json({{ json }}), {{ cdp_literal(path) }})), v -> case
        when is_variant_null(v) then 'null'
        when schema_of_variant(v) = 'STRING' then to_json(v)
        else get_json_object({{ json }}, {{ cdp_literal(path) }}) end)[0]
{%- endmacro %}

{# A text known to be JSON as the engine's JSON value (DuckDB's JSON type; Spark reads JSON from its text). #}
{% macro as_json(text) -%}
    {{ return(adapter.dispatch('as_json', 'cdp')(text)) }}
{%- endmacro %}
{% macro default__as_json(text) -%} {{ text }}::json {%- endmacro %}
{% macro spark__as_json(text) -%} {{ text }} {%- endmacro %}

{# RFC 7396 merge patch of JSON object `patch` onto `target`. #}
{% macro json_merge_patch(target, patch) -%}
    {{ return(adapter.dispatch('json_merge_patch', 'cdp')(target, patch)) }}
{%- endmacro %}
{% macro default__json_merge_patch(target, patch) -%}
    json_merge_patch({{ target }}, {{ patch }})
{%- endmacro %}
{#- Spark has no merge patch: the members of both objects (as VARIANT), the patch's winning and its nulls
    removing; a member that is an object in both is replaced by the patch's whole (RFC 7396 merges it) -#}
{% macro spark__json_merge_patch(target, patch) -%}
    {%- set t = "from_json(" ~ target ~ ", 'map<string,variant>')" -%}
    {%- set p = "from_json(" ~ patch ~ ", 'map<string,variant>')" -%}
    to_json(map_filter(map_concat(map_filter({{ t }}, (k, v) -> not array_contains(map_keys({{ p }}), k)), {{ p }}),
                       (k, v) -> not is_variant_null(v)))
{%- endmacro %}

{# A JSON object of (key, value SQL) pairs. #}
{% macro json_object_of(pairs) -%}
    {{ return(adapter.dispatch('json_object_of', 'cdp')(pairs)) }}
{%- endmacro %}
{% macro default__json_object_of(pairs) -%}
    json_object({% for key, value in pairs %}{{ cdp_literal(key) }}, {{ value }}{{ ', ' if not loop.last }}{% endfor %})
{%- endmacro %}
{#- to_json drops null members unless told; times are written as DuckDB writes them (validation reads both) -#}
{% macro spark__json_object_of(pairs) -%}
    {%- if pairs -%}
    to_json(named_struct({% for key, value in pairs %}{{ cdp_literal(key) }}, {{ value }}{{ ', ' if not loop.last }}{% endfor %}),
            map('timestampFormat', 'yyyy-MM-dd HH:mm:ss.SSSSSS', 'ignoreNullFields', 'false'))
    {%- else -%} '{}' {%- endif -%}
{%- endmacro %}

{# A JSON object of key -> the JSON value at path (paths: key -> JSONPath) of JSON `json` (absent: null). #}
{% macro json_object_at(json, paths) -%}
    {{ return(adapter.dispatch('json_object_at', 'cdp')(json, paths)) }}
{%- endmacro %}
{% macro default__json_object_at(json, paths) -%}
    {%- if paths -%}
    json_object({% for key, path in paths.items() %}{{ cdp_literal(key) }}, {{ json_value(json, path) }}{{ ', ' if not loop.last }}{% endfor %})
    {%- else -%} json_object() {%- endif -%}
{%- endmacro %}
{#- values as VARIANT, so strings stay strings and objects objects -#}
{% macro spark__json_object_at(json, paths) -%}
    {%- if paths -%}
    to_json(named_struct({% for key, path in paths.items() %}{{ cdp_literal(key) }}, try_variant_get(try_parse_json({{ json }}), {{ cdp_literal(path) }}){{ ', ' if not loop.last }}{% endfor %}),
            map('ignoreNullFields', 'false'))
    {%- else -%} '{}' {%- endif -%}
{%- endmacro %}

{# The JSON array of texts `json` (a JSON text) as a list of texts; null when it is not an array. #}
{% macro json_to_strings(json) -%}
    {{ return(adapter.dispatch('json_to_strings', 'cdp')(json)) }}
{%- endmacro %}
{% macro default__json_to_strings(json) -%} try_cast({{ json }} as varchar[]) {%- endmacro %}
{% macro spark__json_to_strings(json) -%} from_json({{ json }}, 'array<string>') {%- endmacro %}

{# A SQL string literal of `text` (configuration values: source names, paths, column names). #}
{% macro cdp_literal(text) -%}
    {{ return(adapter.dispatch('cdp_literal', 'cdp')(text)) }}
{%- endmacro %}
{% macro default__cdp_literal(text) -%}
    '{{ text | string | replace("'", "''") }}'
{%- endmacro %}
{#- Spark reads a backslash in a literal as an escape -#}
{% macro spark__cdp_literal(text) -%}
    '{{ text | string | replace("\\", "\\\\") | replace("'", "\\'") }}'
{%- endmacro %}

{# A quoted SQL identifier of `name` (configured column names). #}
{% macro cdp_ident(name) -%}
    {{ return(adapter.dispatch('cdp_ident', 'cdp')(name)) }}
{%- endmacro %}
{% macro default__cdp_ident(name) -%}
    "{{ name | string | replace('"', '""') }}"
{%- endmacro %}
{% macro spark__cdp_ident(name) -%}
    `{{ name | string | replace('`', '``') }}`
{%- endmacro %}

{# The text of member `key` (any name, quoted here) of a JSON object. #}
{% macro json_text_at_key(json, key) -%}
    {{ return(adapter.dispatch('json_text_at_key', 'cdp')(json, key)) }}
{%- endmacro %}
{% macro default__json_text_at_key(json, key) -%}
    {{ json }} ->> {{ cdp_literal('$."' ~ key ~ '"') }}
{%- endmacro %}
{% macro spark__json_text_at_key(json, key) -%}
    get_json_object({{ json }}, {{ cdp_literal("$['" ~ key ~ "']") }})
{%- endmacro %}

{# The texts at a JSONPath that may hold one `[*]` (`products[*].product_id`) as a list of texts; null when absent. #}
{% macro json_strings_at(json, path) -%}
    {{ return(adapter.dispatch('json_strings_at', 'cdp')(json, path)) }}
{%- endmacro %}
{% macro default__json_strings_at(json, path) -%}
    json_extract_string({{ json }}, {{ cdp_literal(path) }})::varchar[]
{%- endmacro %}
{#- get_json_object answers a wildcard with one bare value when one element matches: read the array, then
    each element's member -#}
{% macro spark__json_strings_at(json, path) -%}
    {%- if '[*]' in path -%}
        {%- set array, member = path.split('[*]', 1) -%}
        {%- if member -%}
    transform(from_json(get_json_object({{ json }}, {{ cdp_literal(array) }}), 'array<string>'),
              x -> get_json_object(x, {{ cdp_literal('$' ~ member) }}))
        {%- else -%}
    from_json(get_json_object({{ json }}, {{ cdp_literal(array) }}), 'array<string>')
        {%- endif -%}
    {%- else -%}
    from_json(get_json_object({{ json }}, {{ cdp_literal(path) }}), 'array<string>')
    {%- endif -%}
{%- endmacro %}
