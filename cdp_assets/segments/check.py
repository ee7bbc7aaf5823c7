"""`cdp segment check FILE`: validate one definition, show its SQL and its current size."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from cdp_assets.segments.compiler import SegmentError, catalog_from_warehouse, compile_segment, load_segment, load_segments
from cdp_resources import WarehouseResource
from cdp_resources.warehouse import table_exists


def check_segment_file(path: Path, warehouse: WarehouseResource | None = None) -> tuple[bool, str]:
    """(valid, text): the SQL and size for a valid file, the error naming file and line otherwise."""
    warehouse = warehouse or WarehouseResource()
    try:
        definition = load_segment(path)
        load_segments(path.parent)  # references and cycles are checked across the folder
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        with warehouse.connect() as con:
            if not table_exists(con, "cdp.profiles"):
                return False, (
                    f"{path}: parsed, but {warehouse.file()} has no cdp.profiles yet to check traits against; "
                    "run `cdp run` (or `make demo`) first"
                )
            compiled = compile_segment(definition, catalog_from_warehouse(con), now)
            size = con.execute(f"SELECT count(DISTINCT person_id) FROM ({compiled.sql})", compiled.params).fetchone()[0]
    except SegmentError as exc:
        return False, str(exc)
    params = ", ".join(repr(p) for p in compiled.params)
    return True, f"{definition.name}: valid\n\n{compiled.sql}\n\nparameters: [{params}]\nsize: {size}"
