"""Segments on Spark: the catalog a rule is checked against, read from the Spark warehouse, and a compiled
rule's members (`compile_segment(..., dialect="spark")`, run with the rule's bound parameters).

The catalog says what `catalog_from_warehouse` says on DuckDB for the same tables: profile columns with
DuckDB's type names (the compiler's types are written in them), event property types from the JSON of the
`sample_per_event` most recent events of each name. The property sample is classified on the driver in
Python (a few thousand small JSON objects at most): in Spark 4.3 (the pyspark wheel here) `variant_explode`
lost an object's first key when its values were projected through `schema_of_variant`, so it is not used.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from cdp_assets.segments.compiler import SPARK_DATETIME_RE, Catalog, CompiledSegment, SegmentDefinition, _json_type_class, _split_table

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import DataType

# The datetime forms both engines read alike (compiler.SPARK_DATETIME_RE, in Python's syntax).
_DATETIME = re.compile(SPARK_DATETIME_RE.removeprefix("^").removesuffix(r"\z"))


def segment_members(session: "SparkSession", compiled: CompiledSegment) -> "DataFrame":
    """The members (one `person_id` column) of a rule compiled with `dialect="spark"`."""
    return session.sql(compiled.sql, args=list(compiled.params))


def catalog_from_spark(
    session: "SparkSession", profiles: str = "cdp.profiles", events: str = "cdp.events",
    sample_per_event: int = 1000, event_names: list[str] | None = None,
) -> Catalog:
    """What the rules may refer to, from the session's catalog (see the module docstring)."""
    for table in (profiles, events):
        _split_table(table)  # names only, never text from a rule
    columns = {field.name: duckdb_type_name(field.dataType) for field in session.table(profiles).schema.fields}
    properties: dict[str, dict[str, str]] = {}
    if session.catalog.tableExists(events) and event_names != []:
        where, args = "event_name IS NOT NULL", [sample_per_event]
        if event_names is not None:
            where, args = "event_name IS NOT NULL AND array_contains(?, event_name)", [list(event_names), sample_per_event]
        rows = session.sql(
            f"""SELECT event_name, CAST(properties AS STRING) AS properties FROM (
                    SELECT event_name, properties,
                        row_number() OVER (PARTITION BY event_name ORDER BY occurred_at DESC) AS n
                    FROM {events} WHERE {where}
                ) WHERE n <= ?""",
            args=args,
        ).collect()
        found: dict[tuple[str, str], tuple[set[str], bool | None]] = {}
        for row in rows:
            for name, value in _properties(row.properties):
                types, all_datetimes = found.get((row.event_name, name), (set(), None))
                kind = _json_type(value)
                types.add(kind)
                if kind == "VARCHAR":
                    all_datetimes = (all_datetimes is not False) and _is_datetime(value)
                found[(row.event_name, name)] = (types, all_datetimes)
        for (event_name, name), (types, all_datetimes) in sorted(found.items()):
            properties.setdefault(event_name, {})[name] = _json_type_class(sorted(types), all_datetimes)
    return Catalog(profile_columns=columns, event_properties=properties)


def duckdb_type_name(data_type: "DataType") -> str:
    """A Spark column type as DuckDB names it (what `compiler.column_type` reads)."""
    from pyspark.sql import types as t

    if isinstance(data_type, (t.StringType, t.VarcharType, t.CharType)):
        return "VARCHAR"
    if isinstance(data_type, t.ArrayType):
        return duckdb_type_name(data_type.elementType) + "[]"
    if isinstance(data_type, t.DecimalType):
        return f"DECIMAL({data_type.precision},{data_type.scale})"
    if isinstance(data_type, (t.TimestampType, t.TimestampNTZType)):
        return "TIMESTAMP"  # an instant read in the session's UTC; compared with naive-UTC bounds
    named = {t.LongType: "BIGINT", t.IntegerType: "INTEGER", t.ShortType: "SMALLINT", t.ByteType: "TINYINT",
             t.DoubleType: "DOUBLE", t.FloatType: "FLOAT", t.BooleanType: "BOOLEAN", t.DateType: "DATE"}
    for spark_type, name in named.items():
        if isinstance(data_type, spark_type):
            return name
    return data_type.simpleString().upper()


def _properties(text: str | None):
    """(name, value) of the top-level keys and of one nested level (`a.b`), as DuckDB's json_each reads them."""
    try:
        document = json.loads(text) if text is not None else None
    except ValueError:
        return
    if not isinstance(document, dict):
        return
    for key, value in document.items():
        yield key, value
        if isinstance(value, dict):
            for inner, inner_value in value.items():
                yield f"{key}.{inner}", inner_value


