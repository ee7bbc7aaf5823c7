"""The warehouse: the engine setting's one seam, and the DuckDB file (the default engine), one writer at a time.

`WarehouseResource.engine()` is what `CDP_ENGINE` chooses: a `DuckDBEngine` over the file below or a
`SparkEngine` (cdp_resources/spark.py). Code that must differ by engine asks for the engine and hands it to
the stage's engine-specific implementation (e.g. cdp_assets/identity/store.py); asset code never branches.

DuckDB lets a single process open a database file for writing. Dagster may run several steps, several
runs and a dbt subprocess against the same file, so every user of the warehouse takes an exclusive
advisory lock (`warehouse.duckdb.lock`) for the short time it holds a connection. Steps queue on the lock
instead of failing with "Could not set lock on file".

DuckDB's own defaults (80% of RAM, every core) suit a database alone on a machine, not one sharing it with
Dagster, dbt, the collector and Python frames: every connection, dbt's included, gets the warehouse's
`memory_limit` and `threads` (`CDP_DUCKDB_MEMORY_LIMIT`, `CDP_DUCKDB_THREADS`), by default a quarter of
the RAM, at most 4 GB, and every core. Past the limit DuckDB spills to `warehouse.duckdb.tmp/`.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
from dagster import ConfigurableResource

from cdp_resources.settings import engine_name, spark_master, spark_warehouse_dir, warehouse_path

_held = threading.local()
MEMORY_SHARE = 0.25  # of physical RAM, by default
MEMORY_CAP = 4 * 2**30
MEMORY_FLOOR = 512 * 2**20


def default_memory_limit() -> str:
    """A quarter of physical RAM, between 512 MB and 4 GB, as DuckDB reads it (e.g. '4096MB')."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        ram = 8 * 2**30
    return f"{max(MEMORY_FLOOR, min(MEMORY_CAP, int(ram * MEMORY_SHARE))) // 2**20}MB"


def duckdb_settings(memory_limit: str = "", threads: int = 0) -> dict[str, str | int]:
    """DuckDB's memory limit and threads: the given values, else `CDP_DUCKDB_MEMORY_LIMIT` and
    `CDP_DUCKDB_THREADS`, else a quarter of the RAM (at most 4 GB) and every core."""
    memory = memory_limit or os.environ.get("CDP_DUCKDB_MEMORY_LIMIT") or default_memory_limit()
    count = threads or int(os.environ.get("CDP_DUCKDB_THREADS") or 0) or os.cpu_count() or 1
    return {"memory_limit": memory, "threads": int(count)}


