"""Erasure on Spark (`CDP_ENGINE=spark`): the person out of every Parquet table of the Spark warehouse, and
out of the files and the online store as on DuckDB.

Parquet has no DELETE: every table holding the person's ids or identifiers is written again without their
rows and swapped in (`engine.replace_tables`, all of them in one swap, under the warehouse's writer lock).
The new directories hold no byte of them and the old ones are removed, so nothing is left to compact
afterwards (DuckDB rewrites its file for that). The rules are erase.py's, not repeated here: which tables
(all but `KEEP`) and columns (`erasure_columns`, Spark types named as DuckDB names them), which rows are the
person's (a person-id column holds one of their ids, or a text value, or a quoted string inside one, is one
of their spellings: the same tests as the DuckDB DELETE, as Spark column expressions), and how mentions in
other rows are scrubbed (`scrubbed_values`, in Python on the driver, over the few rows that mention them).
Suppressions, deletion notices and the audit row go to the same tables, with the same columns.

The access export (`cdp export`) reads the Spark tables here (`SparkPersonReads`) for erase.py's `person_document`.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from functools import reduce
from pathlib import Path

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cdp_assets.identity.rules import IdentityRules
from cdp_assets.privacy.erase import (
    KEEP,
    _erase_online_store,
    audit_row,
    deletion_notice_rows,
    erase_files,
    erasure_columns,
    lowered_spellings,
    normalized_identifier,
    scrubbed_values,
    suppression_rows,
)
from cdp_assets.privacy.suppression import KnownValues, identifier_hash
from cdp_assets.profiles.spark import VIEW_MODELS, dbt_views, python_rows
from cdp_assets.segments.spark import duckdb_type_name
from cdp_resources.settings import warehouse_path

SUPPRESSIONS = "identifier_type string, identifier_hash string, requested_at timestamp"
AUDIT = ("request_id string, action string, requested_at timestamp, done_at timestamp, persons int, identifiers int, "
         "rows_deleted string, file_records_removed int, files_rewritten int, notices_enqueued int, values_scrubbed string")
LEDGER = ("destination string, idempotency_key string, person_id string, item_kind string, payload string, "
          "ordered_at timestamp, status string, attempts int, last_error string, enqueued_at timestamp, sent_at timestamp")


class SparkErasure:
    """The erasure's steps on the Spark warehouse (cdp_assets/privacy/jobs.py runs them)."""

    def __init__(self, engine):
        self.engine = engine

    def lock(self):
        return self.engine.lock()

    def erase(self, root: Path, request: dict, rules: IdentityRules, salt: str, destinations) -> dict:
        return erase_on_spark(self.engine, root, request, rules, salt, destinations)

    def compact(self, log) -> None:
        log("Spark tables holding erased rows were written anew and the old files removed: nothing to compact")


def erase_on_spark(engine, data_dir: Path, request: dict, rules: IdentityRules, salt: str, destinations=()) -> dict:
    """`erase.erase` on the Spark warehouse: one request processed; the audit row it wrote is returned."""
    persons, identifiers = person_identifiers_on_spark(engine, request["type"], request["value"], rules)
    _append_new(engine, "cdp.suppressions", suppression_rows(identifiers, salt, request), SUPPRESSIONS,
                ["identifier_type", "identifier_hash"])
    spellings = _spellings(engine, identifiers)
    notify = _destinations_holding(engine, persons, destinations)
    erased = KnownValues(spellings | persons)
    rows_deleted, values_scrubbed = erase_tables(engine, persons, erased)
    removed, rewritten, scrubbed = erase_files(data_dir, erased, _warehouse_files(engine))
    if scrubbed:
        values_scrubbed["files"] = scrubbed
    rows_deleted |= _erase_online_store(data_dir, persons, identifiers, erased, [identifier_hash(salt, v) for _, v in identifiers])
    notices = _deletion_notices(engine, persons, notify)
    audit = audit_row(request, persons, identifiers, rows_deleted, removed, rewritten, notices, values_scrubbed)
    row = [*list(audit.values())[:6], json.dumps(rows_deleted), removed, rewritten, notices, json.dumps(values_scrubbed)]
    row[2:4] = [datetime.fromisoformat(row[2]), datetime.fromisoformat(row[3])]
    engine.append("cdp.privacy_audit", _frame(engine, "cdp.privacy_audit", [tuple(row)], AUDIT))
    return audit


