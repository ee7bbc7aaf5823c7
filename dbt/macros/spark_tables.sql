{#- Changing rows of a table on Spark. The warehouse's Spark tables are plain Parquet (README "Running on Spark":
    no Delta or Iceberg jars), which have no DELETE, no MERGE and cannot be overwritten by a query that reads
    them. So on Spark a delete writes the rows kept to a scratch table and overwrites the table from it, an
    upsert of a bookkeeping row (a few rows) rewrites the table from literals, and `delete+insert` (which
    dbt-spark does not offer) is that delete followed by the insert. What the models compute stays incremental;
    only writing a changed table rewrites it. With `file_format='delta'` (or iceberg, hudi) the table's own
    DELETE is used instead, and a Databricks user switches `delete+insert` models to `merge`. -#}

{# Delete the rows of `relation` (alias `d` in `condition`) where `condition` holds. #}
{% macro delete_rows(relation, condition) -%}
    {{ return(adapter.dispatch('delete_rows', 'cdp')(relation, condition)) }}
{%- endmacro %}
{% macro default__delete_rows(relation, condition) -%}
    delete from {{ relation }} where {{ condition }}
{%- endmacro %}
{#- Runs its statements while the hook renders (one Spark statement per call); the hook itself is a no-op. -#}
{% macro spark__delete_rows(relation, condition) -%}
    {%- if execute -%}
        {%- if config.get('file_format', 'parquet') in ('delta', 'iceberg', 'hudi') -%}
            {%- do run_query('delete from ' ~ relation ~ ' as d where ' ~ condition) -%}
        {%- elif run_query('select count(*) from ' ~ relation ~ ' as d where ' ~ condition).rows[0][0] > 0 -%}
            {%- do spark_rewrite(relation, 'select d.* from ' ~ relation ~ ' as d where not (' ~ condition ~ ')') -%}
        {%- endif -%}
    {%- endif -%}
    select 1
{%- endmacro %}

{# Replace the rows of Parquet table `relation` by those of `query` (which may read it). #}
{% macro spark_rewrite(relation, query) -%}
    {%- set scratch = relation.incorporate(path={'identifier': relation.identifier ~ '__cdp_rewrite'}) -%}
    {%- do run_query('drop table if exists ' ~ scratch) -%}
    {%- do run_query('create table ' ~ scratch ~ ' using parquet as ' ~ query) -%}
    {%- do run_query('insert overwrite table ' ~ relation ~ ' select * from ' ~ scratch) -%}
    {%- do run_query('drop table ' ~ scratch) -%}
{%- endmacro %}

{# Set the row of `relation` whose first column is `key` to `values` (SQL expressions, the key's first): a
   bookkeeping table of a few rows (core.watermarks, core.model_digests). #}
{% macro upsert_row(relation, values) -%}
    {{ return(adapter.dispatch('upsert_row', 'cdp')(relation, values)) }}
{%- endmacro %}
{% macro default__upsert_row(relation, values) -%}
    insert or replace into {{ relation }}
    values ({{ values | join(', ') }})
{%- endmacro %}
{% macro spark__upsert_row(relation, values) -%}
    {%- if execute -%}
        {%- set new = run_query('select ' ~ values | join(', ')).rows[0] -%}
        {%- set columns = adapter.get_columns_in_relation(relation) -%}
        {%- set rows = [new] + (run_query('select * from ' ~ relation ~ ' where ' ~ columns[0].quoted ~ ' <> ' ~ cdp_literal(new[0])).rows | list) -%}
        {%- set literals = [] -%}
        {%- for row in rows -%}
            {%- set cells = [] -%}
            {%- for value in row -%}
                {%- do cells.append('null' if value is none else (value | string if value is number else cdp_literal(value))) -%}
            {%- endfor -%}
            {%- do literals.append('(' ~ cells | join(', ') ~ ')') -%}
        {%- endfor -%}
        {%- do run_query('insert overwrite table ' ~ relation ~ ' values ' ~ literals | join(', ')) -%}
    {%- endif -%}
    select 1
{%- endmacro %}

{#- dbt-spark's incremental materialization with `delete+insert` on Parquet (dbt-spark knows append,
    insert_overwrite, microbatch and, on Delta/Iceberg/Hudi, merge): the rows whose unique key is among the new
    rows are replaced by them, as dbt's delete+insert does elsewhere. These two macros take the place of
    dbt-spark 1.11's own (the root project's macros take precedence; an adapter's cannot be called by its
    package name), doing what those do for every other strategy. -#}
{% macro dbt_spark_validate_get_incremental_strategy(raw_strategy, file_format) -%}
    {%- if raw_strategy not in ['append', 'merge', 'insert_overwrite', 'microbatch', 'delete+insert'] -%}
        {%- do exceptions.raise_compiler_error("Invalid incremental strategy provided: " ~ raw_strategy
            ~ "; expected one of 'append', 'merge', 'insert_overwrite', 'microbatch', 'delete+insert'") -%}
    {%- elif raw_strategy == 'merge' and file_format not in ['delta', 'iceberg', 'hudi'] -%}
        {%- do exceptions.raise_compiler_error("Invalid incremental strategy provided: merge; You can only choose this strategy when file_format is set to 'delta' or 'iceberg' or 'hudi'") -%}
    {%- elif raw_strategy in ['insert_overwrite', 'microbatch'] and target.endpoint -%}
        {%- do exceptions.raise_compiler_error("Invalid incremental strategy provided: " ~ raw_strategy ~ "; You cannot use this strategy when connecting via endpoint") -%}
    {%- endif -%}
    {{ return(raw_strategy) }}
{%- endmacro %}

{% macro dbt_spark_get_incremental_sql(strategy, source, target, existing, unique_key, incremental_predicates) -%}
    {%- if strategy == 'append' -%}
        {{ get_insert_into_sql(source, target) }}
    {%- elif strategy in ('insert_overwrite', 'microbatch') -%}
        {%- if strategy == 'microbatch' and not config.get('partition_by') -%}
            {%- do exceptions.raise_compiler_error("dbt-spark 'microbatch' incremental strategy requires a `partition_by` config.") -%}
        {%- endif -%}
        {{ get_insert_overwrite_sql(source, target, existing) }}
    {%- elif strategy == 'merge' -%}
        {{ get_merge_sql(target, source, unique_key, dest_columns=none, incremental_predicates=incremental_predicates) }}
    {%- else -%}
        {{ spark_delete_insert(source, target, unique_key) }}
    {%- endif -%}
{%- endmacro %}

{% macro spark_delete_insert(source, target, unique_key) -%}
    {%- set keys = [unique_key] if unique_key is string else unique_key -%}
    {%- set new = target.incorporate(path={'identifier': target.identifier ~ '__cdp_new'}) -%}
    {%- set columns = adapter.get_columns_in_relation(target) | map(attribute='quoted') | join(', ') -%}
    {#- the new rows are written first: the model's query may read the table that is about to change -#}
    {%- do run_query('drop table if exists ' ~ new) -%}
    {%- do run_query('create table ' ~ new ~ ' using parquet as select * from ' ~ source) -%}
    {%- set matches = [] -%}
    {%- for key in keys -%}{%- do matches.append('d.' ~ key ~ ' = n.' ~ key) -%}{%- endfor -%}
    {%- if run_query('select count(*) from ' ~ new).rows[0][0] > 0 -%}
    {%- do spark_rewrite(target,
        'select ' ~ columns ~ ' from ' ~ target ~ ' as d left anti join ' ~ new ~ ' as n on ' ~ matches | join(' and ')
        ~ ' union all select ' ~ columns ~ ' from ' ~ new) -%}
    {%- endif -%}
    {%- do run_query('drop table ' ~ new) -%}
    select 1
{%- endmacro %}

{#- Where dbt-spark puts a table it creates: `location_root` when configured (dbt-spark's own rule), else the
    directory Spark would choose (`<warehouse>/<schema>.db/<table>`), named explicitly. A process registers
    the warehouse's existing directories as tables (cdp_assets/dbt/spark.py), and dropping such a table keeps
    its files; Spark creates a table over a non-empty directory only when told its location (with
    spark.sql.legacy.allowNonEmptyLocationInCTAS, set by profiles.yml and cdp_resources/spark.py). -#}
{% macro spark__location_clause() -%}
    {%- set location_root = config.get('location_root', validator=validation.any[basestring]) -%}
    {%- if location_root is not none %}
    location '{{ location_root }}/{{ model['alias'] }}'
    {%- elif execute %}
    {%- set warehouse = run_query('set spark.sql.warehouse.dir').rows[0][1] %}
    location '{{ warehouse.rstrip('/') }}/{{ model['schema'] }}.db/{{ model['alias'] }}'
    {%- endif %}
{%- endmacro %}
