"""The raw tables on Spark (`CDP_ENGINE=spark`): `raw.<source>`, `raw.rejected_files` and `raw.cursors` as Parquet
tables of the Spark warehouse, with DuckDB's columns (times as timestamps in the UTC session).

A Parquet table cannot delete rows in place, so where DuckDB deletes and inserts in one transaction, a file extract
here writes the records it reads to a staging directory beside the table (batch by batch, so memory stays bounded
as on DuckDB), then rewrites the table as its other partitions plus the staged records, together with
`raw.rejected_files`, in one `engine.replace_tables` (the old tables stay whole until both are written). The asset
holds `engine.lock()` around it (`SparkRawStore.lock`). A pull's page and the cursor after it are likewise one
`replace_tables` of the raw table and `raw.cursors`, under the lock: the cursor never runs ahead of the data.

The records are already polars frames on the driver (cdp_assets/sources/readers.py): they are staged with polars'
Parquet writer, which Spark reads as it reads the tables themselves (the warehouse directory is shared by the
driver and the executors, as everywhere in cdp_resources/spark.py).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import polars as pl
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cdp_assets.privacy.suppression import Suppressions

RAW = "partition_key string, file string, line_no bigint, record string, loaded_at timestamp"
REJECTED = "source string, file string, reason string, rejected_at timestamp"
CURSORS = "source string, cursor string, updated_at timestamp"
REJECTED_SCHEMA = pl.Schema({"source": pl.String, "file": pl.String, "reason": pl.String, "rejected_at": pl.Datetime("us")})


def _utc(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    """A naive-UTC time column as an instant, which Parquet and Spark keep as a Spark timestamp."""
    return frame.with_columns(pl.col(column).dt.replace_time_zone("UTC"))


class SparkRawStore:
    """The raw tables on a SparkEngine (cdp_resources/spark.py)."""

    def __init__(self, engine):
        self.engine = engine

    def lock(self, timeout_s: float = 1800.0):
        return self.engine.lock(timeout_s)

    def _table(self, table: str, ddl: str) -> DataFrame:
        """The table's rows, or none with its columns when it does not exist yet."""
        if self.engine.table_exists(table):
            return self.engine.table(table)
        return self.engine.session().createDataFrame([], ddl)

    def suppressions(self, salt: str) -> Suppressions:
        if not self.engine.table_exists("cdp.suppressions"):
            return Suppressions(salt, [])
        rows = self.engine.table("cdp.suppressions").select("identifier_hash").collect()
        return Suppressions(salt, [row[0] for row in rows])

    @contextmanager
    def replacing(self, table: str, keys: list[str] | None, loaded_at: datetime) -> Iterator["_StagedReplacement"]:
        """Replace the partitions `keys` (the whole table when None) with the records appended in the block and
        add the files rejected to raw.rejected_files, both swapped in when the block ends (the caller holds
        the lock)."""
        target = self.engine.location(table)
        staging = target.with_name(f"{target.name}--staging-{uuid.uuid4().hex[:8]}")
        replacement = _StagedReplacement(staging, loaded_at)
        try:
            yield replacement
            session = self.engine.session()
            if replacement.parts:
                staged = session.read.schema(RAW).parquet(str(staging))
            else:
                staged = session.createDataFrame([], RAW)
            if keys is not None:  # the table's other partitions stay
                staged = self._table(table, RAW).where(~F.col("partition_key").isin(keys)).unionByName(staged)
            frames = {table: staged}
            if replacement.rejected or not self.engine.table_exists("raw.rejected_files"):
                rejected = pl.DataFrame(replacement.rejected, schema=REJECTED_SCHEMA, orient="row")
                new = self.engine.frame(_utc(rejected, "rejected_at")).select(*_columns(REJECTED))
                frames["raw.rejected_files"] = self._table("raw.rejected_files", REJECTED).unionByName(new)
            replacement.total = self.engine.replace_tables(frames)[table]
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _ensure(self, table: str, ddl: str) -> None:
        if not self.engine.table_exists(table):
            self.engine.replace_tables({table: self.engine.session().createDataFrame([], ddl)})

    def stored_cursor(self, table: str, source: str) -> str | None:
        """Create the raw table and the cursor store if needed; the source's stored cursor."""
        with self.engine.lock():
            self._ensure(table, RAW)
            self._ensure("raw.cursors", CURSORS)
        rows = self.engine.table("raw.cursors").where(F.col("source") == source).select("cursor").collect()
        return rows[0][0] if rows else None

    def commit_page(self, table: str, source: str, frame: pl.DataFrame, cursor, now: datetime) -> None:
        """A page and the cursor after it, swapped in together. Each page rewrites the raw table (Parquet appends
        and the cursor's rewrite would be two writes, and a crash between them would load rows again): fine at a
        pull's sizes here, what a table format with transactions (Delta, Iceberg) would make cheap."""
        page = self.engine.frame(_utc(frame, "loaded_at")).select(*_columns(RAW))
        moved = self.engine.frame(_utc(pl.DataFrame(
            {"source": [source], "cursor": [None if cursor is None else str(cursor)], "updated_at": [now]},
            schema={"source": pl.String, "cursor": pl.String, "updated_at": pl.Datetime("us")}), "updated_at"))
        with self.engine.lock():
            cursors = self._table("raw.cursors", CURSORS).where(F.col("source") != source)
            frames = {"raw.cursors": cursors.unionByName(moved.select(*_columns(CURSORS)))}
            if len(frame):  # a page with nothing new moves the cursor only (the table is rewritten whole)
                frames[table] = self._table(table, RAW).unionByName(page)
            self.engine.replace_tables(frames)

    def record_digests(self, table: str) -> set[str]:
        rows = self.engine.table(table).select(F.md5("record")).distinct().collect()
        return {row[0] for row in rows}

    def keys_at(self, table: str, key: str, column: str, cursor: str) -> set[str]:
        frame = self.engine.table(table)
        at = F.get_json_object("record", f"$.{column}") == F.lit(cursor)
        return {row[0] for row in frame.where(at).select(F.get_json_object("record", f"$.{key}")).collect()}

    def row_count(self, table: str) -> int:
        return self.engine.table(table).count()

    def partition_counts(self, table: str) -> tuple[dict[str, int], list[str]] | None:
        if not self.engine.table_exists(table):
            return None
        frame = self.engine.table(table)
        counts = {row[0]: row[1] for row in frame.groupBy("partition_key").count().collect()}
        newest = frame.where(F.col("loaded_at") == frame.select(F.max("loaded_at")).first()[0])
        return counts, [row[0] for row in newest.select("partition_key").distinct().collect()]

    def loaded_files(self, source: str, timeout_s: float) -> dict[str, set[str]]:
        table = f"raw.{source}"
        if not self.engine.table_exists(table):
            return {}
        rows = self.engine.table(table).groupBy("partition_key").agg(F.collect_set("file")).collect()
        return {row[0]: set(row[1]) for row in rows}


def _columns(ddl: str) -> list:
    return [F.col(name).cast(kind) for name, kind in (part.strip().split(" ") for part in ddl.split(","))]


class _StagedReplacement:
    """The records of a replacement, as Parquet files in a staging directory until the swap."""

    def __init__(self, staging, loaded_at: datetime):
        self.staging, self.loaded_at = staging, loaded_at
        self.parts = 0
        self.rejected: list[tuple] = []
        self.total = 0

    def append(self, records: pl.DataFrame) -> None:
        if len(records):
            self.staging.mkdir(parents=True, exist_ok=True)
            stamped = records.with_columns(pl.lit(self.loaded_at, pl.Datetime("us")).alias("loaded_at"))
            stamped.pipe(_utc, "loaded_at").write_parquet(self.staging / f"part-{self.parts:05d}.parquet")
            self.parts += 1

    def reject(self, rows: list[tuple[str, str, str, datetime]]) -> None:
        self.rejected += rows
