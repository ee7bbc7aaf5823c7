"""Incremental validation: judge only the raw partitions that changed, and merge their verdicts.

A raw partition (an hour of landed events, a day of CSV imports, a whole unpartitioned source) is judged
again, whole, when its row count or newest load differs from what validation last read of it, when it
vanished, or when the rules that judge it changed (a fingerprint of the suite, the PII rules, the source's
declaration and the parse SQL). Its records are read through the dbt parse views (`staging.parsed_*`), in
chunks of partitions so memory stays bounded, judged by the suite's rules (cdp_assets/events/rules.py) and
merged (sql/merge_*.sql): each record ends in exactly one place, and rows whose content did not change keep
their batch, so downstream models only see what really changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path

import duckdb
import polars as pl

from cdp_assets.batching import bounded_groups
from cdp_assets.config import SourceConfig
from cdp_assets.events.pii import PiiRules, protect_columns, protect_events
from cdp_assets.events.rules import apply_rules, load_suite, suite_rules, typed_property_rules
from cdp_resources.warehouse import table_exists

SQL = Path(__file__).resolve().parent / "sql"
PARSE_MACROS = [Path(__file__).resolve().parents[2] / "dbt" / "macros" / name for name in ("parse.sql", "json.sql", "debezium.sql")]
# "partition_key is one of $keys", written so that DuckDB prunes row groups by the keys' range (partitions
# arrive in key order) and never parses raw records of other partitions: `IN (SELECT unnest($keys))` made the
# parse view read every raw record of the source for each chunk (6x slower for one hour at 1M events, and
# growing with history).
IN_PARTITIONS = "partition_key BETWEEN list_min($keys) AND list_max($keys) AND list_contains($keys, partition_key)"
CHUNK_ROWS = 200_000  # raw records judged at once: bounds memory whatever the backlog
EVENT_COLUMNS = [
    "event_id", "event_type", "event_name", "anonymous_id", "user_id", "previous_id", "group_id",
    "occurred_at", "received_at", "original_timestamp", "sent_at", "source", "properties", "traits", "context",
]
POSITION = ["raw_source", "partition_key", "file", "line_no"]
QUARANTINE_SCHEMA = {
    "source": pl.String, "record": pl.String, "reasons": pl.List(pl.String),
    "received_at": pl.Datetime("us"), "file": pl.String, "line_no": pl.Int64, "partition_key": pl.String,
}
# Flagged tracking-plan violations of kept events (on_violation: flag), one row per raw record flagged.
VIOLATIONS_TABLE = "cdp.tracking_plan_violations"
VIOLATIONS_SCHEMA = {
    "source": pl.String, "event_id": pl.String, "event_type": pl.String, "event_name": pl.String,
    "violations": pl.List(pl.String), "occurred_at": pl.Datetime("us"), "received_at": pl.Datetime("us"),
    "partition_key": pl.String, "file": pl.String, "line_no": pl.Int64,
}


@cache
def sql_statements(name: str) -> list[str]:
    """The statements of sql/<name>.sql (`;`-separated, comments kept out)."""
    text = "\n".join(line for line in (SQL / f"{name}.sql").read_text().splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in text.split(";") if s.strip()]


def run_sql(con: duckdb.DuckDBPyConnection, name: str, params: dict | None = None, **names: str) -> None:
    for statement in sql_statements(name):
        statement = statement.format(**names) if names else statement
        used = {k: v for k, v in (params or {}).items() if f"${k}" in statement}
        con.execute(statement, used or None)


# Declared column types (config/sources.yaml) as stored: SQL type, and the polars type `typed` is read as.
COLUMN_TYPES = {
    "string": ("VARCHAR", pl.String), "number": ("DOUBLE", pl.Float64), "boolean": ("BOOLEAN", pl.Boolean),
    "list": ("VARCHAR[]", pl.List(pl.String)), "timestamp": ("TIMESTAMP", pl.String),
}


def parsed_view(source: SourceConfig) -> str:
    return "staging.parsed_events" if source.produces_events else "staging.parsed_records"


def unpack_typed(frame: pl.DataFrame, source: SourceConfig) -> pl.DataFrame:
    """A table source's parsed rows with its declared columns unpacked from `typed` (the parse view's JSON)."""
    schema = {name: COLUMN_TYPES[kind][1] for name, kind in source.columns.items()}
    typed = frame["typed"].str.json_decode(pl.Struct(schema)).struct.unnest()
    times = [pl.col(c).str.to_datetime("%Y-%m-%d %H:%M:%S%.f", strict=False) for c, k in source.columns.items() if k == "timestamp"]
    return pl.concat([frame.drop("typed"), typed.with_columns(times)], how="horizontal")


def changes_table(source: SourceConfig) -> str:
    return f'validated."{source.name}_changes"'


@dataclass
class SourceResult:
    """What one run judged of one source."""

    partitions: list[str] = field(default_factory=list)
    records: int = 0
    accepted: int = 0
    quarantined: int = 0
    flagged: int = 0  # kept with tracking-plan violations
    tombstones: int = 0
    sample: pl.DataFrame | None = None  # the first chunk's parsed records, for Great Expectations' suite result
    quarantine_sample: pl.DataFrame | None = None

    def judged(self, source: str, number: int, keys: list[str], frame: pl.DataFrame, tombstones: pl.DataFrame,
               accepted: pl.DataFrame, quarantine: pl.DataFrame, violations: pl.DataFrame) -> str:
        """Count the verdicts of chunk `number` (partitions `keys`); the progress line to log."""
        self.records += len(frame) + len(tombstones)
        self.accepted += len(accepted) + len(tombstones)
        self.quarantined += len(quarantine)
        self.flagged += len(violations)
        self.tombstones += len(tombstones)
        return (f"{source}: judged {len(keys)} partition(s) ({number}), {self.records} records so far, "
                f"{self.quarantined} quarantined")


def fingerprint(source: SourceConfig, suite: dict, pii: PiiRules) -> str:
    """What judging a record of `source` depends on besides the record itself."""
    document = {
        "source": repr(source),
        "suite": suite,
        "pii": [pii.events if source.produces_events else pii.sources.get(source.name, {}), pii.salt_env],
        "parse": [p.read_text() for p in PARSE_MACROS],
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:16]


def changed_partitions(con: duckdb.DuckDBPyConnection, source: SourceConfig, print_: str) -> pl.DataFrame:
    """(partition_key, raw_rows) of every partition to judge again: changed, vanished or judged under other rules."""
    raw = f'raw."{source.name}"'
    current = (
        f"SELECT partition_key, count(*) AS raw_rows, max(loaded_at) AS loaded_max FROM {raw} GROUP BY 1"
        if table_exists(con, raw.replace('"', "")) else
        "SELECT NULL::VARCHAR AS partition_key, 0::BIGINT AS raw_rows, NULL::TIMESTAMP AS loaded_max WHERE false"
    )
    return con.execute(
        f"""SELECT coalesce(c.partition_key, v.partition_key) AS partition_key, coalesce(c.raw_rows, 0) AS raw_rows
            FROM ({current}) c
            FULL OUTER JOIN (SELECT * FROM core.validated_partitions WHERE raw_source = $source) v USING (partition_key)
            WHERE v.partition_key IS NULL OR c.partition_key IS NULL OR c.raw_rows <> v.raw_rows
               OR c.loaded_max IS DISTINCT FROM v.loaded_max OR v.fingerprint <> $fingerprint
            ORDER BY 1""",
        {"source": source.name, "fingerprint": print_},
    ).pl()


def chunks(partitions: pl.DataFrame, limit: int | None = None) -> Iterator[list[str]]:
    """Partition keys in groups of at most `limit` (default CHUNK_ROWS, read when called, so a test can lower it)
    raw rows (a bigger partition is a chunk of its own)."""
    limit = limit or CHUNK_ROWS
    for group in bounded_groups(partitions.iter_rows(), lambda row: row[1], limit):
        yield [key for key, _ in group]


def without_tombstones(changes: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Debezium tombstones (a `null` line or a null payload) carry nothing to apply: the delete before them
    already ended the row. They are kept apart, not judged, so they never reach the quarantine."""
    tombstone = (pl.col("op") == "t").fill_null(False) | (pl.col("record").str.strip_chars() == "null")
    return changes.filter(~tombstone), changes.filter(tombstone).with_columns(op=pl.lit("t"))


