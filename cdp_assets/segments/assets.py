"""One asset per segment file in `config/segments/`: evaluate the rule, record entries and exits.

Membership lives in `cdp.segment_membership` (who is in now, since when) and every change is appended to
`cdp.segment_changes`, which is what destinations consume.
"""

import re
from datetime import datetime
from pathlib import Path

from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, MaterializeResult, MetadataValue, asset
from yaml.nodes import MappingNode, ScalarNode

from cdp_assets.config import ConfigError, compose_yaml
from cdp_assets.segments.compiler import (
    DEFAULT_REFRESH,
    MAX_SEGMENT_BYTES,
    REFRESH_CHOICES,
    SegmentDefinition,
    SegmentError,
    catalog_from_warehouse,
    compile_segment,
    load_valid_segments,
    property_events,
)
from cdp_assets.segments.incremental import candidates_sql, clock_windows, definition_digest
from cdp_resources import WarehouseResource
from cdp_resources.settings import clock, config_dir
from cdp_resources.warehouse import table_exists

MEMBERSHIP_DDL = """CREATE TABLE IF NOT EXISTS cdp.segment_membership (
    segment VARCHAR, person_id VARCHAR, entered_at TIMESTAMP)"""
CHANGES_DDL = """CREATE TABLE IF NOT EXISTS cdp.segment_changes (
    segment VARCHAR, person_id VARCHAR, change VARCHAR, changed_at TIMESTAMP)"""
SEGMENT_INPUTS = [AssetKey(["cdp", "profiles"]), AssetKey(["core", "person_events"])]


def segment_key(name: str) -> AssetKey:
    return AssetKey(["segments", name])


EVALUATIONS_DDL = """CREATE TABLE IF NOT EXISTS core.segment_evaluations (
    segment VARCHAR PRIMARY KEY, evaluated_at TIMESTAMP, batch_id BIGINT, digest VARCHAR)"""


def refresh_segment(con, definition: SegmentDefinition, now: datetime, incremental: bool = True) -> dict[str, int]:
    """Evaluate one segment and apply the difference to membership and changes, in one transaction: for the
    persons whose membership can have changed since its last evaluation (segments/incremental.py), or for
    everyone on the first evaluation, after the rule changed, or when asked (`incremental=False`)."""
    catalog = catalog_from_warehouse(con, event_names=property_events(definition))
    con.execute("CREATE SCHEMA IF NOT EXISTS cdp")
    con.execute("CREATE SCHEMA IF NOT EXISTS core")
    con.execute(MEMBERSHIP_DDL)
    con.execute(CHANGES_DDL)
    con.execute(EVALUATIONS_DDL)
    name, digest = definition.name, definition_digest(definition)
    windows = clock_windows(definition.where)
    last = con.execute("SELECT evaluated_at, batch_id, digest FROM core.segment_evaluations WHERE segment = ?", [name]).fetchone()
    batch = con.execute("SELECT max(batch_id) FROM core.batches").fetchone()[0] if table_exists(con, "core.batches") else None
    scoped = (incremental and last is not None and last[2] == digest and windows.exact and batch is not None
              and _columns(con, "cdp.profiles") >= {"person_id", "_batch_id"} and table_exists(con, "core.affected_persons"))
    con.execute("BEGIN")
    if scoped:
        sql, params = candidates_sql(name, windows, last[1], last[0], now)
        con.execute(f"CREATE OR REPLACE TEMP TABLE _candidates AS SELECT DISTINCT person_id FROM ({sql})", params)
        con.execute("CREATE OR REPLACE TEMP TABLE _candidate_profiles AS SELECT * FROM cdp.profiles SEMI JOIN _candidates USING (person_id)")
        con.execute(f"CREATE OR REPLACE TEMP TABLE _candidate_events AS {_CANDIDATE_EVENTS}")
        compiled = compile_segment(definition, catalog, now, profiles="temp._candidate_profiles", events="temp._candidate_events")
        scope = "AND person_id IN (SELECT person_id FROM _candidates)"
    else:
        compiled = compile_segment(definition, catalog, now)
        scope = ""
    con.execute(f"CREATE OR REPLACE TEMP TABLE _members AS SELECT DISTINCT person_id FROM ({compiled.sql})", compiled.params)
    current = "SELECT person_id FROM cdp.segment_membership WHERE segment = ?"
    entered = con.execute(
        f"INSERT INTO cdp.segment_changes SELECT ?, person_id, 'entered', ? FROM _members "
        f"WHERE person_id NOT IN ({current})",
        [name, now, name],
    ).fetchone()[0]
    exited = con.execute(
        "INSERT INTO cdp.segment_changes SELECT ?, person_id, 'exited', ? FROM cdp.segment_membership "
        f"WHERE segment = ? {scope} AND person_id NOT IN (SELECT person_id FROM _members)",
        [name, now, name],
    ).fetchone()[0]
    con.execute(
        f"DELETE FROM cdp.segment_membership WHERE segment = ? {scope} AND person_id NOT IN (SELECT person_id FROM _members)",
        [name],
    )
    con.execute(
        f"INSERT INTO cdp.segment_membership SELECT ?, person_id, ? FROM _members WHERE person_id NOT IN ({current})",
        [name, now, name],
    )
    size = con.execute("SELECT count(*) FROM cdp.segment_membership WHERE segment = ?", [name]).fetchone()[0]
    evaluated = con.execute("SELECT count(*) FROM _members").fetchone()[0]
    candidates = con.execute("SELECT count(*) FROM _candidates").fetchone()[0] if scoped else None
    con.execute("INSERT OR REPLACE INTO core.segment_evaluations VALUES (?, ?, ?, ?)", [name, now, batch, digest])
    con.execute("DROP TABLE _members")
    con.execute("COMMIT")
    return {"size": size, "entered": entered, "exited": exited, "sql": compiled.sql,
            "mode": "incremental" if scoped else "full", "persons_evaluated": candidates, "members_found": evaluated}


