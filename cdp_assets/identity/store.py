"""Persons in the warehouse: a full rebuild, or an incremental update that re-resolves only what changed.

Who is who depends only on the current edges, identifiers and rules (`resolve`), and a person never
crosses a component (the identifiers the kept links connect). So an update takes the identifiers touched
since the last resolution (core.touched_identifiers, the change log the dbt identity models write: every
identifier on a record that changed or was removed), widens them to their components and the persons they
touch (the scope), resolves the scope exactly as a full rebuild would, and replaces only its rows: the
result is the full rebuild's, ids and merge log included (property-tested in tests/test_identity_incremental.py).
It never reads the whole edge list.

Beside the public tables (cdp.id_map, cdp.identity_merges, core.persons) it keeps, in schema core:
- core.identity_components: each resolved identifier's component;
- core.identity_resolution: the rules' fingerprint, when and how the last resolution ran, and the row
  counts of its own tables as it left them;
- core.id_map_changes: each identifier whose person changed (new, gone, merged, split), with the batch of
  the resolution, which per-person models downstream read (dbt core.affected_persons).
A full rebuild runs when these are missing, when the rules changed, when those counts changed (an erasure
deleted rows), or when asked to.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import duckdb
import polars as pl

from cdp_assets.identity.resolve import (
    MERGES_SCHEMA,
    PreviousIdentity,
    Resolution,
    identity_graph,
    resolve_graph,
    resolve_persons,
)
from cdp_assets.identity.rules import IdentityRules
from cdp_resources.warehouse import replace_table, table_exists

MERGES_DDL = """CREATE TABLE IF NOT EXISTS cdp.identity_merges (
    from_person_id VARCHAR, to_person_id VARCHAR, reason VARCHAR, "at" TIMESTAMP)"""
STATE_DDL = """CREATE OR REPLACE TABLE core.identity_resolution (
    rules VARCHAR, resolved_at TIMESTAMP, mode VARCHAR, identifiers BIGINT, edges BIGINT, state_rows BIGINT[])"""
_EDGES = {"left_type": pl.String, "left_value": pl.String, "right_type": pl.String, "right_value": pl.String,
          "source": pl.String, "first_seen_at": pl.Datetime("us"), "last_seen_at": pl.Datetime("us")}
_IDENTIFIERS = {"identifier_type": pl.String, "identifier_value": pl.String, "first_seen_at": pl.Datetime("us")}
EDGE_COLUMNS = ", ".join(_EDGES)
_STATE = ["core.identity_resolution", "core.identity_components", "cdp.id_map", "core.persons",
          "cdp.identity_edges", "core.identifiers", "core.touched_identifiers"]
# Tables only this module writes: their row counts, recorded after each resolution, tell whether anyone
# else (an erasure) has changed them since.
_OWN = ["cdp.id_map", "core.persons", "core.identity_components"]
CONSUMER = "resolve_persons"  # its watermark over core.touched_identifiers
_KEY = ["identifier_type", "identifier_value"]
_ID_MAP = {"identifier_type": pl.String, "identifier_value": pl.String, "person_id": pl.String}
_SAME = "{a}.identifier_type = {b}.identifier_type AND {a}.identifier_value = {b}.identifier_value"


@dataclass(frozen=True)
class PersonsUpdate:
    mode: str  # "full" | "incremental"
    identifiers: int  # identifiers resolved (incremental: the scope)
    edges: int  # edges read
    persons: int  # persons afterwards
    merges: pl.DataFrame  # the rows appended to cdp.identity_merges
    changed: int = 0  # identifiers whose person changed (rows added to core.id_map_changes)


def update_persons(
    con: duckdb.DuckDBPyConnection, rules: IdentityRules, now: datetime, full_rebuild: bool = False
) -> PersonsUpdate:
    """Bring cdp.id_map, core.persons and cdp.identity_merges up to date with cdp.identity_edges and
    core.identifiers, incrementally when the last resolution's state allows it."""
    con.execute("CREATE SCHEMA IF NOT EXISTS core")
    con.execute("CREATE SCHEMA IF NOT EXISTS cdp")
    con.execute(MERGES_DDL)
    if full_rebuild or not _incremental_possible(con, rules):
        return _full(con, rules, now)
    return _incremental(con, rules, now)


