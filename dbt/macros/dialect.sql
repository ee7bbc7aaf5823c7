{#- Where DuckDB's SQL and Spark SQL differ, one macro each (adapter.dispatch): `default__` is the DuckDB SQL the
    models always had, `spark__` its Spark SQL equivalent (dbt-spark, plain Parquet tables). Models call these
    and stay written once. JSON access is in json.sql, deleting rows in spark_tables.sql. -#}

{# The type of a text value (DuckDB `varchar`; Spark needs a length for varchar, `string` has none). #}
{% macro t_string() -%}
    {{ return(adapter.dispatch('t_string', 'cdp')()) }}
{%- endmacro %}
{% macro default__t_string() -%} varchar {%- endmacro %}
{% macro spark__t_string() -%} string {%- endmacro %}

{# The type of a list of texts. #}
{% macro t_strings() -%}
    {{ return(adapter.dispatch('t_strings', 'cdp')()) }}
{%- endmacro %}
{% macro default__t_strings() -%} varchar[] {%- endmacro %}
{% macro spark__t_strings() -%} array<string> {%- endmacro %}

{# An empty list of texts. #}
{% macro empty_strings() -%}
    {{ return(adapter.dispatch('empty_strings', 'cdp')()) }}
{%- endmacro %}
{% macro default__empty_strings() -%} []::varchar[] {%- endmacro %}
{% macro spark__empty_strings() -%} cast(array() as array<string>) {%- endmacro %}

{# True when a double is a number (not NaN, not an infinity). #}
{% macro is_finite(number) -%}
    {{ return(adapter.dispatch('is_finite', 'cdp')(number)) }}
{%- endmacro %}
{% macro default__is_finite(number) -%} isfinite({{ number }}) {%- endmacro %}
{% macro spark__is_finite(number) -%} (not isnan({{ number }}) and abs({{ number }}) < double('Infinity')) {%- endmacro %}

{# A timestamp `days` (a number) days before `timestamp`. #}
{% macro days_before(timestamp, days) -%}
    {{ return(adapter.dispatch('days_before', 'cdp')(timestamp, days)) }}
{%- endmacro %}
{% macro default__days_before(timestamp, days) -%} {{ timestamp }} - interval ({{ days | int }}) day {%- endmacro %}
{% macro spark__days_before(timestamp, days) -%} {{ timestamp }} - interval {{ days | int }} days {%- endmacro %}

{# Day boundaries crossed from `start` to `end` (DuckDB's date_diff('day', ...); Spark's date_diff on dates). #}
{% macro days_between(start, end) -%}
    {{ return(adapter.dispatch('days_between', 'cdp')(start, end)) }}
{%- endmacro %}
{% macro default__days_between(start, end) -%} date_diff('day', {{ start }}, {{ end }}) {%- endmacro %}
{% macro spark__days_between(start, end) -%} date_diff({{ end }}, {{ start }}) {%- endmacro %}

{# Every column of `relation_alias` (none: of the FROM clause) but `names`. #}
{% macro star_except(relation_alias, names) -%}
    {{ return(adapter.dispatch('star_except', 'cdp')(relation_alias, names)) }}
{%- endmacro %}
{% macro default__star_except(relation_alias, names) -%}
    {{ relation_alias ~ '.' if relation_alias }}* exclude ({{ names | join(', ') }})
{%- endmacro %}
{% macro spark__star_except(relation_alias, names) -%}
    {{ relation_alias ~ '.' if relation_alias }}* except ({{ names | join(', ') }})
{%- endmacro %}

{# A hash of a whole row of relation `alias` (change detection only: the values differ between engines). #}
{% macro row_hash(alias) -%}
    {{ return(adapter.dispatch('row_hash', 'cdp')(alias)) }}
{%- endmacro %}
{% macro default__row_hash(alias) -%} hash({{ alias }}) {%- endmacro %}
{% macro spark__row_hash(alias) -%} xxhash64(struct({{ alias }}.*)) {%- endmacro %}

{# The build time now, as a UTC timestamp without time zone. #}
{% macro now_utc() -%}
    {{ return(adapter.dispatch('now_utc', 'cdp')()) }}
{%- endmacro %}
{% macro default__now_utc() -%} (now() at time zone 'UTC')::timestamp {%- endmacro %}
{#- the session's time zone is UTC (profiles.yml, cdp_resources/spark.py) -#}
{% macro spark__now_utc() -%} current_timestamp() {%- endmacro %}

{# The relation `schema`.`identifier` of the warehouse (a table the platform's Python stages write). #}
{% macro warehouse_relation(schema, identifier) -%}
    {{ return(adapter.dispatch('warehouse_relation', 'cdp')(schema, identifier)) }}
{%- endmacro %}
{% macro default__warehouse_relation(schema, identifier) -%}
    {{ return(api.Relation.create(database=target.database, schema=schema, identifier=identifier)) }}
{%- endmacro %}
{#- Spark has no database above the schema -#}
{% macro spark__warehouse_relation(schema, identifier) -%}
    {{ return(api.Relation.create(schema=schema, identifier=identifier)) }}
{%- endmacro %}
