"""The refresh pipeline as plain function calls, for tests on hand-made inputs and configurations: validation
(cdp_assets/events/validate.py), the dbt models before identity resolution (tag identity_inputs), the
resolution (cdp_assets/identity/store.py), then every other identity and profile model — what refresh_job runs,
without loading the Dagster definitions (which read config/ once per process)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import duckdb

from cdp_assets.config import SourceConfig
from cdp_assets.events.pii import PiiRules
from cdp_assets.events.validate import start_validation, validate_source
from cdp_assets.identity.rules import load_identity_rules
from cdp_assets.identity.store import update_persons
from cdp_resources.settings import config_dir

RAW_DDL = "CREATE TABLE IF NOT EXISTS raw.{name} (partition_key VARCHAR, file VARCHAR, line_no BIGINT, record VARCHAR, loaded_at TIMESTAMP)"


def warehouse(data_dir: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(data_dir / "warehouse.duckdb"))


def load_raw(data_dir: Path, source: str, partition: str, lines: list[str], file: str = "f.jsonl", at: datetime | None = None) -> None:
    """Replace one raw partition of `source` with `lines` (as an extract does)."""
    with warehouse(data_dir) as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS raw")
        con.execute(RAW_DDL.format(name=source))
        con.execute(f"DELETE FROM raw.{source} WHERE partition_key = ?", [partition])
        if lines:
            con.executemany(f"INSERT INTO raw.{source} VALUES (?, ?, ?, ?, ?)",
                            [(partition, file, n, line, at or datetime.now()) for n, line in enumerate(lines, 1)])


def refresh(data_dir: Path, sources: dict[str, SourceConfig], now: datetime = datetime(2026, 3, 1), profiles: bool = True) -> None:
    """One refresh over whatever is in the raw tables."""
    from tests.conftest import build_models

    with warehouse(data_dir) as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS raw")
        for name in sources:
            con.execute(RAW_DDL.format(name=name))
        views = con.execute("SELECT count(*) FROM duckdb_views() WHERE schema_name = 'staging'").fetchone()[0]
    if views < 2:  # the parse views, built once (the views read the raw tables as they are)
        build_models(data_dir, "path:models/staging/parsed", sources)
    with warehouse(data_dir) as con:
        batch = start_validation(con, now, sources.values())
        for source in sources.values():
            validate_source(con, source, PiiRules(), {"max_event_time": now + timedelta(days=1)}, batch)
    build_models(data_dir, "tag:identity_inputs", sources, now)
    with warehouse(data_dir) as con:
        update_persons(con, load_identity_rules(config_dir() / "identity.yaml"), now)
    if profiles:
        build_models(data_dir, "path:models/identity path:models/profiles --exclude tag:identity_inputs", sources, now)