def update_persons_in(engine, rules: IdentityRules, now: datetime, full_rebuild: bool = False):
    """`update_persons` on the warehouse's engine (`WarehouseResource.engine()`): the one place identity
    differs by engine. Returns (PersonsUpdate, identifiers per type in cdp.id_map)."""
    if engine.name == "spark":
        from cdp_assets.identity.spark import update_persons_on_spark

        return update_persons_on_spark(engine, rules, now, full_rebuild)
    with engine.connect() as con:
        update = update_persons(con, rules, now, full_rebuild=full_rebuild)
        by_type = dict(con.execute("SELECT identifier_type, count(*) FROM cdp.id_map GROUP BY 1 ORDER BY 1").fetchall())
    return update, by_type


def _incremental_possible(con: duckdb.DuckDBPyConnection, rules: IdentityRules) -> bool:
    if not all(table_exists(con, table) for table in _STATE):
        return False
    state = con.execute("SELECT rules, state_rows FROM core.identity_resolution").fetchall()
    # The rules changed, or someone else (an erasure deleting a person's rows everywhere) changed the
    # state since the last resolution: it no longer describes the last result, so start from scratch.
    return state == [(rules.fingerprint(), _state_rows(con))]


def _state_rows(con: duckdb.DuckDBPyConnection) -> list[int]:
    return list(con.execute(f"SELECT {', '.join(f'(SELECT count(*) FROM {t})' for t in _OWN)}").fetchone())


def _full(con: duckdb.DuckDBPyConnection, rules: IdentityRules, now: datetime) -> PersonsUpdate:
    identifiers, edges = _inputs(con)
    previous = None
    if table_exists(con, "cdp.id_map") and table_exists(con, "core.persons"):
        previous = PreviousIdentity(
            id_map=con.sql("SELECT identifier_type, identifier_value, person_id FROM cdp.id_map").pl(),
            persons=con.sql("SELECT person_id, created_at FROM core.persons").pl(),
        )
    resolution = resolve_persons(identifiers, edges, rules, previous=previous, now=now)
    before = previous.id_map if previous is not None else pl.DataFrame(schema=_ID_MAP)
    con.execute("BEGIN")
    changed = _log_changes(con, before, resolution.id_map, now)
    replace_table(con, "cdp.id_map", resolution.id_map)
    persons = replace_table(con, "core.persons", resolution.persons)
    _append_merges(con, resolution.merges)
    replace_table(con, "core.identity_components", resolution.components)
    _record(con, rules, now, "full", identifiers.height, edges.height)
    con.execute("COMMIT")
    return PersonsUpdate("full", resolution.id_map.height, edges.height, persons, resolution.merges, changed)


def _inputs(con: duckdb.DuckDBPyConnection) -> tuple[pl.DataFrame, pl.DataFrame]:
    """All identifiers and edges, typed as the snapshots keep them."""
    frames = []
    for table, schema in (("core.identifiers", _IDENTIFIERS), ("cdp.identity_edges", _EDGES)):
        columns = ", ".join(schema)
        frame = con.sql(f"SELECT {columns} FROM {table}").pl() if table_exists(con, table) else pl.DataFrame(schema=schema)
        frames.append(frame.cast(schema))
    return frames[0], frames[1]