def judge_chunk(frame: pl.DataFrame, source: SourceConfig, suite: dict, parameters: dict, where: str, result):
    """One chunk of parsed records judged by the source's suite, on either engine: (records, tombstones,
    accepted, quarantine, violations); the first non-empty chunk is kept as the run's sample in `result`."""
    if not source.produces_events:
        frame = unpack_typed(frame, source)
    tombstones = frame.clear()
    if source.kind == "cdc":
        frame, tombstones = without_tombstones(frame)
    rules = suite_rules(suite, parameters, frame.columns, where)
    if source.produces_events:
        rules += typed_property_rules(suite, where)
    accepted, quarantine, violations = split_accepted(frame, rules, source.name)
    if result.sample is None and len(frame):
        result.sample = frame
        result.quarantine_sample = quarantine.head(10)
    return frame, tombstones, accepted, quarantine, violations


def split_accepted(frame: pl.DataFrame, rules, source: str) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(accepted rows, quarantine rows, flagged violations of accepted rows) of a parsed frame judged by
    `rules`. A quarantined record's reasons list its flagged violations too, after the blocking ones."""
    judged = apply_rules(frame, rules)
    rejected = judged.filter(pl.col("reasons").list.len() > 0)
    quarantine = rejected.select(
        pl.lit(source).alias("source"), "record", pl.concat_list("reasons", "violations").alias("reasons"),
        "received_at", "file", "line_no", "partition_key",
    ).cast(QUARANTINE_SCHEMA)
    accepted = judged.filter(pl.col("reasons").list.len() == 0)
    flagged = accepted.filter(pl.col("violations").list.len() > 0)
    violations = flagged.select(
        pl.lit(source).alias("source"),
        *[pl.col(c) if c in flagged.columns else pl.lit(None).alias(c) for c in ("event_id", "event_type", "event_name", "occurred_at")],
        "violations", "received_at", "partition_key", "file", "line_no",
    ).cast(VIOLATIONS_SCHEMA)
    return accepted, quarantine, violations


