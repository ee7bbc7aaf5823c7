"""Validation on Spark (`CDP_ENGINE=spark`): the same partitions judged by the same rules, merged the same way
as on DuckDB (cdp_assets/events/validate.py), into Parquet tables of the Spark warehouse.

- The parse views `staging.parsed_*` are the same dbt models, built with `--target spark` (their engine
  differences dispatch in dbt/macros/parse.sql, json.sql, debezium.sql). The catalog is in memory, so a process
  builds them once, when it first needs them.
- A changed partition is found as on DuckDB (row count, newest load, rules fingerprint against
  core.validated_partitions). Its parsed records come to the driver one chunk (at most CHUNK_ROWS raw records)
  at a time, as Arrow, and are judged by the suites' polars rules (cdp_assets/events/rules.py) and protected by
  the PII rules there: the very code DuckDB's validation runs, so a rule exists once.
- The verdicts are merged with DataFrames (the statements of sql/merge_events.sql and sql/merge_table.sql,
  which Parquet cannot run: it has no DELETE or UPDATE). Each chunk's verdicts (accepted records, quarantine,
  violations) are appended to a staging directory under the warehouse as they are judged, and each table is
  merged once per source, over the union of the judged partitions, then written with the change logs in one
  `replace_tables` under the warehouse's writer lock. On plain Parquet every write of a table rewrites it, so
  merging per chunk rewrote `cdp.events` once per chunk (the cost followed chunks x table size); now a run
  rewrites it once per source. A failure leaves the tables as they were before the source's run, whose
  partitions are then judged again. Chunks hold disjoint partitions, so this equals DuckDB's merges chunk by
  chunk, but for the versions that lived only between two chunks of a run (`validate_source_on_spark`).

Row hashes are xxhash64 (as DECIMAL(20, 0), the column's type when DuckDB's UBIGINT hash is copied): they only
tell whether a row changed, so they differ from DuckDB's values and need not match.
"""

from __future__ import annotations

import shutil
import uuid
from typing import TYPE_CHECKING

import polars as pl

