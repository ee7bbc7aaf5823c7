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

{# True when `text` is one JSON object (the only shape a record may have). #}
{% macro is_json_object(text) -%}
    {{ return(adapter.dispatch('is_json_object', 'cdp')(text)) }}
{%- endmacro %}
{% macro default__is_json_object(text) -%}
    (json_valid({{ text }}) and starts_with(ltrim({{ text }}), '{'))
{%- endmacro %}

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