def _incremental(con: duckdb.DuckDBPyConnection, rules: IdentityRules, now: datetime) -> PersonsUpdate:
    # What changed since the last resolution: the identifiers the change log says were touched (an
    # identifier merely touched, not changed, is re-resolved to the same result: harmless).
    con.execute("""CREATE OR REPLACE TEMP TABLE _touched AS
        SELECT DISTINCT identifier_type, identifier_value FROM core.touched_identifiers
        WHERE _batch_id > (SELECT coalesce(max(batch_id), -1) FROM core.watermarks WHERE consumer = $consumer)""",
                {"consumer": CONSUMER})
    con.execute("CREATE OR REPLACE TEMP TABLE _scope (identifier_type VARCHAR, identifier_value VARCHAR)")
    _grow_scope(con, "_touched")
    if not con.execute("SELECT count(*) FROM _scope").fetchone()[0]:
        con.execute("BEGIN")
        nothing = pl.DataFrame(schema=_ID_MAP)
        _log_changes(con, nothing, nothing, now)
        _record(con, rules, now, "incremental", 0, 0)
        con.execute("COMMIT")
        persons = con.execute("SELECT count(*) FROM core.persons").fetchone()[0]
        return PersonsUpdate("incremental", 0, 0, persons, pl.DataFrame(schema=MERGES_SCHEMA))
    while True:
        graph, identifiers, edges = _scope_graph(con, rules)
        # Every identifier of the persons the scope touches (normally the scope's own rows: a person
        # never crosses a component).
        held = con.sql(f"""SELECT m.identifier_type, m.identifier_value, m.person_id,
                                  EXISTS (SELECT 1 FROM _scope s WHERE {_SAME.format(a='m', b='s')}) AS inside
                           FROM cdp.id_map m WHERE m.person_id IN (
                               SELECT person_id FROM cdp.id_map n SEMI JOIN _scope s ON {_SAME.format(a='n', b='s')})""").pl()
        # Grow until no kept link leaves the scope and no touched person is cut (normally at once; it
        # grows when a shared identifier stops being shared).
        more = pl.concat([graph.reaches_outside, held.filter(~pl.col("inside")).select(graph.reaches_outside.columns)])
        if more.is_empty():
            break
        with _registered(con, _more=more):
            _grow_scope(con, "_more")
    with _registered(con, _held=held.select("person_id").unique()):
        persons = con.sql("SELECT person_id, created_at FROM core.persons SEMI JOIN _held USING (person_id)").pl()
    previous = PreviousIdentity(
        id_map=held.drop("inside"), persons=persons, ids_in_use=lambda ids: _ids_in_use(con, ids)
    )
    resolution = resolve_graph(graph, previous, now)
    _replace_scope(con, resolution, previous)
    changed = _log_changes(con, previous.id_map, resolution.id_map, now)
    _record(con, rules, now, "incremental", identifiers.height, edges.height)
    con.execute("COMMIT")
    persons = con.execute("SELECT count(*) FROM core.persons").fetchone()[0]
    return PersonsUpdate("incremental", resolution.id_map.height, edges.height, persons, resolution.merges, changed)


def _grow_scope(con: duckdb.DuckDBPyConnection, keys: str) -> None:
    """Add identifiers `keys` (a table or frame of identifier_type, identifier_value) to the scope with
    every identifier of their last components."""
    con.execute(f"""INSERT INTO _scope
        (SELECT identifier_type, identifier_value FROM {keys}
         UNION
         SELECT c.identifier_type, c.identifier_value FROM core.identity_components c
         WHERE c.component IN (SELECT k.component FROM core.identity_components k
                               SEMI JOIN {keys} t ON {_SAME.format(a='k', b='t')}))
        EXCEPT SELECT identifier_type, identifier_value FROM _scope""")


