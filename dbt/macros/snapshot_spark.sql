{#- dbt-spark's snapshot materialization, for plain Parquet tables too. dbt-spark requires Delta, Iceberg or
    Hudi for snapshots only because it applies a snapshot's changes with MERGE; the warehouse's Spark tables
    are Parquet (README "Running on Spark"). This is dbt-spark 1.11's materialization (the root project's takes
    precedence) with one difference: on Parquet the changes dbt's own snapshot staging computes (check or
    timestamp strategy, hard_deletes, the configured column names) are applied by rewriting the table (the
    versions kept, the closed ones with their valid_to, the new ones) through a scratch table, as
    dbt/macros/spark_tables.sql changes other tables. With `file_format: delta` (or iceberg, hudi) it is
    dbt-spark's MERGE, unchanged. -#}
{% materialization snapshot, adapter='spark' %}

  {%- set target_table = model.get('alias', model.get('name')) -%}

  {%- set strategy_name = config.get('strategy') -%}
  {%- set unique_key = config.get('unique_key') %}
  {%- set file_format = config.get('file_format') or 'parquet' -%}
  {%- set mergeable = file_format in ['delta', 'iceberg', 'hudi'] -%}
  {%- set grant_config = config.get('grants') -%}

  {% set target_relation_exists, target_relation = get_or_create_relation(
          database=none,
          schema=model.schema,
          identifier=target_table,
          type='table') -%}

  {%- if file_format not in ['delta', 'iceberg', 'hudi', 'parquet'] -%}
    {% do exceptions.raise_compiler_error("Invalid file format: " ~ file_format ~ "; snapshots need 'parquet', 'delta', 'iceberg' or 'hudi'") %}
  {% endif %}

  {%- if target_relation_exists and mergeable -%}
    {%- if not target_relation.is_delta and not target_relation.is_iceberg and not target_relation.is_hudi -%}
      {% do exceptions.raise_compiler_error("The existing table " ~ model.schema ~ "." ~ target_table ~ " is in another format than 'delta' or 'iceberg' or 'hudi'") %}
    {% endif %}
  {% endif %}

  {% if not adapter.check_schema_exists(model.database, model.schema) %}
    {% do create_schema(model.schema) %}
  {% endif %}

  {%- if not target_relation.is_table -%}
    {% do exceptions.relation_wrong_type(target_relation, 'table') %}
  {%- endif -%}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}

  {{ run_hooks(pre_hooks, inside_transaction=True) }}

  {% set strategy_macro = strategy_dispatch(strategy_name) %}
  {% set strategy = strategy_macro(model, "snapshotted_data", "source_data", model['config'], target_relation_exists) %}

  {% if not target_relation_exists %}

      {% set build_sql = build_snapshot_table(strategy, model['compiled_code']) %}
      {% set final_sql = create_table_as(False, target_relation, build_sql) %}

  {% else %}

      {% set columns = config.get("snapshot_table_column_names") or get_snapshot_table_column_names() %}

      {{ adapter.valid_snapshot_target(target_relation, columns) }}

      {% set staging_table = spark_build_snapshot_staging_table(strategy, sql, target_relation) %}

      -- this may no-op if the database does not require column expansion
      {% do adapter.expand_target_column_types(from_relation=staging_table,
                                               to_relation=target_relation) %}

      {% set missing_columns = adapter.get_missing_columns(staging_table, target_relation)
                                   | rejectattr('name', 'equalto', 'dbt_change_type')
                                   | rejectattr('name', 'equalto', 'DBT_CHANGE_TYPE')
                                   | rejectattr('name', 'equalto', 'dbt_unique_key')
                                   | rejectattr('name', 'equalto', 'DBT_UNIQUE_KEY')
                                   | list %}

      {% do create_columns(target_relation, missing_columns) %}

      {% set source_columns = adapter.get_columns_in_relation(staging_table)
                                   | rejectattr('name', 'equalto', 'dbt_change_type')
                                   | rejectattr('name', 'equalto', 'DBT_CHANGE_TYPE')
                                   | rejectattr('name', 'equalto', 'dbt_unique_key')
                                   | rejectattr('name', 'equalto', 'DBT_UNIQUE_KEY')
                                   | list %}

      {% set quoted_source_columns = [] %}
      {% for column in source_columns %}
        {% do quoted_source_columns.append(adapter.quote(column.name)) %}
      {% endfor %}

      {% if mergeable %}
        {% set final_sql = snapshot_merge_sql(
              target = target_relation,
              source = staging_table,
              insert_cols = quoted_source_columns
           )
        %}
      {% else %}
        {% do spark_rewrite(target_relation, parquet_snapshot_versions(target_relation, staging_table, columns, source_columns)) %}
        {% set final_sql = 'select 1' %}
      {% endif %}

  {% endif %}

  {% call statement('main') %}
      {{ final_sql }}
  {% endcall %}

  {% set should_revoke = should_revoke(target_relation_exists, full_refresh_mode) %}
  {% do apply_grants(target_relation, grant_config, should_revoke) %}

  {% do persist_docs(target_relation, model) %}

  {{ run_hooks(post_hooks, inside_transaction=True) }}

  {{ adapter.commit() }}

  {% if staging_table is defined %}
      {% do post_snapshot(staging_table) %}
  {% endif %}

  {{ run_hooks(post_hooks, inside_transaction=False) }}

  {{ return({'relations': [target_relation]}) }}

{% endmaterialization %}

{#- Every version of the snapshot after applying the staged changes, as dbt-spark's MERGE applies them: a
    current version that was updated or deleted gets the staged valid_to, inserted versions are added; in
    the target's column order (a column the staging lacks is null). -#}
{% macro parquet_snapshot_versions(target, staging, columns, source_columns) -%}
    {%- set staged = source_columns | map(attribute='name') | map('lower') | list -%}
    {%- set kept, added = [], [] -%}
    {%- for column in adapter.get_columns_in_relation(target) -%}
        {%- set name = adapter.quote(column.name) -%}
        {%- if column.name | lower == columns.dbt_valid_to | lower -%}
            {%- do kept.append('case when c.scd_id is not null then c.valid_to else d.' ~ name ~ ' end as ' ~ name) -%}
        {%- else -%}
            {%- do kept.append('d.' ~ name) -%}
        {%- endif -%}
        {%- do added.append(('s.' ~ name) if column.name | lower in staged else ('null as ' ~ name)) -%}
    {%- endfor -%}
    select {{ kept | join(', ') }}
    from {{ target }} as d
    left join (select {{ columns.dbt_scd_id }} as scd_id, {{ columns.dbt_valid_to }} as valid_to from {{ staging }}
               where dbt_change_type in ('update', 'delete')) as c
      on c.scd_id = d.{{ columns.dbt_scd_id }} and d.{{ columns.dbt_valid_to }} is null
    union all
    select {{ added | join(', ') }} from {{ staging }} as s where s.dbt_change_type = 'insert'
{%- endmacro %}