@dataclass
class ValidationRun:
    """What one validation run did: its batch, per source what was judged, the tables' totals and the
    reconciliation rows (source, partition_key, records, accepted, quarantined)."""

    batch: int
    results: dict[str, SourceResult]
    totals: dict
    reconciliation: list[tuple]
    parse_views_rebuilt: bool = False


def validate_sources_in(engine, sources: dict[str, SourceConfig], pii: PiiRules, parameters: dict, now: datetime,
                        log=lambda message: None) -> ValidationRun:
    """Judge the changed partitions of every source on the warehouse's engine (`WarehouseResource.engine()`):
    the one place validation differs by engine."""
    if engine.name == "spark":
        from cdp_assets.events.spark import validate_sources_on_spark

        return validate_sources_on_spark(engine, sources, pii, parameters, now, log)
    warehouse = engine.resource
    with warehouse.lock():
        rebuilt = ensure_parse_views(warehouse, sources.values())
    results = {}
    with warehouse.connect() as con:
        batch = start_validation(con, now, sources.values())
        for source in sources.values():
            results[source.name] = validate_source(con, source, pii, parameters, batch, log=log)
        totals = validation_totals(con, sources)
        reconciliation = con.execute(
            "SELECT source, partition_key, records, accepted, quarantined FROM validated.reconciliation"
        ).fetchall()
    return ValidationRun(batch, results, totals, reconciliation, rebuilt)