@contextmanager
def file_lock(path: Path, timeout_s: float = 1800.0, holder: str = "another process") -> Iterator[None]:
    """An exclusive advisory lock on `path` (created if missing), shared by all processes; waits up to
    `timeout_s`, then names what it waited for."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"waited {timeout_s:.0f}s for {holder} to release {path}")
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def warehouse_lock(path: Path, timeout_s: float = 1800.0) -> Iterator[None]:
    """Exclusive, re-entrant (per thread) lock on the warehouse file, shared by all processes."""
    depth = getattr(_held, "depth", 0)
    if depth:
        _held.depth = depth + 1
        try:
            yield
        finally:
            _held.depth -= 1
        return
    with file_lock(Path(f"{path}.lock"), timeout_s, "the warehouse's current writer"):
        _held.depth = 1
        try:
            yield
        finally:
            _held.depth = 0


class DuckDBEngine:
    """The embedded DuckDB file: connections under the warehouse lock."""

    name = "duckdb"

    def __init__(self, resource: "WarehouseResource"):
        self.resource = resource

    def connect(self):
        return self.resource.connect()


class WarehouseResource(ConfigurableResource):
    """The warehouse of the configured engine; for DuckDB the file (default `$CDP_DATA_DIR/warehouse.duckdb`),
    with DuckDB's memory limit and threads for every connection (empty/0: `CDP_DUCKDB_MEMORY_LIMIT` /
    `CDP_DUCKDB_THREADS`, else defaults)."""

    path: str = ""
    memory_limit: str = ""  # DuckDB syntax: '2GB', '512MB'
    threads: int = 0

    def settings(self) -> dict[str, str | int]:
        return duckdb_settings(self.memory_limit, self.threads)

    def dbt_environment(self) -> dict[str, str]:
        """The variables dbt's profile (dbt/profiles.yml) reads its DuckDB settings from."""
        settings = self.settings()
        return {"CDP_DUCKDB_MEMORY_LIMIT": str(settings["memory_limit"]), "CDP_DUCKDB_THREADS": str(settings["threads"])}

    def engine(self):
        """The engine `CDP_ENGINE` names: `DuckDBEngine` (default) or `SparkEngine` on `CDP_SPARK_MASTER`."""
        if engine_name() == "spark":
            from cdp_resources.spark import SparkEngine

            return SparkEngine(spark_master(), spark_warehouse_dir())
        return DuckDBEngine(self)

    def file(self) -> Path:
        return Path(self.path).resolve() if self.path else warehouse_path()

    @contextmanager
    def lock(self, timeout_s: float = 1800.0) -> Iterator[None]:
        with warehouse_lock(self.file(), timeout_s):
            yield

    @contextmanager
    def connect(self, timeout_s: float = 1800.0) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection held under the warehouse lock (TimeoutError after waiting `timeout_s` for it); keep
        the block short."""
        with self.lock(timeout_s):
            con = duckdb.connect(str(self.file()), config=self.settings())
            try:
                yield con
            finally:
                con.close()


def quote_literal(text: str) -> str:
    """A SQL string literal (configuration values such as names and JSON paths; data values are bound)."""
    return "'" + text.replace("'", "''") + "'"


def quote_ident(name: str) -> str:
    """A quoted SQL identifier (configured table and column names)."""
    return '"' + name.replace('"', '""') + '"'


def replace_table(con: duckdb.DuckDBPyConnection, table: str, frame) -> int:
    """Atomically replace `schema.table` with a polars/arrow frame; returns its row count."""
    schema = table.split(".")[0]
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    con.register("_frame", frame)
    try:
        con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM _frame")
    finally:
        con.unregister("_frame")
    return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    schema, name = table.split(".")
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [schema, name],
        ).fetchone()[0]
    )


def rewrite_database(path: Path, settings: dict | None = None) -> dict[str, float]:
    """Copy the database into a fresh file and swap it in, so that deleted rows leave no bytes behind:
    DuckDB's DELETE and CHECKPOINT mark blocks free but do not overwrite them (its docs: compact by
    `COPY FROM DATABASE`). Call it holding the warehouse lock, with no connection open. Readers that
    opened the old file keep reading it until they close it; new connections see the new one.
    Returns the sizes before and after and the seconds it took."""
    started = time.monotonic()
    fresh = path.with_name(path.name + ".rewrite")
    for leftover in (fresh, Path(f"{fresh}.wal")):
        leftover.unlink(missing_ok=True)
    before = path.stat().st_size
    con = duckdb.connect(str(path), config=settings or duckdb_settings())
    try:
        catalog = con.execute("SELECT current_database()").fetchone()[0]
        con.execute("CHECKPOINT")
        con.execute(f"ATTACH '{str(fresh).replace(chr(39), chr(39) * 2)}' AS cdp_rewrite")
        con.execute(f'COPY FROM DATABASE "{catalog}" TO cdp_rewrite')
        con.execute("DETACH cdp_rewrite")
    finally:
        con.close()
    for leftover in (Path(f"{path}.wal"), Path(f"{fresh}.wal")):
        if leftover.exists():  # a WAL beside the new file would be replayed into it: never swap then
            fresh.unlink(missing_ok=True)
            raise RuntimeError(f"{leftover} is still there after a checkpoint; the database was not rewritten")
    with open(fresh, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(fresh, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return {"bytes_before": before, "bytes_after": path.stat().st_size, "seconds": round(time.monotonic() - started, 3)}
