"""The Spark engine (`CDP_ENGINE=spark`): one SparkSession per process on `CDP_SPARK_MASTER`, and tables as
plain Parquet directories under a warehouse location (by default `$CDP_DATA_DIR/spark-warehouse`).

Why Parquet directories and not a metastore: the pyspark wheel is the only source of jars here (no Delta,
no Iceberg), and an embedded Derby metastore admits one JVM at a time, while Dagster runs steps in
several processes. So the directory layout is the catalog, as Spark lays it out itself
(`<warehouse>/<schema>.db/<table>/`): every process sees every table, and a table is replaced by writing
a new directory and renaming it into place, so a reader never sees half a table.

Executors run our Python (identity rules in `applyInPandas`), so the session ships the driver's own
`cdp_assets` and `cdp_resources` packages to them (`addPyFile`): a cluster runs the code the driver runs,
whatever is installed on its machines. Third-party packages (polars, scipy, ...) must be installed where
the executors run; `PYSPARK_PYTHON` names that interpreter (default: this one).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

_sessions: dict[tuple, "SparkSession"] = {}
# Per session: the directory stamp of each table when the session's catalog last listed its files.
_listed: dict[int, dict[str, tuple[int, int]]] = {}
_lock = threading.Lock()
_PACKAGES = ("cdp_assets", "cdp_resources")
# What the platform's code relies on, whatever the cluster's configuration says.
_REQUIRED = {
    "spark.sql.session.timeZone": "UTC",  # warehouse times are naive UTC, as in DuckDB
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
    # A table registered from its directory (cdp_assets/dbt/spark.py) and dropped keeps its files: dbt's
    # rebuild of it (`create table ... as`) then writes into that directory.
    "spark.sql.legacy.allowNonEmptyLocationInCTAS": "true",
}
# Small by default (a laptop or a shared CI machine), set only where the cluster's spark-defaults.conf,
# PYSPARK_SUBMIT_ARGS or the engine's own conf leave them unset: a real cluster decides there.
_DEFAULTS = {
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.adaptive.enabled": "true",
}


class SparkEngine:
    """Tables and a session on one Spark master. Cheap to create: the session starts on first use."""

    name = "spark"

    def __init__(self, master: str, warehouse_dir: Path, conf: dict[str, str] | None = None):
        self.master = master
        self.warehouse_dir = Path(warehouse_dir).resolve()
        self.conf = dict(conf or {})

    def session(self) -> "SparkSession":
        """The process's session for this master and warehouse (created once, then reused)."""
        key = (self.master, str(self.warehouse_dir), tuple(sorted(self.conf.items())))
        with _lock:
            if key not in _sessions:
                for other in list(_sessions):  # one SparkContext per process: a new master replaces the old one
                    _stop(_sessions.pop(other))
                _sessions[key] = self._start()
            return _sessions[key]

    def _start(self) -> "SparkSession":
        from pyspark.sql import SparkSession

        builder = SparkSession.builder.appName("cdp")
        if self.master.startswith("sc://"):  # Spark Connect: the server owns the cluster and its catalog
            session = builder.remote(self.master).getOrCreate()
            session.addArtifacts(str(_code_archive()), pyfile=True)
            return session
        self.warehouse_dir.mkdir(parents=True, exist_ok=True)
        conf = {**_REQUIRED, "spark.sql.warehouse.dir": str(self.warehouse_dir),
                "spark.sql.catalogImplementation": "in-memory"}
        # PySpark's driver tells executors which Python to start from this variable only.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        if _on_this_machine(self.master):
            conf.update({"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"})
        conf.update(self.conf)
        for option, value in conf.items():
            builder = builder.config(option, value)
        session = builder.master(self.master).getOrCreate()
        configured = session.sparkContext.getConf()
        for option, value in _DEFAULTS.items():
            if not configured.contains(option):
                session.conf.set(option, value)
        session.sparkContext.setLogLevel("WARN")
        session.sparkContext.addPyFile(str(_code_archive()))
        return session

    def stop(self) -> None:
        with _lock:
            for key in [k for k in _sessions if k[0] == self.master]:
                _stop(_sessions.pop(key))

    # Tables: <warehouse>/<schema>.db/<table>/ of Parquet files.

    def location(self, table: str) -> Path:
        schema, name = _split(table)
        return self.warehouse_dir / f"{schema}.db" / name

    def table_exists(self, table: str) -> bool:
        return (self.location(table) / "_SUCCESS").exists() or any(self.location(table).glob("*.parquet"))

    def table(self, table: str) -> "DataFrame":
        """The table's current rows (a clear error naming it and its directory when it does not exist)."""
        if not self.table_exists(table):
            raise LookupError(f"Spark table {table} does not exist (no Parquet files in {self.location(table)})")
        return self.session().read.parquet(str(self.location(table)))

    def replace_tables(self, frames: dict[str, "DataFrame"]) -> dict[str, int]:
        """Write every frame in full, then swap each new directory in for its table: a failure before the
        swap leaves the old tables whole, and frames may read the tables they replace. Returns the row
        counts."""
        written: dict[str, Path] = {}
        counts = {}
        try:
            for table, frame in frames.items():
                target = self.location(table)
                target.parent.mkdir(parents=True, exist_ok=True)
                # (Spark ignores paths whose names start with "." or "_": a plain name for the new files)
                fresh = target.with_name(f"{target.name}--writing-{uuid.uuid4().hex[:8]}")
                frame.write.mode("error").parquet(str(fresh))
                written[table] = fresh
                counts[table] = _written_rows(fresh)
        except BaseException:
            for fresh in written.values():
                shutil.rmtree(fresh, ignore_errors=True)
            raise
        for table, fresh in written.items():
            target = self.location(table)
            retired = target.with_name(f"{target.name}--retired-{uuid.uuid4().hex[:8]}")
            if target.exists():
                os.replace(target, retired)
            os.replace(fresh, target)
            shutil.rmtree(retired, ignore_errors=True)
        self._refresh(list(written))
        return counts

    def append(self, table: str, frame: "DataFrame") -> None:
        """Add rows as new files beside the table's others (an append-only log)."""
        self.location(table).parent.mkdir(parents=True, exist_ok=True)
        frame.write.mode("append").parquet(str(self.location(table)))
        self._refresh([table])

    def _refresh(self, tables: list[str]) -> None:
        """Have the session's catalog list the files of tables just rewritten (it caches them)."""
        session = self.session()
        for table in tables:
            if session.catalog.tableExists(table):
                session.catalog.refreshTable(table)

    def register_tables(self) -> list[str]:
        """Register each `<schema>.db/<table>` directory of the warehouse that the catalog does not know yet (as a
        table at that location), so SQL can name it, and have Spark list the files of those it knows again (a
        table replaced since is a new directory); returns the names registered. The catalog is in memory, so
        each process registers the directories it finds."""
        session = self.session()
        seen = _listed.setdefault(id(session), {})
        registered = []
        for schema_dir in sorted(self.warehouse_dir.glob("*.db")):
            schema = schema_dir.name.removesuffix(".db")
            for table_dir in sorted(p for p in schema_dir.iterdir() if p.is_dir()):
                table = table_dir.name
                if not (schema.isidentifier() and table.isidentifier()) or not self.table_exists(f"{schema}.{table}"):
                    continue  # a directory being written or retired (`--` in its name), or no table
                # A replaced table is a new directory and an append adds a file: either changes this stamp.
                stat = table_dir.stat()
                stamp = (stat.st_ino, stat.st_mtime_ns)
                if not session.catalog.tableExists(f"{schema}.{table}"):
                    if not session.catalog.databaseExists(schema):
                        session.sql(f"CREATE DATABASE IF NOT EXISTS {schema}")
                    session.sql(f"CREATE TABLE {schema}.{table} USING parquet LOCATION '{table_dir.as_posix()}'")
                    registered.append(f"{schema}.{table}")
                elif seen.get(f"{schema}.{table}") != stamp:
                    session.catalog.refreshTable(f"{schema}.{table}")
                seen[f"{schema}.{table}"] = stamp
        return registered

    def sql(self, query: str, args: dict | list | None = None) -> "DataFrame":
        """A Spark SQL query over the warehouse's current tables (registered or refreshed first), values bound
        through `args` (`?` with a list, `:name` with a dict)."""
        self.register_tables()
        return self.session().sql(query, args=args)

    def frame(self, data) -> "DataFrame":
        """A Spark DataFrame of a polars frame or an Arrow table (columns and types kept)."""
        arrow = data.to_arrow() if hasattr(data, "to_arrow") else data
        return self.session().createDataFrame(arrow)

    @contextmanager
    def lock(self, timeout_s: float = 1800.0) -> Iterator[None]:
        """The warehouse's writer lock (a file beside it, shared by all processes on this machine): a stage
        that reads a table, then replaces it, holds it so no other process's change is lost in between."""
        from cdp_resources.warehouse import file_lock

        with file_lock(self.warehouse_dir.with_name(self.warehouse_dir.name + ".lock"), timeout_s,
                       "the Spark warehouse's current writer"):
            yield

    # Bookkeeping of incremental runs (cdp_assets/events/sql/state.sql on DuckDB), shared by the Spark stages.

    def new_batch(self, stage: str, now) -> int:
        """A new batch of core.batches (`validate.new_batch` on DuckDB), stamped `now` (naive UTC), for the rows
        a stage writes; hold `lock()`."""
        from datetime import datetime, timedelta

        from pyspark.sql import functions as F

        last = self.table("core.batches").agg(F.max("batch_id")).first()[0] if self.table_exists("core.batches") else None
        batch = (last or 0) + 1
        started = (now - datetime(1970, 1, 1)) // timedelta(microseconds=1)  # not the process's zone: naive UTC
        self.append("core.batches", self.session().createDataFrame(
            [(batch, stage, started)], "batch_id bigint, stage string, t bigint",
        ).select("batch_id", "stage", F.timestamp_micros("t").alias("started_at")))
        return batch

    def watermarks_with(self, consumer: str, batch: int) -> "DataFrame":
        """core.watermarks with `consumer`'s mark set to `batch`: a frame for `replace_tables`, so the mark moves in
        the same swap as the tables the consumer wrote."""
        from pyspark.sql import functions as F

        mark = self.session().createDataFrame([(consumer, batch)], "consumer string, batch_id bigint")
        if self.table_exists("core.watermarks"):
            kept = self.table("core.watermarks").select("consumer", "batch_id").where(F.col("consumer") != consumer)
            mark = kept.unionByName(mark)
        return mark


