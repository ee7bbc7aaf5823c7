"""Profiles on Spark (`CDP_ENGINE=spark`): the profile models are dbt models (`dbt build --target spark`); what
Python reads of them lives here.

The 360° view's rows: the same tables, columns and order as
`view._person_rows` reads from DuckDB, read from the Spark warehouse, as the same Python values (times as
naive UTC, as DuckDB gives them; unsigned 64-bit hashes, kept as DECIMAL(20,0) on Spark, as integers).

The recent events come from dbt's view core.person_events (and the access export's purchases from
core.person_purchases). A view on Spark lives in the catalog of the session that created it (the catalog is in
memory, cdp_resources/spark.py), so a process that did not build it creates it, and the views it reads, from
the SQL dbt compiles for them on Spark: the events are the model's, never a copy of its SQL.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T


# The snapshot's own columns (dbt/snapshots/profile_history.yml `snapshot_meta_column_names`).
VERSION_COLUMNS = ("version_id", "version_updated_at", "valid_from", "valid_to")
# dbt's views Python reads on Spark, each with the view models it needs, in dependency order.
EVENTS_VIEW = "core.person_events"
PURCHASES_VIEW = "core.person_purchases"
VIEW_MODELS = {
    EVENTS_VIEW: ["identifier_persons", "person_events"],
    PURCHASES_VIEW: ["identifier_persons", "person_events", "purchase_claims", "person_purchases"],
}


def person_rows_on_spark(engine, identifier_type: str, value: str, events: int):
    """`view._person_rows` on the Spark warehouse; None if nobody holds the identifier."""
    id_map = engine.table("cdp.id_map")
    found = id_map.where((F.col("identifier_type") == identifier_type) & (F.col("identifier_value") == value)) \
        .select("person_id").limit(1).collect()
    if not found:
        return None
    person_id = found[0][0]

    def of_person(table: str) -> DataFrame:
        return engine.table(table).where(F.col("person_id") == person_id)

    def optional(table: str, frame) -> list[dict]:
        return python_rows(frame(of_person(table))) if engine.table_exists(table) else []

    profile = python_rows(of_person("cdp.profiles"))
    identifiers = python_rows(of_person("cdp.id_map").select(F.col("identifier_type").alias("type"),
                                                        F.col("identifier_value").alias("value")).orderBy(*_all("type", "value")))
    segments = optional("cdp.segment_membership", lambda f: f.select("segment", "entered_at").orderBy(*_all("segment")))
    traits = optional("core.person_trait_values",
                      lambda f: f.select("trait", "value", "source", "observed_at").orderBy(*_all("trait")))
    columns = ["kind", "related_value", "source", "last_seen_at"]
    relationships = optional("cdp.relationships", lambda f: f.select(*columns).orderBy(*_all(*columns)))
    recent = python_rows(events_view(engine).where(F.col("person_id") == person_id)
                   .select("event_id", "event_type", "event_name", "occurred_at", "source", "properties")
                   .orderBy(F.col("occurred_at").desc_nulls_last(), F.col("event_id").asc_nulls_last()).limit(events))
    return person_id, profile, identifiers, segments, traits, relationships, recent


def history_problems(engine) -> tuple[int, int]:
    """(profiles differing from the current version of their history, profiles without one), as
    checks.history_problems counts them on DuckDB. The versioned columns are the history's own (those of
    core.profile_versions, a view, which a process's catalog holds only after dbt ran in it), read from
    cdp.profiles, whose projection that view is."""
    history = engine.table("cdp.profile_history")
    current = history.where(F.col("valid_to").isNull())
    columns = [f"`{c}`" for c in history.columns if c not in VERSION_COLUMNS]
    profiles = engine.table("cdp.profiles")
    differing = profiles.select(*columns).subtract(current.select(*columns)).count()
    without = profiles.join(current.select("person_id"), "person_id", "left_anti").count()
    return differing, without


def events_view(engine) -> DataFrame:
    """core.person_events in this process's session (`dbt_views`)."""
    return dbt_views(engine, [EVENTS_VIEW])[EVENTS_VIEW]


def dbt_views(engine, relations: list[str]) -> dict[str, DataFrame]:
    """dbt's views `relations` (of `VIEW_MODELS`), and the views they read, in this process's session, created from
    dbt's own SQL for Spark when the session does not have them yet (one compile for all of them): dbt's views live
    in the session that built them (the catalog is in memory)."""
    from cdp_assets.dbt.spark import prepare_session

    session = prepare_session(engine)
    missing = [relation for relation in relations if not session.catalog.tableExists(relation)]
    if missing:
        models = list(dict.fromkeys(model for relation in missing for model in VIEW_MODELS[relation]))
        for relation, sql in _compiled_views(models):
            session.sql(f"CREATE OR REPLACE VIEW {relation} AS {sql}")
    return {relation: session.table(relation) for relation in relations}


def _compiled_views(models: list[str]) -> list[tuple[str, str]]:
    """(relation, SQL) of the view models, in the order given: `dbt compile --target spark` (which, unlike
    `dbt run`, writes nothing: no batch, no table), in this process's session."""
    from cdp_assets.dbt.project import command_target, dbt_failures, invoke_dbt, parse_cache
    from cdp_assets.dbt.vars import dbt_vars

    with parse_cache(command_target("profile_views")) as target:
        result = invoke_dbt(["compile", "--target", "spark", "--select", *models, "--exclude", "resource_type:test",
                             "--log-level", "none"], target, dbt_vars())  # compile prints the SQL: not on our stdout
    if not result.success:
        raise RuntimeError(f"dbt compile of {', '.join(models)} failed: {dbt_failures(result)}")
    nodes = sorted((r.node for r in result.result.results if r.node.resource_type == "model" and r.node.name in models),
                   key=lambda node: models.index(node.name))
    return [(node.relation_name, node.compiled_code) for node in nodes]


def _all(*columns: str):
    """DuckDB's ascending order: nulls last."""
    return [F.col(c).asc_nulls_last() for c in columns]


def python_rows(frame: DataFrame) -> list[dict]:
    """The frame's rows as DuckDB gives the same table's (`person_rows_on_spark`'s and the access export's)."""
    hashes = {f.name for f in frame.schema.fields if isinstance(f.dataType, T.DecimalType) and
              (f.dataType.precision, f.dataType.scale) == (20, 0)}
    return [{name: _plain(v, name in hashes) for name, v in row.items()} for row in frame.toArrow().to_pylist()]


def _plain(value, is_hash: bool):
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(timezone.utc).replace(tzinfo=None)
    if is_hash and isinstance(value, Decimal):
        return int(value)
    return value
