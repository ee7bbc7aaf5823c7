"""`cdp segment check FILE`: validate one definition, show its SQL and its current size (on the configured
engine: DuckDB, or Spark with `CDP_ENGINE=spark`, where the SQL shown is Spark's)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from cdp_assets.segments.compiler import (
    MEMBERSHIP_TABLE,
    PROFILES_TABLE,
    SegmentDefinition,
    SegmentError,
    catalog_from_warehouse,
    check_references,
    compile_segment,
    load_segment,
    load_valid_segments,
    segment_refs,
)
from cdp_resources import WarehouseResource
from cdp_resources.warehouse import table_exists

RUN_FIRST = "run `cdp run` (or `make demo`) first"


def check_segment_file(path: Path, warehouse: WarehouseResource | None = None, engine=None) -> tuple[bool, str]:
    """(valid, text): the SQL and size for a valid file, the error naming file and line otherwise. `engine`:
    the warehouse's engine by default (`WarehouseResource.engine()`).

    References are checked against the other files of the folder; a bad file there that this one does not
    reuse is not this file's problem (the code location loads it the same way)."""
    warehouse = warehouse or WarehouseResource()
    engine = engine or warehouse.engine()
    path = Path(path)
    try:
        definition = load_segment(path)
        others, errors = load_valid_segments(path.parent)
        if path in errors:
            raise SegmentError(errors[path])
        check_references({**others, definition.name: definition}, invalid={p.stem: p for p in errors})
        if engine.name == "spark":
            return _check_on_spark(path, definition, others, engine)
        if not warehouse.file().exists():
            return False, f"{path}: parsed, but there is no warehouse at {warehouse.file()} yet; {RUN_FIRST}"
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        with warehouse.connect() as con:
            if not table_exists(con, "cdp.profiles"):
                return False, (
                    f"{path}: parsed, but {warehouse.file()} has no cdp.profiles yet to check traits against; {RUN_FIRST}"
                )
            catalog = catalog_from_warehouse(con)
            compiled = compile_segment(definition, catalog, now)
            _check_reused(definition, others, catalog, now)
            size = _size(definition, table_exists(con, MEMBERSHIP_TABLE), lambda: con.execute(
                f"SELECT count(DISTINCT person_id) FROM ({compiled.sql})", compiled.params).fetchone()[0])
    except SegmentError as exc:
        return False, str(exc)
    return True, _report(definition, compiled, size)


def _check_on_spark(path: Path, definition: SegmentDefinition, others: dict[str, SegmentDefinition], engine) -> tuple[bool, str]:
    """The same check on the Spark warehouse: its catalog, Spark's SQL, the size counted there."""
    from cdp_assets.segments.spark import catalog_from_spark, segment_members

    if not engine.table_exists(PROFILES_TABLE):
        return False, (f"{path}: parsed, but the Spark warehouse at {engine.warehouse_dir} has no {PROFILES_TABLE} yet "
                       f"to check traits against; {RUN_FIRST}")
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    session = engine.session()
    engine.register_tables()
    catalog = catalog_from_spark(session)
    compiled = compile_segment(definition, catalog, now, dialect="spark")
    _check_reused(definition, others, catalog, now, dialect="spark")
    size = _size(definition, engine.table_exists(MEMBERSHIP_TABLE), lambda: segment_members(session, compiled).count())
    return True, _report(definition, compiled, size)


def _size(definition: SegmentDefinition, memberships_exist: bool, count) -> str:
    """The size to show: `count()` members, unknown while a segment it reuses has never been evaluated."""
    if definition.depends_on and not memberships_exist:
        return f"unknown: the segments it reuses ({', '.join(definition.depends_on)}) have not been evaluated yet"
    size = str(count())
    if definition.depends_on:
        size += f" (with the last evaluated members of {', '.join(definition.depends_on)})"
    return size


def _report(definition: SegmentDefinition, compiled, size: str) -> str:
    params = ", ".join(_parameter_text(p) for p in compiled.params)
    return f"{definition.name}: valid\n\n{compiled.sql}\n\nparameters: [{params}]\nsize: {size}"


def _check_reused(definition: SegmentDefinition, others: dict[str, SegmentDefinition], catalog, now: datetime,
                  dialect: str = "duckdb") -> None:
    """A reused segment that parses but does not compile (an unknown trait, say) fails its asset, and this
    one's with it: say so now, at the line of the reference."""
    for ref in segment_refs(definition.where):
        reused = others[ref.name]
        try:
            compile_segment(reused, catalog, now, dialect=dialect)
            _check_reused(reused, others, catalog, now, dialect)
        except SegmentError as exc:
            raise SegmentError(f"{definition.path}:{ref.line}: reuses segment '{ref.name}', which is invalid: {exc}") from None


def _parameter_text(value) -> str:
    """Parameters as a reader would write them: UTC timestamps and durations rather than Python reprs."""
    if isinstance(value, datetime):  # (Spark's parameters are marked UTC: shown as DuckDB's are)
        return repr(value.replace(tzinfo=None).isoformat(sep=" ", timespec="seconds"))
    if isinstance(value, timedelta):
        return f"interval {str(value)!r}"
    return repr(value)