def _written_rows(directory: Path) -> int:
    """The rows of a table directory just written, from its Parquet footers (no Spark job)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(part).metadata.num_rows for part in directory.glob("*.parquet"))


def _split(table: str) -> tuple[str, str]:
    parts = table.split(".")
    if len(parts) != 2 or not all(part.isidentifier() for part in parts):
        raise ValueError(f"expected a table name schema.table, got {table!r}")
    return parts[0], parts[1]


def _on_this_machine(master: str) -> bool:
    if master.startswith("local"):
        return True
    host = master.removeprefix("spark://").split(":")[0]
    return host in ("127.0.0.1", "localhost")


_archive: Path | None = None


def _code_archive() -> Path:
    """A zip of the driver's own packages (once per process), for the executors' Python path."""
    global _archive
    if _archive is None or not _archive.exists():
        root = Path(__file__).resolve().parents[1]
        path = Path(tempfile.mkdtemp(prefix="cdp-code-")) / "cdp_code.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for package in _PACKAGES:
                for file in sorted((root / package).rglob("*.py")):
                    archive.write(file, file.relative_to(root).as_posix())
        _archive = path
    return _archive


def _stop(session: "SparkSession") -> None:
    """Stop a session and forget the code archive `addPyFile` put on this process's `sys.path`: Spark deletes
    its directory on stop, and a stale zip entry breaks whatever scans `sys.path` next in the process (dbt's
    plugin discovery raised KeyError on it)."""
    _listed.pop(id(session), None)
    session.stop()
    for entry in [p for p in sys.path if p.endswith(".zip") and not os.path.exists(p)]:
        sys.path.remove(entry)
        sys.path_importer_cache.pop(entry, None)