def refresh_segment_in(engine, definition: SegmentDefinition, now: datetime, incremental: bool = True) -> dict:
    """`refresh_segment` on the warehouse's engine (`WarehouseResource.engine()`): the one place the segment
    assets differ by engine. Same result keys on both."""
    if engine.name == "spark":
        from cdp_assets.segments.spark import refresh_segment_on_spark

        return refresh_segment_on_spark(engine, definition, now, incremental)
    with engine.connect() as con:
        return refresh_segment(con, definition, now, incremental)


# The events of the candidates only: their identifiers' raw values, then those events (cdp.events is read by
# its own columns, so the scan is filtered before person_events' join).
_CANDIDATE_EVENTS = """
    SELECT pe.* FROM core.person_events pe
    WHERE pe.event_id IN (
        SELECT e.event_id FROM cdp.events e
        WHERE e.user_id IN (SELECT raw_value FROM core.identifier_persons
                            WHERE identifier_type = 'user_id' AND person_id IN (SELECT person_id FROM _candidates))
           OR e.anonymous_id IN (SELECT raw_value FROM core.identifier_persons
                                 WHERE identifier_type = 'anonymous_id' AND person_id IN (SELECT person_id FROM _candidates)))
      AND pe.person_id IN (SELECT person_id FROM _candidates)"""


def _columns(con, table: str) -> set[str]:
    schema, name = table.split(".")
    return {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?", [schema, name]).fetchall()}


def build_segment_asset(definition: SegmentDefinition) -> AssetsDefinition:
    @asset(
        key=segment_key(definition.name),
        deps=SEGMENT_INPUTS + [segment_key(other) for other in definition.depends_on],
        group_name="segments",
        description=definition.description or f"Segment {definition.name}",
        kinds={"duckdb", "sql"},
        owners=["team:marketing-ops"],
        tags={"refresh": definition.refresh},
        pool="warehouse",
        metadata={"definition": str(definition.path.name), "refresh": definition.refresh},
    )
    def _segment(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult:
        now = clock()
        result = refresh_segment_in(warehouse.engine(), definition, now)
        context.log.info(f"{definition.name}: {result['size']} members, +{result['entered']} -{result['exited']} "
                         f"({result['mode']}, {result['persons_evaluated'] if result['persons_evaluated'] is not None else 'all'} persons evaluated)")
        return MaterializeResult(
            metadata={
                "size": result["size"],
                "entered": result["entered"],
                "exited": result["exited"],
                "mode": result["mode"],
                "persons_evaluated": result["persons_evaluated"] if result["persons_evaluated"] is not None else -1,
                "sql": MetadataValue.md(f"```sql\n{result['sql']}\n```"),
            }
        )

    return _segment


def build_invalid_segment_asset(path: Path, error: str, name: str | None = None) -> AssetsDefinition:
    """A definition that does not compile still shows up, in the UI and in runs, as an asset whose
    materialization fails with the file:line message, while every other segment loads and runs. It stays
    in the refresh it declares (when that much is readable), so the failure shows in the runs it belongs to."""

    @asset(
        key=segment_key(name or path.stem),
        group_name="segments",
        description=f"INVALID definition {path.name}: {error}",
        kinds={"duckdb", "sql"},
        owners=["team:marketing-ops"],
        tags={"refresh": _declared_refresh(path)},
        metadata={"definition": path.name, "error": error},
    )
    def _invalid_segment() -> None:
        raise SegmentError(error)

    return _invalid_segment


def _declared_refresh(path: Path) -> str:
    """The `refresh:` of a file that does not compile, when that much is readable (within the same bounds)."""
    try:
        root = compose_yaml(path, MAX_SEGMENT_BYTES)
    except ConfigError:
        return DEFAULT_REFRESH
    pairs = root.value if isinstance(root, MappingNode) else []
    refresh = next((v.value for k, v in pairs if k.value == "refresh" and isinstance(v, ScalarNode)), None)
    return refresh if refresh in REFRESH_CHOICES else DEFAULT_REFRESH


def _asset_name(path: Path, taken: set[str]) -> str:
    """The file name as a Dagster name (`my segment.yaml` -> my_segment), unique among the segments: a bad
    file name must not stop the code location from loading."""
    base = re.sub(r"[^A-Za-z0-9_]", "_", path.stem)
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name)
    return name


def segment_assets(directory: Path | None = None) -> list[AssetsDefinition]:
    definitions, errors = load_valid_segments(directory or config_dir() / "segments")
    taken = set(definitions)
    return [build_segment_asset(definitions[name]) for name in sorted(definitions)] + [
        build_invalid_segment_asset(path, error, _asset_name(path, taken)) for path, error in sorted(errors.items())
    ]