def _scope_graph(con: duckdb.DuckDBPyConnection, rules: IdentityRules):
    """The coded graph of the scope: its identifiers that still exist, and every edge touching one."""
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _scope_edges AS
        SELECT {EDGE_COLUMNS} FROM cdp.identity_edges e
            SEMI JOIN _scope s ON e.left_type = s.identifier_type AND e.left_value = s.identifier_value
        UNION
        SELECT {EDGE_COLUMNS} FROM cdp.identity_edges e
            SEMI JOIN _scope s ON e.right_type = s.identifier_type AND e.right_value = s.identifier_value""")
    identifiers = con.sql(f"""WITH present AS (
            SELECT identifier_type, identifier_value FROM core.identifiers i SEMI JOIN _scope s ON {_SAME.format(a='i', b='s')}
            UNION
            SELECT * FROM (SELECT left_type AS identifier_type, left_value AS identifier_value FROM _scope_edges
                           UNION SELECT right_type, right_value FROM _scope_edges) e
            SEMI JOIN _scope s ON {_SAME.format(a='e', b='s')})
        SELECT p.identifier_type, p.identifier_value, i.first_seen_at FROM present p
        LEFT JOIN core.identifiers i ON {_SAME.format(a='p', b='i')}""").pl()
    edges = con.sql("SELECT * FROM _scope_edges").pl()
    return identity_graph(identifiers, edges, rules, scope=True), identifiers, edges


def _ids_in_use(con: duckdb.DuckDBPyConnection, ids: list[str]) -> set[str]:
    with _registered(con, _candidates=pl.DataFrame({"person_id": ids}, schema={"person_id": pl.String})):
        return {row[0] for row in con.execute(
            "SELECT person_id FROM core.persons SEMI JOIN _candidates USING (person_id)"
        ).fetchall()}


def _replace_scope(con: duckdb.DuckDBPyConnection, resolution: Resolution, previous: PreviousIdentity) -> None:
    """Swap the scope's rows of the id map, persons and state for the new ones (the transaction stays
    open: the caller records the run and commits)."""
    offset = con.execute("SELECT coalesce(max(component), -1) + 1 FROM core.identity_components").fetchone()[0]
    con.execute("BEGIN")
    for table in ("cdp.id_map", "core.identity_components"):
        con.execute(f"DELETE FROM {table} t USING _scope s WHERE {_SAME.format(a='t', b='s')}")
    with _registered(
        con,
        _id_map=resolution.id_map,
        _persons=resolution.persons,
        _ended=previous.persons.select("person_id"),  # a survivor is inserted again
        _components=resolution.components.with_columns(pl.col("component") + offset),
    ):
        con.execute("INSERT INTO cdp.id_map (identifier_type, identifier_value, person_id) "
                    "SELECT identifier_type, identifier_value, person_id FROM _id_map")
        con.execute("DELETE FROM core.persons p USING _ended e WHERE p.person_id = e.person_id")
        con.execute("INSERT INTO core.persons (person_id, created_at) SELECT person_id, created_at FROM _persons")
        con.execute("INSERT INTO core.identity_components (identifier_type, identifier_value, component) "
                    "SELECT identifier_type, identifier_value, component FROM _components")
    _append_merges(con, resolution.merges)


def _log_changes(con: duckdb.DuckDBPyConnection, before: pl.DataFrame, after: pl.DataFrame, now: datetime) -> int:
    """Append to core.id_map_changes every identifier whose person differs between `before` and `after`
    (id maps of the same identifiers: the scope, or everything), under a new batch; returns how many."""
    from cdp_assets.events.validate import new_batch

    changes = (
        before.select(*_KEY, pl.col("person_id").alias("person_before"))
        .join(after.select(*_KEY, pl.col("person_id").alias("person_after")), on=_KEY, how="full", coalesce=True)
        .filter(pl.col("person_before").ne_missing(pl.col("person_after")))
    )
    batch = new_batch(con, "identity", now)
    if changes.height:
        with _registered(con, _changes=changes):
            con.execute("INSERT INTO core.id_map_changes BY NAME SELECT *, $batch::BIGINT AS _batch_id FROM _changes",
                        {"batch": batch})
    # Everything touched up to now has been read (the caller commits both together).
    con.execute("INSERT OR REPLACE INTO core.watermarks VALUES ($consumer, $batch)", {"consumer": CONSUMER, "batch": batch})
    return changes.height


def _append_merges(con: duckdb.DuckDBPyConnection, merges: pl.DataFrame) -> None:
    if not merges.is_empty():
        with _registered(con, _merges=merges):
            con.execute('INSERT INTO cdp.identity_merges SELECT from_person_id, to_person_id, reason, "at" FROM _merges')


@contextmanager
def _registered(con: duckdb.DuckDBPyConnection, **frames: pl.DataFrame):
    """Frames visible to DuckDB under these names for the block (no reliance on replacement scans)."""
    for name, frame in frames.items():
        con.register(name, frame)
    try:
        yield
    finally:
        for name in frames:
            con.unregister(name)


def _record(con: duckdb.DuckDBPyConnection, rules: IdentityRules, now: datetime, mode: str, identifiers: int, edges: int) -> None:
    con.execute(STATE_DDL)
    con.execute("INSERT INTO core.identity_resolution VALUES (?, ?, ?, ?, ?, ?)",
                [rules.fingerprint(), now, mode, identifiers, edges, _state_rows(con)])