def validation_totals(con: duckdb.DuckDBPyConnection, sources: dict[str, SourceConfig]) -> dict:
    """Rows of the validated tables, violation rates per events source and quarantine reasons by code."""
    tables = ["cdp.events", "core.event_duplicates", "cdp.quarantine", "cdp.tracking_plan_violations"] + [
        f"validated.{s.name}" for s in sources.values() if not s.produces_events
    ]
    counts = {t: con.execute(f'SELECT count(*) FROM {t.split(".")[0]}."{t.split(".")[1]}"').fetchone()[0] for t in tables}
    # Per events source: the share of its raw records kept with a violation, and the violations by code.
    records = dict(con.execute("SELECT source, sum(records) FROM validated.reconciliation GROUP BY 1").fetchall())
    flagged = dict(con.execute("SELECT source, count(*) FROM cdp.tracking_plan_violations GROUP BY 1").fetchall())
    codes: dict[str, dict[str, int]] = {}
    for source, code, count in con.execute(
        "SELECT source, split_part(v, ':', 1), count(*) FROM (SELECT source, unnest(violations) AS v "
        "FROM cdp.tracking_plan_violations) GROUP BY ALL ORDER BY ALL"
    ).fetchall():
        codes.setdefault(source, {})[code] = count
    counts["violation_rates"] = {
        s.name: {"flagged": flagged.get(s.name, 0), "records": int(records.get(s.name) or 0),
                 "rate": round(flagged.get(s.name, 0) / records[s.name], 4) if records.get(s.name) else 0.0,
                 "by_code": codes.get(s.name, {})}
        for s in sources.values() if s.produces_events
    }
    counts["reasons"] = dict(con.execute(
        "SELECT split_part(reasons[1], ':', 1) AS code, count(*) FROM cdp.quarantine GROUP BY 1 ORDER BY 1"
    ).fetchall())
    return counts


def validate_source(
    con: duckdb.DuckDBPyConnection, source: SourceConfig, pii: PiiRules, parameters: dict, batch: int,
    log=lambda message: None,
) -> SourceResult:
    """Judge the changed partitions of one source and merge the verdicts; returns what was judged."""
    suite = load_suite("events" if source.produces_events else source.name)
    print_ = fingerprint(source, suite, pii)
    _ensure_tables(con, source)
    todo = changed_partitions(con, source, print_)
    result = SourceResult(partitions=todo["partition_key"].to_list())
    where = f"expectations/{suite['name']}.json"
    for number, keys in enumerate(chunks(todo), start=1):
        frame = con.execute(
            f"SELECT * FROM {parsed_view(source)} WHERE raw_source = $source AND {IN_PARTITIONS}",
            {"source": source.name, "keys": keys},
        ).pl()
        frame, tombstones, accepted, quarantine, violations = judge_chunk(frame, source, suite, parameters, where, result)
        con.execute("BEGIN")
        _replace(con, "cdp.quarantine", quarantine, "source", source.name, keys)
        _replace(con, VIOLATIONS_TABLE, violations, "source", source.name, keys)
        if source.produces_events:
            _merge_events(con, protect_events(accepted, pii), source, keys, batch)
        else:
            _merge_table(con, protect_columns(accepted, source.name, pii), tombstones, source, keys, batch)
        _replace(con, "validated.reconciliation", _counts(frame, tombstones, quarantine, source, keys), "source", source.name, keys)
        _remember(con, source, keys, print_)
        con.execute("COMMIT")
        log(result.judged(source.name, number, keys, frame, tombstones, accepted, quarantine, violations))
    return result


def ensure_event_tables(con: duckdb.DuckDBPyConnection) -> None:
    """cdp.events and its bookkeeping, shaped after the events parse view; they exist even when no events
    source is configured, so every model downstream can read them."""
    run_sql(con, "state")
    columns = ", ".join([*EVENT_COLUMNS, *POSITION])
    for table, extra in (("cdp.events", ""), ("core.event_duplicates", ""), ("core.events_removed", ", 0::BIGINT AS _removed_batch_id")):
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT {columns}, 0::UBIGINT AS row_hash, "
                    f"0::BIGINT AS _batch_id{extra} FROM staging.parsed_events WHERE false")


def _ensure_tables(con: duckdb.DuckDBPyConnection, source: SourceConfig) -> None:
    """The validated tables of `source` (typed as configured)."""
    ensure_event_tables(con)
    if source.produces_events:
        return
    declared = ", ".join(f'"{c}" {COLUMN_TYPES[kind][0]}' for c, kind in source.columns.items())
    cdc = ", op VARCHAR, source_lsn BIGINT, source_ts_ms BIGINT" if source.kind == "cdc" else ""
    con.execute(f"CREATE TABLE IF NOT EXISTS {changes_table(source)} ({declared}, received_at TIMESTAMP{cdc}, "
                "partition_key VARCHAR, file VARCHAR, line_no BIGINT, row_hash UBIGINT, _batch_id BIGINT)")
    for table, extra in ((f'validated."{source.name}"', ""), (f'validated."{source.name}_removed"', ", _removed_batch_id BIGINT")):
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({declared}, received_at TIMESTAMP, row_hash UBIGINT, _batch_id BIGINT{extra})")


