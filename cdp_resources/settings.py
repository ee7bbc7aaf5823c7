"""Where an instance lives: one data directory and one config directory, both relocatable.

Everything reads these two paths from the environment at call time (not import time) so tests and
several instances on one machine stay isolated.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path


def data_dir() -> Path:
    """`CDP_DATA_DIR` (default `./data`): landing/, cdc/, imports/, api/, warehouse.duckdb."""
    return Path(os.environ.get("CDP_DATA_DIR", "data")).resolve()


def config_dir() -> Path:
    """`CDP_CONFIG_DIR` (default `./config`, else the project's own `config/` when run from elsewhere, such as
    dbt from `dbt/`): sources, identity rules, traits, segments."""
    if "CDP_CONFIG_DIR" in os.environ:
        return Path(os.environ["CDP_CONFIG_DIR"]).resolve()
    here = Path("config")
    return here.resolve() if here.is_dir() else Path(__file__).resolve().parents[1] / "config"


def warehouse_path() -> Path:
    return data_dir() / "warehouse.duckdb"


ENGINES = ("duckdb", "spark")


def engine_name() -> str:
    """`CDP_ENGINE`: `duckdb` (default, the embedded file) or `spark` (`CDP_SPARK_MASTER`)."""
    name = os.environ.get("CDP_ENGINE", "duckdb").strip().lower() or "duckdb"
    if name not in ENGINES:
        raise ValueError(f"CDP_ENGINE={os.environ['CDP_ENGINE']!r}: expected one of {', '.join(ENGINES)}")
    return name


def spark_master() -> str:
    """`CDP_SPARK_MASTER`: `local[*]` (default), `spark://host:port` or a Spark Connect `sc://host:port` URL."""
    master = os.environ.get("CDP_SPARK_MASTER", "").strip() or "local[*]"
    if not master.startswith(("local", "spark://", "sc://")):
        raise ValueError(f"CDP_SPARK_MASTER={master!r}: expected local[*], spark://host:port or sc://host:port")
    return master


def spark_warehouse_dir() -> Path:
    """Where the Spark engine keeps its tables (Parquet): `$CDP_DATA_DIR/spark-warehouse`."""
    return data_dir() / "spark-warehouse"


def clock() -> datetime:
    """The time a run works at, naive UTC: the real time, or `CDP_NOW` (ISO 8601, UTC) to run as of a fixed moment,
    e.g. to replay a run reproducibly or to compare the engines on the same inputs (tests/test_spark_run.py).
    Time windows of segments, days-since traits, load and merge times all read it."""
    fixed = os.environ.get("CDP_NOW", "").strip()
    if not fixed:
        return datetime.now(timezone.utc).replace(tzinfo=None)
    try:
        moment = datetime.fromisoformat(fixed)
    except ValueError:
        raise ValueError(f"CDP_NOW={fixed!r}: expected an ISO 8601 time such as 2026-03-01T12:00:00") from None
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment


def fixed_clock() -> bool:
    """Whether `CDP_NOW` fixes the run's clock."""
    return bool(os.environ.get("CDP_NOW", "").strip())