def person_identifiers_on_spark(engine, identifier_type: str, value: str, rules: IdentityRules
                                ) -> tuple[set[str], set[tuple[str, str]]]:
    """`erase.person_identifiers` on the Spark tables."""
    normalized = normalized_identifier(identifier_type, value, rules)
    identifiers = {(identifier_type, normalized)}
    if not engine.table_exists("cdp.id_map"):
        return set(), identifiers
    id_map = engine.table("cdp.id_map")
    holder = (F.col("identifier_type") == identifier_type) & (F.col("identifier_value") == normalized)
    persons = {r[0] for r in id_map.where(holder).select("person_id").collect()}
    if persons:
        identifiers |= {(r[0], r[1]) for r in id_map.where(F.col("person_id").isin(sorted(persons)))
                        .select("identifier_type", "identifier_value").collect()}
    return persons, identifiers


class SparkPersonReads:
    """What the access export (`erase.person_document`) reads, in the Spark tables (`erase.PersonReads`), as
    DuckDB gives the same rows. core.person_events and core.person_purchases are dbt's views, created in this
    session from dbt's SQL for Spark (`profiles.spark.dbt_views`) once the identity stage's tables they read exist
    (on DuckDB, dbt builds them with those tables)."""

    def __init__(self, engine):
        self.engine = engine
        self._views: dict[str, DataFrame] | None = None

    def person_identifiers(self, identifier_type: str, value: str, rules: IdentityRules):
        return person_identifiers_on_spark(self.engine, identifier_type, value, rules)

    def rows(self, table: str, persons: set[str]) -> list[dict]:
        if table in VIEW_MODELS:
            frame = self._view(table)
        else:
            frame = self.engine.table(table) if self.engine.table_exists(table) else None
        return [] if frame is None else python_rows(frame.where(F.col("person_id").isin(sorted(persons))))

    def spellings(self, identifiers: set[tuple[str, str]]) -> set[str]:
        return _spellings(self.engine, identifiers)

    def quarantined(self) -> list[dict]:
        if not self.engine.table_exists("cdp.quarantine"):
            return []
        return python_rows(self.engine.table("cdp.quarantine").select("source", "record", "reasons", "received_at"))

    def _view(self, relation: str) -> DataFrame | None:
        if not all(self.engine.table_exists(t) for t in ("cdp.events", "cdp.id_map", "core.identifier_lookup")):
            return None
        if self._views is None:  # one dbt compile for all of them
            self._views = dbt_views(self.engine, list(VIEW_MODELS))
        return self._views[relation]


def _spellings(engine, identifiers: set[tuple[str, str]]) -> set[str]:
    """`erase._spellings`: every raw spelling of the identifiers seen, lower-cased."""
    values = {v for _, v in identifiers}
    if engine.table_exists("core.identifier_lookup"):
        key = F.concat(F.col("identifier_type"), F.lit(":"), F.col("identifier_value"))
        values |= {r[0] for r in engine.table("core.identifier_lookup")
                   .where(key.isin(sorted(f"{t}:{v}" for t, v in identifiers))).select("raw_value").collect() if r[0]}
    return lowered_spellings(values)