def _replace(con, table: str, frame: pl.DataFrame, column: str, source: str, keys: list[str]) -> None:
    con.execute(f"DELETE FROM {table} WHERE {column} = $source AND {IN_PARTITIONS}",
                {"source": source, "keys": keys})
    if len(frame):
        con.register("_rows", frame)
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _rows")
        con.unregister("_rows")


def _merge_events(con, accepted: pl.DataFrame, source: SourceConfig, keys: list[str], batch: int) -> None:
    rows = accepted.select(*EVENT_COLUMNS, *POSITION)
    con.register("_frame", rows)
    hashed = ", ".join(c for c in EVENT_COLUMNS)
    con.execute(f"CREATE OR REPLACE TEMP TABLE _accepted AS SELECT *, hash({hashed}) AS row_hash FROM _frame")
    con.unregister("_frame")
    run_sql(con, "merge_events", {"source": source.name, "partitions": keys, "batch": batch})
    con.execute("DROP TABLE _accepted")


def _merge_table(con, accepted: pl.DataFrame, tombstones: pl.DataFrame, source: SourceConfig, keys: list[str], batch: int) -> None:
    declared = list(source.columns)
    cdc = ["op", "source_lsn", "source_ts_ms"] if source.kind == "cdc" else []
    rows = pl.concat([accepted.select(*declared, "received_at", *cdc, "partition_key", "file", "line_no"),
                      tombstones.select(*declared, "received_at", *cdc, "partition_key", "file", "line_no")])
    con.register("_frame", rows)
    quoted = [f'"{c}"' for c in declared]
    con.execute(f"CREATE OR REPLACE TEMP TABLE _accepted AS SELECT *, hash({', '.join(quoted)}) AS row_hash FROM _frame")
    con.unregister("_frame")
    key = f'"{source.primary_key}"'
    if source.kind == "cdc":
        order = "source_lsn DESC NULLS LAST, source_ts_ms DESC NULLS LAST, file DESC, line_no DESC"
        live, ended, ended_insert = "op IN ('c', 'u', 'r', 'd')", "AND l.op <> 'd'", "AND l.op <> 'd'"
    else:
        # A row's versions are ordered by its own time column where it has one (a CRM row's updated_at).
        own = f'"{source.time_column}" DESC NULLS LAST, ' if source.time_column in source.columns else ""
        order = f"{own}received_at DESC NULLS LAST, partition_key DESC, file DESC, line_no DESC"
        live, ended, ended_insert = "true", "", ""
    run_sql(
        con, "merge_table", {"partitions": keys, "batch": batch},
        key=key, order=order, live=live, ended=ended, ended_insert=ended_insert,
        changes=changes_table(source), current=f'validated."{source.name}"', removed=f'validated."{source.name}_removed"',
        columns=", ".join([*(f"l.{c}" for c in quoted), "l.received_at", "l.row_hash"]),
    )
    con.execute("DROP TABLE _accepted")


def _counts(frame: pl.DataFrame, tombstones: pl.DataFrame, quarantine: pl.DataFrame, source: SourceConfig, keys: list[str]) -> pl.DataFrame:
    """Per judged partition: records read, accepted (tombstones count as accepted), quarantined."""
    read = pl.concat([frame.select("partition_key"), tombstones.select("partition_key")]).group_by("partition_key").len("records")
    rejected = quarantine.group_by("partition_key").len("quarantined")
    return (
        pl.DataFrame({"partition_key": keys}, schema={"partition_key": pl.String})
        .join(read, on="partition_key", how="left").join(rejected, on="partition_key", how="left")
        .select(
            pl.lit(source.name).alias("source"), "partition_key",
            pl.col("records").fill_null(0).cast(pl.Int64),
            (pl.col("records").fill_null(0) - pl.col("quarantined").fill_null(0)).cast(pl.Int64).alias("accepted"),
            pl.col("quarantined").fill_null(0).cast(pl.Int64),
            pl.lit(source.kind).alias("kind"),
        )
        .filter(pl.col("records") > 0)
    )