def _json_type(value) -> str:
    """DuckDB's json_type name of a parsed JSON value."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "BIGINT" if -(2**63) <= value < 2**63 else ("UBIGINT" if 0 <= value < 2**64 else "DOUBLE")
    if isinstance(value, float):
        return "DOUBLE"
    if isinstance(value, str):
        return "VARCHAR"
    return "ARRAY" if isinstance(value, list) else "OBJECT"


def _is_datetime(text: str) -> bool:
    match = _DATETIME.fullmatch(text)
    if not match:
        return False
    year, month, day = (int(part) for part in text[:10].replace("T", " ").split(" ")[0].split("-"))
    try:
        datetime(year, month, day)
    except ValueError:
        return False
    return True


MEMBERSHIP_SCHEMA = "segment STRING, person_id STRING, entered_at TIMESTAMP"
CHANGES_SCHEMA = "segment STRING, person_id STRING, change STRING, changed_at TIMESTAMP"
EVALUATIONS_SCHEMA = "segment STRING, evaluated_at TIMESTAMP, batch_id BIGINT, digest STRING"


def refresh_segment_on_spark(engine, definition: SegmentDefinition, now: datetime, incremental: bool = True) -> dict:
    """`assets.refresh_segment` on the Spark warehouse: the rule evaluated with the Spark SQL of the same compiler,
    the difference applied to cdp.segment_membership and cdp.segment_changes (entered at / changed at `now`, as
    on DuckDB) and core.segment_evaluations updated, in one swap of the three tables under the writer lock (only
    the evaluation's row when nobody entered or left: Parquet rewrites whole tables).

    Always a full evaluation (`incremental` is not used yet): the candidates' scope (segments/incremental.py)
    gives the full evaluation's result by construction, so only the cost differs. The changes log is rewritten
    with the membership rather than appended after it, so a crash can neither lose changes nor record them twice.
    """
    from pyspark.sql import functions as F

    from cdp_assets.segments.compiler import compile_segment, property_events
    from cdp_assets.segments.incremental import definition_digest

    session = engine.session()
    name = definition.name
    naive = now.astimezone(timezone.utc).replace(tzinfo=None) if now.tzinfo is not None else now  # warehouse times: naive UTC
    at = F.timestamp_micros(F.lit((naive - datetime(1970, 1, 1)) // _MICROSECOND))
    with engine.lock():
        missing = {table: session.createDataFrame([], schema) for table, schema in
                   (("cdp.segment_membership", MEMBERSHIP_SCHEMA), ("cdp.segment_changes", CHANGES_SCHEMA))
                   if not engine.table_exists(table)}
        if missing:  # a rule reusing a segment reads the membership table: it must exist, as on DuckDB
            engine.replace_tables(missing)
        engine.register_tables()
        catalog = catalog_from_spark(session, event_names=property_events(definition))
        compiled = compile_segment(definition, catalog, now, dialect="spark")
        members = segment_members(session, compiled).select("person_id").distinct().cache()
        changes = None
        try:
            membership = _columns(engine.table("cdp.segment_membership"), MEMBERSHIP_SCHEMA)
            mine = F.col("segment").eqNullSafe(F.lit(name))
            current = membership.filter(mine)
            entered = members.join(current.select("person_id"), "person_id", "left_anti")
            exited = current.select("person_id").join(members, "person_id", "left_anti")
            changes = (
                entered.select(F.lit(name).alias("segment"), "person_id", F.lit("entered").alias("change"), at.alias("changed_at"))
                .unionByName(exited.select(F.lit(name).alias("segment"), "person_id", F.lit("exited").alias("change"),
                                           at.alias("changed_at")))
            ).cache()
            counts = {row["change"]: row["count"] for row in changes.groupBy("change").count().collect()}
            found = members.count()
            batch = None
            if engine.table_exists("core.batches"):
                batch = engine.table("core.batches").agg(F.max("batch_id")).collect()[0][0]
            evaluation = session.createDataFrame(
                [(name, naive.replace(tzinfo=timezone.utc), batch, definition_digest(definition))],  # aware: Spark reads it right
                EVALUATIONS_SCHEMA)
            evaluations = (
                _columns(engine.table("core.segment_evaluations"), EVALUATIONS_SCHEMA).filter(~F.col("segment").eqNullSafe(F.lit(name)))
                .unionByName(evaluation) if engine.table_exists("core.segment_evaluations") else evaluation
            )
            frames = {"core.segment_evaluations": evaluations}
            if counts:  # no entry and no exit: membership and the changes log stay as they are
                frames["cdp.segment_membership"] = (
                    membership.filter(~mine).unionByName(current.join(members, "person_id", "left_semi"))
                    .unionByName(entered.select(F.lit(name).alias("segment"), "person_id", at.alias("entered_at"))))
                frames["cdp.segment_changes"] = _columns(engine.table("cdp.segment_changes"), CHANGES_SCHEMA).unionByName(changes)
            engine.replace_tables(frames)
        finally:
            members.unpersist()
            if changes is not None:
                changes.unpersist()
    # In full, the segment's membership is the members found.
    return {"size": found, "entered": counts.get("entered", 0), "exited": counts.get("exited", 0), "sql": compiled.sql,
            "mode": "full", "persons_evaluated": None, "members_found": found}


_MICROSECOND = timedelta(microseconds=1)


def _columns(frame: "DataFrame", schema: str) -> "DataFrame":
    """The frame's columns of `schema`, in its order and types (a table copied from elsewhere may differ)."""
    from pyspark.sql import functions as F

    return frame.select(*[F.col(part.split()[0]).cast(part.split()[1].lower()).alias(part.split()[0])
                          for part in schema.split(", ")])