def _destinations_holding(engine, persons: set[str], destinations) -> list[str]:
    """`erase._destinations_holding`: the HTTP destinations that were sent something about these persons."""
    http = [d.name for d in destinations if d.kind == "http"]
    if not http or not persons or not engine.table_exists("cdp.deliveries"):
        return []
    sent = engine.table("cdp.deliveries").where(
        (F.col("status") == "sent") & F.col("person_id").isin(sorted(persons)) & F.col("destination").isin(http))
    return sorted({r[0] for r in sent.select("destination").distinct().collect()})


def _deletion_notices(engine, persons: set[str], destinations: list[str]) -> int:
    """`erase._deletion_notices`: a `person_deleted` item per destination and person in cdp.deliveries."""
    if not destinations or not persons:
        return 0
    rows = deletion_notice_rows(persons, destinations)
    _append_new(engine, "cdp.deliveries", rows, LEDGER, ["destination", "idempotency_key"])
    return len(rows)


def warehouse_tables(engine) -> list[str]:
    """Every table of the Spark warehouse (`<schema>.db/<table>/` holding Parquet files), by schema and name."""
    tables = []
    for schema_dir in sorted(engine.warehouse_dir.glob("*.db")):
        schema = schema_dir.name.removesuffix(".db")
        for table_dir in sorted(p for p in schema_dir.iterdir() if p.is_dir()):
            table = f"{schema}.{table_dir.name}"
            if schema.isidentifier() and table_dir.name.isidentifier() and any(table_dir.glob("*.parquet")):
                tables.append(table)
    return tables


def erase_tables(engine, persons: set[str], erased: KnownValues) -> tuple[dict[str, int], dict[str, int]]:
    """`erase._erase_rows` on every Spark table: (rows deleted, values scrubbed) per table. Each table that
    changes is written again without the person's rows, with the mentions in other rows scrubbed; all of
    them are swapped in together."""
    known = sorted(erased.values)
    tests = {}  # table -> (frame, text columns, "is theirs", "mentions them")
    for table in warehouse_tables(engine):
        if table in KEEP:
            continue
        frame = engine.table(table)
        person_columns, texts = erasure_columns([(f.name, duckdb_type_name(f.dataType)) for f in frame.schema.fields])
        if not texts and not (person_columns and persons):
            continue
        theirs = _any([_col(c).isin(sorted(persons)) for c in (person_columns if persons else ())]
                      + [test for c, _ in texts for test in _holds_spelling(_col(c).cast("string"), known)])
        mention = _any([F.lower(_col(c).cast("string")).contains(needle) for c, _ in texts for needle in erased.mentioned]) \
            if erased.mentioned else F.lit(False)
        tests[table] = frame, texts, theirs, mention
    if not tests:
        return {}, {}
    # Which tables hold them: one job over every table (a job per table costs seconds each on a cluster).
    counts = reduce(DataFrame.unionByName, [
        frame.agg(F.lit(table).alias("table"), F.count_if(theirs).alias("rows"), F.count_if(~theirs & mention).alias("mentioning"))
        for table, (frame, _, theirs, mention) in tests.items()]).collect()
    found = {r["table"]: (r["rows"], r["mentioning"]) for r in counts if r["rows"] or r["mentioning"]}
    deleted, scrubbed, frames = {}, {}, {}
    for table in [t for t in tests if t in found]:  # in the tables' order, as the audit lists them on DuckDB
        (frame, texts, theirs, mention), (rows, mentioning) = tests[table], found[table]
        if rows:
            deleted[table] = rows
        kept = frame.where(~theirs)
        if mentioning:
            clean, values, gone = _scrubbed_rows(kept.where(mention), texts, erased)
            kept = kept.where(~mention).unionByName(engine.session().createDataFrame(clean, frame.schema))
            if gone:
                deleted[table] = deleted.get(table, 0) + gone
            if values:
                scrubbed[table] = values
        frames[table] = kept
    if frames:
        engine.replace_tables(frames)
    return deleted, scrubbed


def _col(name: str) -> Column:
    return F.col(f"`{name}`")