from cdp_assets.config import SourceConfig
from cdp_assets.events.pii import PiiRules, protect_columns, protect_events
from cdp_assets.events.rules import load_suite
from cdp_assets.events.validate import (
    EVENT_COLUMNS, POSITION, REMOVED_LOG_READERS, VIOLATIONS_TABLE, SourceResult, ValidationRun, chunks, fingerprint,
    judge_chunk, parse_views_digest, parsed_view, _counts,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from cdp_resources.spark import SparkEngine

# Column types on Spark: what tests/spark_tables.py copy_to_spark gives for DuckDB's (JSON as text, UBIGINT
# hashes as DECIMAL(20, 0), naive UTC times as timestamps).
HASH = "decimal(20,0)"
_EVENT_TYPES = {
    **{c: "string" for c in EVENT_COLUMNS},
    **{c: "timestamp" for c in ("occurred_at", "received_at", "original_timestamp", "sent_at")},
    "raw_source": "string", "partition_key": "string", "file": "string", "line_no": "bigint",
}
EVENTS = {**_EVENT_TYPES, "row_hash": HASH, "_batch_id": "bigint"}
TABLES = {
    "cdp.events": EVENTS,
    "core.event_duplicates": EVENTS,
    "core.events_removed": {**EVENTS, "_removed_batch_id": "bigint"},
    "core.batches": {"batch_id": "bigint", "stage": "string", "started_at": "timestamp"},
    "core.validated_partitions": {"raw_source": "string", "partition_key": "string", "raw_rows": "bigint",
                                  "loaded_max": "timestamp", "fingerprint": "string"},
    "cdp.quarantine": {"source": "string", "record": "string", "reasons": "array<string>", "received_at": "timestamp",
                       "file": "string", "line_no": "bigint", "partition_key": "string"},
    "validated.reconciliation": {"source": "string", "partition_key": "string", "records": "bigint", "accepted": "bigint",
                                 "quarantined": "bigint", "kind": "string"},
    VIOLATIONS_TABLE: {"source": "string", "event_id": "string", "event_type": "string", "event_name": "string",
                       "violations": "array<string>", "occurred_at": "timestamp", "received_at": "timestamp",
                       "partition_key": "string", "file": "string", "line_no": "bigint"},
}
SPARK_TYPES = {"string": "string", "number": "double", "boolean": "boolean", "list": "array<string>", "timestamp": "timestamp"}
# Warehouse directory -> digest of the parse views this process built. The catalog is in memory, so what DuckDB
# keeps in core.model_digests lives and dies with the process here.
_built_views: dict[str, str] = {}


class Pending:
    """New contents of tables, not written yet: what a merge reads instead of the table, and what `flush` writes,
    all at once."""

    def __init__(self, engine: "SparkEngine"):
        self.engine = engine
        self.frames: dict[str, "DataFrame"] = {}

    def table(self, table: str) -> "DataFrame":
        return self.frames[table] if table in self.frames else self.engine.table(table)

    def flush(self) -> None:
        if self.frames:
            self.engine.replace_tables(self.frames)
        self.frames = {}


class Staging:
    """Verdicts of one source's chunks, appended as Parquet under the warehouse as they are judged (the driver
    holds one chunk at a time), read back whole by the source's one merge, removed after it was written."""

    def __init__(self, engine: "SparkEngine", source: str):
        self.engine = engine
        self.root = engine.warehouse_dir / "_staging" / f"validation-{source}-{uuid.uuid4().hex[:8]}"

    def add(self, kind: str, frame: pl.DataFrame, columns: dict[str, str]) -> None:
        if not frame.is_empty():
            _spark(self.engine, frame, columns).write.mode("append").parquet(str(self.root / kind))

    def read(self, kind: str, columns: dict[str, str]) -> "DataFrame":
        if not (self.root / kind).exists():
            return _empty(self.engine, columns)
        return _cast(self.engine.session().read.parquet(str(self.root / kind)), columns)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def source_tables(source: SourceConfig) -> dict[str, dict[str, str]]:
    """The validated tables of a table source and their columns (as validate._ensure_tables makes them)."""
    declared = {c: SPARK_TYPES[kind] for c, kind in source.columns.items()}
    cdc = {"op": "string", "source_lsn": "bigint", "source_ts_ms": "bigint"} if source.kind == "cdc" else {}
    current = {**declared, "received_at": "timestamp", "row_hash": HASH, "_batch_id": "bigint"}
    return {
        f"validated.{source.name}_changes": {**declared, "received_at": "timestamp", **cdc, "partition_key": "string",
                                             "file": "string", "line_no": "bigint", "row_hash": HASH, "_batch_id": "bigint"},
        f"validated.{source.name}": current,
        f"validated.{source.name}_removed": {**current, "_removed_batch_id": "bigint"},
    }


def validate_sources_on_spark(engine: "SparkEngine", sources: dict[str, SourceConfig], pii: PiiRules, parameters: dict,
                              now, log=lambda message: None) -> ValidationRun:
    """validate.validate_sources_in on Spark."""
    with engine.lock():
        rebuilt = ensure_parse_views_on_spark(engine, sources)
        schemas = {**TABLES, **{t: c for s in sources.values() if not s.produces_events for t, c in source_tables(s).items()}}
        pending = Pending(engine)  # tables missing yet are written with the run's first changes
        pending.frames.update({t: _empty(engine, c) for t, c in schemas.items() if not engine.table_exists(t)})
        _prune_change_logs(pending, sources.values())
        batch = _new_batch(pending, "validation", now)
        results = {}
        for source in sources.values():
            results[source.name] = validate_source_on_spark(pending, source, pii, parameters, batch, log)
        pending.flush()
        totals = validation_totals_on_spark(engine, sources)
        reconciliation = [tuple(r) for r in engine.table("validated.reconciliation")
                          .select("source", "partition_key", "records", "accepted", "quarantined").collect()]
    return ValidationRun(batch, results, totals, reconciliation, rebuilt)


def ensure_parse_views_on_spark(engine: "SparkEngine", sources: dict[str, SourceConfig]) -> bool:
    """The dbt parse views in this process's catalog (built with `--target spark` when missing or when what they
    are built from changed); True when built."""
    from cdp_assets.dbt.project import run_dbt
    from cdp_assets.dbt.vars import dbt_vars

    session = engine.session()
    # DuckDB reads a record whose object repeats a key; Spark's VARIANT refuses one unless told.
    session.conf.set("spark.sql.variant.allowDuplicateKeys", "true")
    vars_ = dbt_vars()
    digest = parse_views_digest(vars_["sources"])
    views = {parsed_view(s) for s in sources.values()}
    engine.register_tables()  # the raw tables as they are now (the views read them through the catalog)
    if _built_views.get(str(engine.warehouse_dir)) == digest and all(session.catalog.tableExists(v) for v in views):
        return False
    run_dbt(["run", "--target", "spark", "--select", "path:models/staging/parsed"], vars_)
    _built_views[str(engine.warehouse_dir)] = digest
    return True


def validate_source_on_spark(pending: Pending, source: SourceConfig, pii: PiiRules, parameters: dict, batch: int,
                             log=lambda message: None) -> SourceResult:
    """validate.validate_source on Spark: judge the changed partitions of one source chunk by chunk (verdicts
    staged on disk), then merge them into each table once, over all judged partitions, and write the tables
    (with whatever else `pending` holds).

    One merge over the union of the chunks' partitions equals DuckDB's merges chunk by chunk when no event id
    (table source: no key) has rows in two chunks of the run: the merges decide an id over all its copies in
    every partition and source, and the chunks' partitions are disjoint. When one has, both end with the same
    winning copy (the first received of all) or the same latest version, and keep every copy, but the chunk-by-
    chunk merges pass through the versions that won between chunks: they log each in core.events_removed (or
    validated.<source>_removed) with this batch, and a row that ends the run with the content it began with gets
    this batch (and, in a table source, this receipt time). One merge logs only what changed over the whole run,
    as DuckDB does when the partitions fit one chunk, so the result does not depend on the chunk size.
    """
    from pyspark.sql import functions as F

    engine = pending.engine
    suite = load_suite("events" if source.produces_events else source.name)
    print_ = fingerprint(source, suite, pii)
    todo = changed_partitions_on_spark(pending, source, print_)
    result = SourceResult(partitions=todo["partition_key"].to_list())
    if todo.is_empty():
        return result
    where = f"expectations/{suite['name']}.json"
    staging = Staging(engine, source.name)
    if source.produces_events:
        kinds = {"accepted": _EVENT_TYPES}
    else:
        changes_columns = next(iter(source_tables(source).values()))
        kinds = {"accepted": {c: t for c, t in changes_columns.items() if c not in ("row_hash", "_batch_id")}}
    counts = []
    try:
        for number, keys in enumerate(chunks(todo), start=1):
            view = engine.session().table(parsed_view(source))
            frame = _naive(pl.from_arrow(_arrow(view.filter((F.col("raw_source") == source.name) & F.col("partition_key").isin(keys)))))
            frame, tombstones, accepted, quarantine, violations = judge_chunk(frame, source, suite, parameters, where, result)
            staging.add("quarantine", quarantine, TABLES["cdp.quarantine"])
            counts.append(_counts(frame, tombstones, quarantine, source, keys))
            if source.produces_events:
                staging.add("violations", violations, TABLES[VIOLATIONS_TABLE])
                staging.add("accepted", protect_events(accepted, pii).select(*EVENT_COLUMNS, *POSITION), kinds["accepted"])
            else:  # (a table source flags no violations: it has no tracking plan)
                shape = list(kinds["accepted"])
                rows = pl.concat([protect_columns(accepted, source.name, pii).select(shape), tombstones.select(shape)])
                staging.add("accepted", rows, kinds["accepted"])
            log(result.judged(source.name, number, keys, frame, tombstones, accepted, quarantine, violations))
        keys = todo["partition_key"].to_list()
        tables = {
            "cdp.quarantine": _replaced(pending, "cdp.quarantine", staging.read("quarantine", TABLES["cdp.quarantine"]),
                                        "source", source.name, keys),
            "validated.reconciliation": _replaced(pending, "validated.reconciliation",
                                                  _spark(engine, pl.concat(counts), TABLES["validated.reconciliation"]),
                                                  "source", source.name, keys),
            "core.validated_partitions": _remembered(pending, source, keys, print_),
        }
        accepted = staging.read("accepted", kinds["accepted"])
        if source.produces_events:
            tables[VIOLATIONS_TABLE] = _replaced(pending, VIOLATIONS_TABLE, staging.read("violations", TABLES[VIOLATIONS_TABLE]),
                                                 "source", source.name, keys)
            tables.update(_merged_events(pending, accepted, source, keys, batch))
        else:
            tables.update(_merged_table(pending, accepted, source, keys, batch))
        pending.frames.update(tables)
        pending.flush()
        log(f"{source.name}: merged {len(keys)} partition(s)")
    finally:
        staging.remove()
    return result


def changed_partitions_on_spark(pending: Pending, source: SourceConfig, print_: str) -> pl.DataFrame:
    """validate.changed_partitions on Spark: (partition_key, raw_rows) to judge again, in key order."""
    from pyspark.sql import functions as F

    engine = pending.engine
    raw = f"raw.{source.name}"
    if engine.table_exists(raw):
        current = engine.table(raw).groupBy("partition_key").agg(
            F.count(F.lit(1)).alias("raw_rows"), F.max("loaded_at").alias("loaded_max"))
    else:
        current = _empty(engine, {"partition_key": "string", "raw_rows": "bigint", "loaded_max": "timestamp"})
    judged = (pending.table("core.validated_partitions").filter(F.col("raw_source") == source.name)
              .select("partition_key", F.col("raw_rows").alias("v_rows"), F.col("loaded_max").alias("v_loaded"), "fingerprint"))
    c, v = current.alias("c"), judged.alias("v")
    todo = (c.join(v, F.col("c.partition_key") == F.col("v.partition_key"), "full_outer")
            .filter(F.col("v.partition_key").isNull() | F.col("c.partition_key").isNull()
                    | (F.col("c.raw_rows") != F.col("v_rows")) | ~F.col("c.loaded_max").eqNullSafe(F.col("v_loaded"))
                    | (F.col("fingerprint") != print_))
            .select(F.coalesce(F.col("c.partition_key"), F.col("v.partition_key")).alias("partition_key"),
                    F.coalesce(F.col("c.raw_rows"), F.lit(0)).cast("bigint").alias("raw_rows"))
            .orderBy(F.col("partition_key").asc_nulls_last()))
    return pl.from_arrow(todo.toArrow()).cast({"partition_key": pl.String, "raw_rows": pl.Int64})


def _in_scope(column: str, source: str, keys: list[str]):
    from pyspark.sql import functions as F

    return (F.col(column) == source) & F.col("partition_key").isin(keys)


def _replaced(pending: Pending, table: str, rows: "DataFrame", column: str, source: str, keys: list[str]) -> "DataFrame":
    """The table without the rows of `source` in partitions `keys`, plus `rows` (validate._replace)."""
    from pyspark.sql import functions as F

    kept = pending.table(table).filter(~F.coalesce(_in_scope(column, source, keys), F.lit(False)))
    return kept.unionByName(rows)


def _remembered(pending: Pending, source: SourceConfig, keys: list[str], print_: str) -> "DataFrame":
    """core.validated_partitions with what was read of partitions `keys` now (validate._remember)."""
    from pyspark.sql import functions as F

    engine = pending.engine
    table = pending.table("core.validated_partitions")
    kept = table.filter(~F.coalesce(_in_scope("raw_source", source.name, keys), F.lit(False)))
    if not engine.table_exists(f"raw.{source.name}"):
        return kept
    read = (engine.table(f"raw.{source.name}").filter(F.col("partition_key").isin(keys)).groupBy("partition_key")
            .agg(F.count(F.lit(1)).alias("raw_rows"), F.max("loaded_at").alias("loaded_max"))
            .select(F.lit(source.name).alias("raw_source"), "partition_key", "raw_rows", "loaded_max", F.lit(print_).alias("fingerprint")))
    return kept.unionByName(_cast(read, TABLES["core.validated_partitions"]))


def _merged_events(pending: Pending, accepted: "DataFrame", source: SourceConfig, keys: list[str], batch: int) -> dict:
    """The new cdp.events, core.event_duplicates and core.events_removed (sql/merge_events.sql), `accepted` being
    the whole new content of partitions `keys`."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    new = accepted.withColumn("row_hash", _hash(EVENT_COLUMNS)).withColumn("_batch_id", F.lit(batch).cast("bigint"))
    events, duplicates = pending.table("cdp.events"), pending.table("core.event_duplicates")
    scope = F.coalesce(_in_scope("raw_source", source.name, keys), F.lit(False))
    both = events.unionByName(duplicates)
    ids = both.filter(scope).select("event_id").union(new.select("event_id")).distinct()
    candidates = both.join(ids, "event_id", "left_semi").filter(~scope).unionByName(new)
    first = Window.partitionBy("event_id").orderBy(*[F.col(c).asc_nulls_last() for c in ("received_at", *POSITION)])
    winners = candidates.withColumn("_n", F.row_number().over(first)).filter("_n = 1").drop("_n")
    held = duplicates.join(ids, "event_id", "left_anti").unionByName(
        candidates.join(winners.select(*POSITION), POSITION, "left_anti"))
    gone = events.join(ids, "event_id", "left_semi").join(winners.select("event_id", "row_hash"), ["event_id", "row_hash"], "left_anti")
    kept = events.join(gone.select("event_id"), "event_id", "left_anti")
    # Same content, another copy now winning: only the position moves.
    moved = winners.select("event_id", *[F.col(c).alias(f"_w_{c}") for c in POSITION], F.lit(True).alias("_w"))
    kept = kept.join(moved, "event_id", "left").select(
        *[F.when(F.col("_w"), F.col(f"_w_{c}")).otherwise(F.col(c)).alias(c) if c in POSITION else F.col(c) for c in EVENTS])
    inserted = winners.join(kept.select("event_id"), "event_id", "left_anti").withColumn("_batch_id", F.lit(batch).cast("bigint"))
    removed = gone.withColumn("_removed_batch_id", F.lit(batch).cast("bigint"))
    return {
        "cdp.events": kept.unionByName(inserted),
        "core.event_duplicates": held,
        "core.events_removed": pending.table("core.events_removed").unionByName(removed),
    }


def _merged_table(pending: Pending, accepted: "DataFrame", source: SourceConfig, keys: list[str], batch: int) -> dict:
    """The new validated.<source>_changes, validated.<source> and its _removed log (sql/merge_table.sql),
    `accepted` being the whole new content of partitions `keys` (accepted records and tombstones)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    tables = source_tables(source)
    names = list(tables)  # changes, current, removed
    changes_table, current_table, removed_table = names
    declared = list(source.columns)
    new = accepted.withColumn("row_hash", _hash(declared)).withColumn("_batch_id", F.lit(batch).cast("bigint"))
    key = _col(source.primary_key)
    changes, current = pending.table(changes_table), pending.table(current_table)
    in_keys = F.coalesce(F.col("partition_key").isin(keys), F.lit(False))
    touched = (changes.filter(in_keys).select(key.alias("_k")).union(new.select(key.alias("_k")))
               .filter(F.col("_k").isNotNull()).distinct())
    changes = changes.filter(~in_keys).unionByName(new)
    if source.kind == "cdc":
        order = [F.col("source_lsn").desc_nulls_last(), F.col("source_ts_ms").desc_nulls_last(),
                 F.col("file").desc(), F.col("line_no").desc()]
        live = F.col("op").isin("c", "u", "r", "d")
    else:
        # A row's versions are ordered by its own time column where it has one (a CRM row's updated_at).
        own = [_col(source.time_column).desc_nulls_last()] if source.time_column in source.columns else []
        order = [*own, F.col("received_at").desc_nulls_last(), F.col("partition_key").desc(), F.col("file").desc(),
                 F.col("line_no").desc()]
        live = F.lit(True)
    latest = (changes.join(touched, key == F.col("_k"), "left_semi").filter(live)
              .withColumn("_n", F.row_number().over(Window.partitionBy(key).orderBy(*order))).filter("_n = 1").drop("_n"))
    still = latest.filter(F.col("op") != "d") if source.kind == "cdc" else latest
    gone = (current.join(touched, key == F.col("_k"), "left_semi").alias("t")
            .join(still.select(key.alias("_lk"), F.col("row_hash").alias("_lh")).alias("l"),
                  (F.col("_lk") == _col(source.primary_key, "t")) & (F.col("_lh") == F.col("t.row_hash")), "left_anti"))
    kept = current.join(gone.select(key.alias("_gk")), key == F.col("_gk"), "left_anti")
    inserted = (still.join(kept.select(key.alias("_ck")), key == F.col("_ck"), "left_anti")
                .select(*[_col(c) for c in declared], "received_at", "row_hash").withColumn("_batch_id", F.lit(batch).cast("bigint")))
    removed = gone.withColumn("_removed_batch_id", F.lit(batch).cast("bigint"))
    return {
        changes_table: changes,
        current_table: kept.unionByName(inserted),
        removed_table: pending.table(removed_table).unionByName(removed),
    }


def _prune_change_logs(pending: Pending, sources) -> None:
    """validate.prune_change_logs on Spark: the *_removed logs every reader has read are dropped (the other logs
    of sql/prune.sql are the identity stage's and have no Spark tables of their own yet)."""
    from pyspark.sql import functions as F

    engine = pending.engine
    needed = ["core.touched_identifiers", "core.id_map_changes", "core.affected_persons", "core.segment_evaluations"]
    if not all(engine.table_exists(t) for t in needed) or not engine.table_exists("core.watermarks"):
        return
    readers = engine.session().createDataFrame([(r,) for r in REMOVED_LOG_READERS], "consumer string")
    read = (readers.join(engine.table("core.watermarks"), "consumer", "left")
            .agg(F.coalesce(F.min("batch_id"), F.lit(-1)).alias("b")).collect()[0]["b"])
    logs = ["core.events_removed"] + [f"validated.{s.name}_removed" for s in sources if not s.produces_events]
    pending.frames.update({log: pending.table(log).filter(~(F.col("_removed_batch_id") <= read))
                           for log in logs if engine.table_exists(log)})


def _new_batch(pending: Pending, stage: str, now) -> int:
    from pyspark.sql import functions as F

    engine = pending.engine
    batch = pending.table("core.batches").agg(F.coalesce(F.max("batch_id"), F.lit(0)) + 1).collect()[0][0]
    row = pl.DataFrame({"batch_id": [batch], "stage": [stage], "started_at": [now]},
                       schema={"batch_id": pl.Int64, "stage": pl.String, "started_at": pl.Datetime("us")})
    pending.frames["core.batches"] = pending.table("core.batches").unionByName(_spark(engine, row, TABLES["core.batches"]))
    return int(batch)


def validation_totals_on_spark(engine: "SparkEngine", sources: dict[str, SourceConfig]) -> dict:
    """validate.validation_totals on Spark."""
    from pyspark.sql import functions as F

    tables = ["cdp.events", "core.event_duplicates", "cdp.quarantine", VIOLATIONS_TABLE] + [
        f"validated.{s.name}" for s in sources.values() if not s.produces_events]
    counts = {t: engine.table(t).count() for t in tables}
    records = {r[0]: r[1] for r in engine.table("validated.reconciliation").groupBy("source").agg(F.sum("records")).collect()}
    violations = engine.table(VIOLATIONS_TABLE)
    flagged = {r[0]: r[1] for r in violations.groupBy("source").count().collect()}
    codes: dict[str, dict[str, int]] = {}
    for source, code, count in (violations.select("source", F.explode("violations").alias("v"))
                                .groupBy("source", F.split_part("v", F.lit(":"), F.lit(1)).alias("code")).count()
                                .orderBy("source", "code").collect()):
        codes.setdefault(source, {})[code] = count
    counts["violation_rates"] = {
        s.name: {"flagged": flagged.get(s.name, 0), "records": int(records.get(s.name) or 0),
                 "rate": round(flagged.get(s.name, 0) / records[s.name], 4) if records.get(s.name) else 0.0,
                 "by_code": codes.get(s.name, {})}
        for s in sources.values() if s.produces_events
    }
    counts["reasons"] = {r[0]: r[1] for r in (
        engine.table("cdp.quarantine").groupBy(F.split_part(F.try_element_at("reasons", F.lit(1)), F.lit(":"), F.lit(1)).alias("code"))
        .count().orderBy("code").collect())}
    return counts


# Checks (cdp_assets/events/checks.py) on Spark.

def event_id_counts_on_spark(engine: "SparkEngine") -> tuple[int, int, int]:
    from pyspark.sql import functions as F

    row = engine.table("cdp.events").agg(F.count(F.lit(1)), F.countDistinct("event_id"),
                                         F.count(F.when(F.col("event_id").isNull(), 1))).collect()[0]
    return int(row[0]), int(row[1]), int(row[2])


def reconcile_counts_on_spark(engine: "SparkEngine", sources: dict[str, SourceConfig]) -> dict:
    """(source, partition) -> (raw, accepted, quarantined) records, each counted in its own table."""
    from pyspark.sql import functions as F

    counts = {}
    for source in sources.values():
        if not engine.table_exists(f"raw.{source.name}"):
            continue
        written = ["cdp.events", "core.event_duplicates"] if source.produces_events else [f"validated.{source.name}_changes"]
        parts = [engine.table(f"raw.{source.name}").groupBy("partition_key").agg(
            F.count(F.lit(1)).alias("n"), F.lit(0).alias("a"), F.lit(0).alias("q"))]
        for table in written:
            if engine.table_exists(table):
                rows = engine.table(table)
                if source.produces_events:
                    rows = rows.filter(F.col("raw_source") == source.name)
                parts.append(rows.groupBy("partition_key").agg(F.lit(0).alias("n"), F.count(F.lit(1)).alias("a"), F.lit(0).alias("q")))
        if engine.table_exists("cdp.quarantine"):
            parts.append(engine.table("cdp.quarantine").filter(F.col("source") == source.name).groupBy("partition_key")
                         .agg(F.lit(0).alias("n"), F.lit(0).alias("a"), F.count(F.lit(1)).alias("q")))
        union = parts[0]
        for part in parts[1:]:
            union = union.unionByName(part)
        for key, raw, accepted, quarantined in union.groupBy("partition_key").agg(F.sum("n"), F.sum("a"), F.sum("q")).collect():
            counts[(source.name, key)] = (int(raw), int(accepted), int(quarantined))
    return counts


def reconciliation_rows_on_spark(engine: "SparkEngine", at_least: int) -> list[tuple]:
    from pyspark.sql import functions as F

    if not engine.table_exists("validated.reconciliation"):
        return []
    return [tuple(r) for r in engine.table("validated.reconciliation").filter(F.col("records") >= at_least)
            .select("source", "partition_key", "records", "quarantined").collect()]


# Frames between polars and Spark.

def _arrow(parsed: "DataFrame"):
    """A parse view's rows as Arrow. Whole-stage code generation is off for them: the views' expressions (a
    decoder per column and per JSON path) make a Java method beyond the JVM's 64 KB, which Spark would only find
    out after compiling it (seconds, per query), then run the same plan without it anyway."""
    conf = parsed.sparkSession.conf
    before = conf.get("spark.sql.codegen.wholeStage")
    conf.set("spark.sql.codegen.wholeStage", "false")
    try:
        return parsed.toArrow()
    finally:
        conf.set("spark.sql.codegen.wholeStage", before)


def _naive(frame: pl.DataFrame) -> pl.DataFrame:
    """Spark's times (UTC instants) as the naive UTC times DuckDB's frames hold, so the rules read them alike."""
    return frame.with_columns(pl.col(c).dt.replace_time_zone(None) for c, t in frame.schema.items()
                              if isinstance(t, pl.Datetime) and t.time_zone)


def _spark(engine: "SparkEngine", frame: pl.DataFrame, columns: dict[str, str]) -> "DataFrame":
    """A polars frame as a Spark DataFrame of exactly `columns` (name -> Spark type), naive times read as UTC."""
    frame = frame.with_columns(pl.col(c).dt.replace_time_zone("UTC") for c, t in frame.schema.items()
                               if isinstance(t, pl.Datetime) and not t.time_zone)
    if frame.is_empty():
        return _empty(engine, columns)
    return _cast(engine.frame(frame), columns)


def _cast(frame: "DataFrame", columns: dict[str, str]) -> "DataFrame":
    from pyspark.sql import functions as F

    return frame.select(*[(_col(c) if c in frame.columns else F.lit(None)).cast(t).alias(c) for c, t in columns.items()])


def _empty(engine: "SparkEngine", columns: dict[str, str]) -> "DataFrame":
    schema = ", ".join(f"`{c.replace('`', '``')}` {t}" for c, t in columns.items())
    return engine.session().createDataFrame([], schema)


def _col(name: str, alias: str | None = None):
    from pyspark.sql import functions as F

    quoted = "`" + name.replace("`", "``") + "`"
    return F.col(f"{alias}.{quoted}" if alias else quoted)


def _hash(columns: list[str]):
    from pyspark.sql import functions as F

    return F.xxhash64(*[_col(c) for c in columns]).cast(HASH)
