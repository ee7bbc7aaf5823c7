"""Where the extracts keep what they read: `raw.<source>`, `raw.rejected_files` and `raw.cursors`, on the
warehouse's engine.

Reading and splitting input files is the same on every engine (cdp_assets/sources/assets.py, readers.py); only
storing and reading back differ. `raw_store(engine)` is the one place that chooses: the DuckDB file (below) or
the Spark warehouse's Parquet tables (cdp_assets/sources/spark.py), both with the same methods and tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import polars as pl

from cdp_assets.privacy.suppression import Suppressions, load_suppressions
from cdp_resources.warehouse import table_exists

RAW_DDL = """CREATE TABLE IF NOT EXISTS {table} (
    partition_key VARCHAR, file VARCHAR, line_no BIGINT, record VARCHAR, loaded_at TIMESTAMP)"""
REJECTED_DDL = """CREATE TABLE IF NOT EXISTS raw.rejected_files (
    source VARCHAR, file VARCHAR, reason VARCHAR, rejected_at TIMESTAMP)"""
CURSORS_DDL = "CREATE TABLE IF NOT EXISTS raw.cursors (source VARCHAR PRIMARY KEY, cursor VARCHAR, updated_at TIMESTAMP)"


def raw_store(engine):
    """The raw tables on the warehouse's engine (`WarehouseResource.engine()`)."""
    if engine.name == "spark":
        from cdp_assets.sources.spark import SparkRawStore

        return SparkRawStore(engine)
    return DuckDBRawStore(engine.resource)


class DuckDBRawStore:
    """The raw tables in the DuckDB file; every write is one transaction."""

    def __init__(self, warehouse):
        self.warehouse = warehouse

    def lock(self, timeout_s: float = 1800.0):
        """The writer lock a file extract holds while it lists, reads, rejects and stores (re-entrant)."""
        return self.warehouse.lock(timeout_s)

    def suppressions(self, salt: str) -> Suppressions:
        with self.warehouse.connect() as con:
            return load_suppressions(con, salt)

    @contextmanager
    def replacing(self, table: str, keys: list[str] | None, loaded_at: datetime) -> Iterator["_DuckDBReplacement"]:
        """Replace the partitions `keys` (the whole table when None) with the records appended in the block,
        and record the files rejected, in one transaction committed when the block ends."""
        with self.warehouse.connect() as con:
            con.execute("CREATE SCHEMA IF NOT EXISTS raw")
            con.execute(RAW_DDL.format(table=table))
            con.execute(REJECTED_DDL)
            con.execute("BEGIN")
            if keys is None:
                con.execute(f"DELETE FROM {table}")
            else:
                con.execute(f"DELETE FROM {table} WHERE partition_key IN (SELECT unnest(?))", [keys])
            replacement = _DuckDBReplacement(con, table, loaded_at)
            yield replacement
            if replacement.rejected:
                con.executemany("INSERT INTO raw.rejected_files VALUES (?, ?, ?, ?)", replacement.rejected)
            con.execute("COMMIT")
            replacement.total = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    def stored_cursor(self, table: str, source: str) -> str | None:
        """Create the raw table and the cursor store if needed; the source's stored cursor."""
        with self.warehouse.connect() as con:
            con.execute("CREATE SCHEMA IF NOT EXISTS raw")
            con.execute(RAW_DDL.format(table=table))
            con.execute(CURSORS_DDL)
            row = con.execute("SELECT cursor FROM raw.cursors WHERE source = ?", [source]).fetchone()
        return row[0] if row else None

    def commit_page(self, table: str, source: str, frame: pl.DataFrame, cursor, now: datetime) -> None:
        """A page and the cursor after it, in one transaction: the cursor never runs ahead of the data."""
        with self.warehouse.connect() as con:
            con.execute("BEGIN")
            con.execute(f"INSERT INTO {table} SELECT * FROM frame")
            con.execute("INSERT OR REPLACE INTO raw.cursors VALUES (?, ?, ?)", [source, cursor, now])
            con.execute("COMMIT")

    def record_digests(self, table: str) -> set[str]:
        """The md5 (hex) of every record held."""
        with self.warehouse.connect() as con:
            return {row[0] for row in con.execute(f"SELECT DISTINCT md5(record) FROM {table}").fetchall()}

    def keys_at(self, table: str, key: str, column: str, cursor: str) -> set[str]:
        """The `key` of each record whose `column` is exactly `cursor` (both JSON fields, as text)."""
        with self.warehouse.connect() as con:
            return {
                row[0]
                for row in con.execute(
                    f"SELECT record ->> '$.{key}' FROM {table} WHERE record ->> '$.{column}' = ?", [cursor]
                ).fetchall()
            }

    def row_count(self, table: str) -> int:
        with self.warehouse.connect() as con:
            return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    def partition_counts(self, table: str) -> tuple[dict[str, int], list[str]] | None:
        """Records per partition key and the keys of the newest load (None when the table does not exist)."""
        quoted = f'raw."{table.split(".")[1]}"'
        with self.warehouse.connect() as con:
            if not table_exists(con, table):
                return None
            counts = dict(con.execute(f"SELECT partition_key, count(*) FROM {quoted} GROUP BY 1").fetchall())
            newest = con.execute(
                f"SELECT partition_key FROM {quoted} WHERE loaded_at = (SELECT max(loaded_at) FROM {quoted}) GROUP BY 1"
            ).fetchall()
        return counts, [row[0] for row in newest]

    def loaded_files(self, source: str, timeout_s: float) -> dict[str, set[str]]:
        """The files whose records `raw.<source>` holds, per partition key (TimeoutError when busy)."""
        if not self.warehouse.file().exists():
            return {}
        with self.warehouse.connect(timeout_s=timeout_s) as con:
            if not table_exists(con, f"raw.{source}"):
                return {}
            rows = con.execute(f'SELECT partition_key, list(DISTINCT file) FROM raw."{source}" GROUP BY partition_key').fetchall()
        return {key: set(files) for key, files in rows}


class _DuckDBReplacement:
    def __init__(self, con, table: str, loaded_at: datetime):
        self.con, self.table, self.loaded_at = con, table, loaded_at
        self.rejected: list[tuple] = []
        self.total = 0

    def append(self, records: pl.DataFrame) -> None:
        """Records (partition_key, file, line_no, record), stamped with the load's time."""
        if len(records):
            self.con.execute(f"INSERT INTO {self.table} BY NAME SELECT *, ?::TIMESTAMP AS loaded_at FROM records", [self.loaded_at])

    def reject(self, rows: list[tuple[str, str, str, datetime]]) -> None:
        """Files rejected (source, file, reason, rejected_at)."""
        self.rejected += rows