def _remember(con, source: SourceConfig, keys: list[str], print_: str) -> None:
    params = {"source": source.name, "keys": keys, "fingerprint": print_}
    con.execute(f"DELETE FROM core.validated_partitions WHERE raw_source = $source AND {IN_PARTITIONS}",
                {"source": source.name, "keys": keys})
    if table_exists(con, f"raw.{source.name}"):
        con.execute(
            f"""INSERT INTO core.validated_partitions
                SELECT $source, partition_key, count(*), max(loaded_at), $fingerprint FROM raw."{source.name}"
                WHERE {IN_PARTITIONS} GROUP BY partition_key""",
            params,
        )


PARSE_MODELS = Path(__file__).resolve().parents[2] / "dbt" / "models" / "staging" / "parsed"
PARSE_VIEWS_DIGEST_KEY = "staging.parse_views"


def parse_views_digest(source_vars: dict) -> str:
    """What the parse views are built from: the sources' declarations (dbt vars) and the parse SQL."""
    digest = hashlib.sha256(json.dumps(source_vars, sort_keys=True, default=str).encode())
    for path in [*sorted(PARSE_MODELS.glob("*.sql")), *PARSE_MACROS]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def ensure_parse_views(warehouse, sources) -> bool:
    """Build the dbt parse views when one is missing (a warehouse where dbt never ran, a source just added) or
    what they are built from changed (a source's declared columns, the parse SQL); otherwise leave them: a
    refresh does not pay a dbt command for views that are already right. True when they were (re)built. The
    caller holds the warehouse lock (dbt opens the file itself)."""
    from cdp_assets.dbt.vars import dbt_vars

    vars_ = dbt_vars()
    digest = parse_views_digest(vars_["sources"])
    with warehouse.connect() as con:
        missing = [s for s in sources if not table_exists(con, parsed_view(s).replace('"', ""))]
        built = table_exists(con, "core.model_digests") and con.execute(
            "SELECT digest FROM core.model_digests WHERE model = ?", [PARSE_VIEWS_DIGEST_KEY]
        ).fetchone()
    if not missing and built and built[0] == digest:
        return False
    from cdp_assets.dbt.project import run_dbt

    run_dbt(["run", "--select", "path:models/staging/parsed"], vars_, warehouse)
    with warehouse.connect() as con:  # dbt's on-run-start created core.model_digests
        con.execute("INSERT OR REPLACE INTO core.model_digests VALUES (?, ?)", [PARSE_VIEWS_DIGEST_KEY, digest])
    return True


# The dbt models that read the *_removed logs of validated tables (dbt/macros/incremental.sql).
REMOVED_LOG_READERS = ["identifier_sightings", "touched_identifiers", "trait_observations", "affected_persons"]


def start_validation(con: duckdb.DuckDBPyConnection, now: datetime, sources=()) -> int:
    """The batch of this validation run, its tables ready and the change logs every reader has read dropped."""
    ensure_event_tables(con)
    prune_change_logs(con, sources)
    return new_batch(con, "validation", now)


def prune_change_logs(con: duckdb.DuckDBPyConnection, sources) -> None:
    needed = ["core.touched_identifiers", "core.id_map_changes", "core.affected_persons", "core.segment_evaluations"]
    if not all(table_exists(con, t) for t in needed):
        return  # before the first whole refresh nothing has been read yet
    run_sql(con, "prune")
    logs = ["core.events_removed"] + [f'validated."{s.name}_removed"' for s in sources if not s.produces_events]
    for log in logs:
        if table_exists(con, log.replace('"', "")):
            run_sql(con, "prune_removed", {"readers": REMOVED_LOG_READERS}, log=log)


def new_batch(con: duckdb.DuckDBPyConnection, stage: str, now: datetime) -> int:
    run_sql(con, "state")
    batch = con.execute("SELECT coalesce(max(batch_id), 0) + 1 FROM core.batches").fetchone()[0]
    con.execute("INSERT INTO core.batches VALUES (?, ?, ?)", [batch, stage, now])
    return batch