def _any(tests: list[Column]) -> Column:
    """True when any test is (NULL counts as false, as a DuckDB WHERE reads it)."""
    return F.coalesce(reduce(lambda a, b: a | b, tests), F.lit(False)) if tests else F.lit(False)


def _holds_spelling(text: Column, known: list[str]) -> list[Column]:
    """The DuckDB DELETE's two tests of a text value: it is a spelling, or a quoted string inside it is."""
    if not known:
        return []
    spellings = F.array(*[F.lit(v) for v in known])
    quoted = F.transform(F.regexp_extract_all(text, F.lit('"([^"]*)"'), 1), lambda x: F.lower(F.trim(x)))
    return [F.lower(F.trim(text)).isin(known), F.arrays_overlap(quoted, spellings)]


def _scrubbed_rows(mentioning: DataFrame, texts: list[tuple[str, str]], erased: KnownValues) -> tuple[list[tuple], int, int]:
    """(the rows with mentions scrubbed, values scrubbed, rows deleted): `scrubbed_values` on each row."""
    schema = mentioning.schema
    clean, values, gone = [], 0, 0
    for row in mentioning.toArrow().to_pylist():
        updates = scrubbed_values(texts, [row[c] for c, _ in texts], erased)
        if updates is None:
            gone += 1
            continue
        row.update(updates)
        values += len(updates)
        clean.append(tuple(_python(row[f.name], f.dataType) for f in schema.fields))
    return clean, values, gone


def _python(value, data_type):
    """An Arrow row's value as createDataFrame takes it back (maps arrive as lists of pairs)."""
    if value is None:
        return None
    if isinstance(data_type, T.MapType):
        return {k: _python(v, data_type.valueType) for k, v in value}
    if isinstance(data_type, T.ArrayType):
        return [_python(v, data_type.elementType) for v in value]
    if isinstance(data_type, T.StructType):
        return {f.name: _python(value.get(f.name), f.dataType) for f in data_type.fields}
    return value


def _warehouse_files(engine):
    """The files the file erasure leaves alone: the tables' own (erased above) and the warehouse's lock, and the
    DuckDB file of the other engine, which a Spark run never opens. Other files under the warehouse (what a
    crashed writer left: `<table>--writing-...` directories) are erased as files, so nothing is left behind."""
    warehouse = engine.warehouse_dir.resolve()
    lock = warehouse.with_name(warehouse.name + ".lock")
    duckdb_file = warehouse_path().resolve()

    def is_warehouse(path: Path) -> bool:
        path = path.resolve()
        if path.is_relative_to(warehouse):
            parts = path.relative_to(warehouse).parts
            return len(parts) > 2 and parts[0].endswith(".db") and parts[0][:-3].isidentifier() and parts[1].isidentifier()
        return path == lock or (path.parent == duckdb_file.parent and path.name.startswith(duckdb_file.name))
    return is_warehouse


def _frame(engine, table: str, rows: list[tuple], ddl: str) -> DataFrame:
    """Rows as a frame of the table's columns (its own types when it exists; naive times read as UTC)."""
    rows = [tuple(v.replace(tzinfo=timezone.utc) if isinstance(v, datetime) and v.tzinfo is None else v for v in row)
            for row in rows]
    frame = engine.session().createDataFrame(rows, ddl)
    if engine.table_exists(table):
        frame = frame.select(*[_col(f.name).cast(f.dataType).alias(f.name) for f in engine.table(table).schema.fields])
    return frame


def _append_new(engine, table: str, rows: list[tuple], ddl: str, key: list[str]) -> None:
    """Append the rows whose key the table does not hold yet (DuckDB's ON CONFLICT DO NOTHING)."""
    if not rows:
        return
    frame = _frame(engine, table, rows, ddl)
    if engine.table_exists(table):  # computed before the append adds files to the table it reads
        frame = frame.join(engine.table(table).select(*key), key, "left_anti").localCheckpoint()
    engine.append(table, frame)
