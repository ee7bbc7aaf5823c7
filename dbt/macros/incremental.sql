{#- Incremental models read only what changed since they last ran. Every stage that changes rows allocates a
    batch (core.batches) and stamps the rows it writes (`_batch_id`); rows it replaces or deletes go to a
    *_removed log with the batch that removed them. A model remembers the last batch it has read
    (core.watermarks, advanced by its post-hook) and reads rows stamped after it: live rows to (re)compute,
    removed rows to forget. Replaying a batch is harmless (every model deletes what it recomputes). -#}

{% macro current_batch() -%}
    (select coalesce(max(batch_id), 0) from {{ bookkeeping('batches') }})
{%- endmacro %}

{# The last batch `consumer` has read; -1 when it never ran (or is rebuilt: then it reads everything). #}
{% macro watermark(consumer=none) -%}
    {%- if not is_incremental() or full_rebuild_needed() -%} -1
    {%- else -%}
    (select coalesce(max(batch_id), -1) from {{ bookkeeping('watermarks') }} where consumer = {{ cdp_literal(consumer or this.identifier) }})
    {%- endif -%}
{%- endmacro %}

{# post-hook: the model has read everything up to the current batch. #}
{% macro advance_watermark(consumer=none) -%}
    {{ upsert_row(bookkeeping('watermarks'), [cdp_literal(consumer or this.identifier), current_batch()]) }}
{%- endmacro %}

{#- Incremental models depend on the configuration (sources, identity rules, traits) and on erasures (which
    delete a person's rows everywhere, behind the models' backs): when a digest of both differs from the one a
    model's rows were built with, the model rebuilds everything (its pre-hook deletes its rows and its watermark
    reads as -1). Both are rare; a rebuild is always right. -#}
{% macro config_digest() -%}
    {%- set config = {} -%}
    {%- for name in ['sources', 'identifier_types', 'identity_rules', 'profile_traits', 'trait_sources', 'computed_traits', 'rfm'] -%}
        {%- do config.update({name: var(name, none)}) -%}
    {%- endfor -%}
    {%- if execute and adapter.get_relation(database=target.database, schema='cdp', identifier='privacy_audit') -%}
        {%- do config.update({'erasures': run_query("select count(*) from cdp.privacy_audit where action = 'erase'").rows[0][0] | int}) -%}
    {%- endif -%}
    {{ return(local_md5(tojson(config, sort_keys=true))) }}
{%- endmacro %}

{% macro full_rebuild_needed() -%}
    {%- if not execute or not is_incremental() -%}{{ return(false) }}{%- endif -%}
    {%- set result = run_query("select digest from " ~ bookkeeping('model_digests').render() ~ " where model = " ~ cdp_literal(this.identifier)) -%}
    {{ return(result.rows | length == 0 or result.rows[0][0] != config_digest()) }}
{%- endmacro %}

{# pre-hook of a configuration-dependent incremental model: start over when the configuration changed. #}
{% macro forget_all_if_config_changed() -%}
    {%- if is_incremental() and full_rebuild_needed() -%} {{ forget_all() }} {%- else -%} select 1 {%- endif -%}
{%- endmacro %}

{% macro forget_all() -%}
    {{ return(adapter.dispatch('forget_all', 'cdp')()) }}
{%- endmacro %}
{% macro default__forget_all() -%} delete from {{ this }} {%- endmacro %}
{% macro spark__forget_all() -%} {{ delete_rows(this, 'true') }} {%- endmacro %}

{# post-hook: the configuration the model's rows were built with. #}
{% macro record_config_digest() -%}
    {{ return(adapter.dispatch('record_config_digest', 'cdp')()) }}
{%- endmacro %}
{% macro default__record_config_digest() -%}
    insert or replace into {{ bookkeeping('model_digests') }} values ({{ cdp_literal(this.identifier) }}, {{ cdp_literal(config_digest()) }})
{%- endmacro %}
{% macro spark__record_config_digest() -%}
    {{ upsert_row(bookkeeping('model_digests'), [cdp_literal(this.identifier), cdp_literal(config_digest())]) }}
{%- endmacro %}

{#- Changed rows of a validated table since `since` (a SQL expression): `live` the current rows stamped
    after it, `removed` the rows replaced or deleted after it. -#}
{% macro events_since(since, removed=false) -%}
    {%- if removed -%}
    select * from {{ bookkeeping('events_removed') }} where _removed_batch_id > {{ since }}
    {%- else -%}
    select * from {{ source('cdp', 'events') }} where _batch_id > {{ since }}
    {%- endif -%}
{%- endmacro %}

{% macro validated_since(name, since, removed=false) -%}
    {%- set table = warehouse_relation('validated', name ~ ('_removed' if removed else '')) -%}
    select * from {{ table }} where {{ '_removed_batch_id' if removed else '_batch_id' }} > {{ since }}
{%- endmacro %}

{# The table sources (config/sources.yaml) with `key` set (identifiers, traits, relationships). #}
{% macro table_sources_with(key) -%}
    {%- set found = {} -%}
    {%- for name, source in var('sources').items() if source.kind not in ('events', 'webhook') and source.get(key) -%}
        {%- do found.update({name: source}) -%}
    {%- endfor -%}
    {{ return(found) }}
{%- endmacro %}

{# pre-hook of a model keyed by record: forget the records replaced or deleted since it last ran. #}
{% macro forget_removed_records() -%}
    {%- if is_incremental() -%}
    {%- set removed -%}
    record_id in (
        select 'events:' || event_id from ({{ events_since(watermark(), removed=true) }})
        {%- for name, source in var('sources').items() if source.kind not in ('events', 'webhook') %}
        union all
        select {{ cdp_literal(name ~ ':') }} || {{ cdp_ident(source.primary_key) }}::{{ t_string() }}
        from ({{ validated_since(name, watermark(), removed=true) }})
        {%- endfor %}
    )
    {%- endset -%}
    {{ delete_rows(this, removed) }}
    {%- else -%} select 1
    {%- endif -%}
{%- endmacro %}

{#- pre-hook of a model keyed by identifier: forget its rows naming an identifier touched since it last ran
    (core.touched_identifiers); `columns`: the (type, value) column pairs that name an identifier in a row. -#}
{% macro forget_touched_identifiers(columns) -%}
    {{ return(adapter.dispatch('forget_touched_identifiers', 'cdp')(columns)) }}
{%- endmacro %}
{#- One membership test per column pair (hash joins): a join on `pair1 = t or pair2 = t` is a nested loop over
    every row times every touched identifier (57 s for one new hour at 10M events, against 0.1 s). -#}
{% macro default__forget_touched_identifiers(columns) -%}
    delete from {{ this }} d
    where {% for type, value in columns %}{{ ' or ' if not loop.first }}(d.{{ type }}, d.{{ value }}) in (select identifier_type, identifier_value from {{ ref('touched_identifiers') }} where _batch_id > {{ watermark() }}){% endfor %}
{%- endmacro %}
{% macro spark__forget_touched_identifiers(columns) -%}
    {#- one EXISTS per pair of columns, each an equi-join (Spark plans an existence hash join); one EXISTS over
        an OR of the pairs was a nested loop over every row and touched identifier -#}
    {%- set condition -%}
    {% for type, value in columns %}{{ ' or ' if not loop.first }}exists (select 1 from {{ ref('touched_identifiers') }} as t
        where t._batch_id > {{ watermark() }} and d.{{ type }} = t.identifier_type and d.{{ value }} = t.identifier_value){% endfor %}
    {%- endset -%}
    {{ delete_rows(this, condition) }}
{%- endmacro %}

{#- on-run-start: the bookkeeping tables (as cdp_assets/events/sql/state.sql creates them), and a batch of
    this dbt run, so every row it stamps is newer than what any consumer has read so far. -#}
{% macro start_batch() -%}
    {{ return(adapter.dispatch('start_batch', 'cdp')()) }}
{%- endmacro %}
{% macro default__start_batch() -%}
    create schema if not exists core;
    create table if not exists core.batches (batch_id bigint, stage varchar, started_at timestamp);
    create table if not exists core.watermarks (consumer varchar primary key, batch_id bigint);
    create table if not exists core.model_digests (model varchar primary key, digest varchar);
    create table if not exists core.id_map_changes (identifier_type varchar, identifier_value varchar,
        person_before varchar, person_after varchar, _batch_id bigint);
    insert into core.batches select coalesce(max(batch_id), 0) + 1, 'dbt', (now() at time zone 'UTC')::timestamp from core.batches;
{%- endmacro %}
{#- one statement per call on Spark; Parquet tables (no keys) -#}
{% macro spark__start_batch() -%}
    {%- if execute -%}
    {%- do run_query('create schema if not exists core') -%}
    {%- do run_query('create table if not exists core.batches (batch_id bigint, stage string, started_at timestamp) using parquet') -%}
    {%- do run_query('create table if not exists core.watermarks (consumer string, batch_id bigint) using parquet') -%}
    {%- do run_query('create table if not exists core.model_digests (model string, digest string) using parquet') -%}
    {%- do run_query('create table if not exists core.id_map_changes (identifier_type string, identifier_value string, person_before string, person_after string, _batch_id bigint) using parquet') -%}
    {%- do run_query("insert into core.batches select coalesce(max(batch_id), 0) + 1, 'dbt', " ~ now_utc() ~ " from core.batches") -%}
    {%- endif -%}
    select 1
{%- endmacro %}

{#- A table the platform's Python stages keep for incremental runs (core.batches, core.watermarks,
    core.model_digests, core.events_removed, core.id_map_changes): read as a plain relation, not a dbt source,
    since it is bookkeeping rather than an asset. -#}
{% macro bookkeeping(name) -%}
    {{ return(warehouse_relation('core', name)) }}
{%- endmacro %}
