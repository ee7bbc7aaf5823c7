"""`cdp run` on a real Spark cluster gives what `cdp run` gives on DuckDB: the engines' differential test.

One generated shop (landing files, CDC, CSV imports, the sample orders API) is copied to two data directories and
run through every stage, `run_everything` as `cdp run` calls it, once with `CDP_ENGINE=duckdb` (the oracle) and
once with `CDP_ENGINE=spark` on a standalone cluster (tests/spark_cluster.py), both at one clock (`CDP_NOW`, so
time windows and days-since traits read the same moment) and each delivering to its own webhook receiver. Every
public table (contract §4) is then compared row for row (engine bookkeeping such as row hashes and batch numbers
left out), and so are the items the receivers accepted. A second run over the same inputs must change nothing and
deliver nothing on either engine. Marked `spark`: `-m 'not spark'` skips it locally; CI runs it.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from spark_tables import quote, sorted_rows
from test_activation import SECRET, Receiver

from cdp_assets.runner import PUBLIC_TABLES, RunSummary, run_everything

pytestmark = pytest.mark.spark

# Engine bookkeeping: the batch that wrote a row and change-detection hashes (each engine's hash function).
BOOKKEEPING = {"_batch_id", "row_hash"}
# Times of the real world, not the run's clock: when dbt's snapshot ran (and the version ids it derives from it),
# when an item was enqueued and sent (retries and backoff need real time). False: left out; True: compared only as
# whether it is set (the current version, an item sent).
REAL_TIMES = {"cdp.profile_history": {"valid_from": False, "version_updated_at": False, "version_id": False,
                                      "valid_to": True},
              "cdp.deliveries": {"enqueued_at": False, "sent_at": True}}
# Each run serves the sample orders API on a port of its own, and records name it as their file.
API_URL = re.compile(r"http://127\.0\.0\.1:\d+")


def without_times(table: str, columns: list[str], rows: list[tuple]) -> list[tuple]:
    """Rows without the columns REAL_TIMES names for `table` (those it keeps as whether they are null)."""
    times = REAL_TIMES.get(table, {})
    return [tuple(v is None if times[c] else None for c, v in zip(columns, row) if c in times and times[c])
            + tuple(v for c, v in zip(columns, row) if c not in times) for row in rows]


def same_api(rows: list[tuple]) -> list[tuple]:
    """Rows with the API's URL port-free and JSON text as its value (Spark's VARIANT sorts an object's keys)."""
    def plain(value):
        if not isinstance(value, str):
            return value
        if value.startswith("{"):
            try:
                value = json.dumps(json.loads(value), sort_keys=True)
            except ValueError:
                pass
        return API_URL.sub("http://127.0.0.1:API", value)
    return sorted((tuple(plain(v) for v in row) for row in rows), key=repr)


def cdp_run(data_dir: Path, engine: dict[str, str], clock: str, receiver: Receiver) -> RunSummary:
    patch = pytest.MonkeyPatch()
    for name in ("CDP_ENGINE", "CDP_SPARK_MASTER"):
        patch.delenv(name, raising=False)
    settings = {"CDP_DATA_DIR": str(data_dir), "CDP_NOW": clock, "CDP_MARKETING_WEBHOOK_URL": receiver.url,
                "CDP_MARKETING_WEBHOOK_SECRET": SECRET, **engine}
    for name, value in settings.items():
        patch.setenv(name, value)
    try:
        summary = run_everything(progress=lambda *_: None)
    finally:
        patch.undo()
    assert summary.success, f"{engine.get('CDP_ENGINE', 'duckdb')}: {summary.failures}"
    return summary


def duckdb_table(data_dir: Path, table: str) -> tuple[list[str], list[tuple]]:
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        columns = [c for c, in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema || '.' || table_name = ? "
            "ORDER BY ordinal_position", [table]).fetchall() if c not in BOOKKEEPING]
        return columns, sorted_rows(con.execute(f"SELECT {', '.join(map(quote, columns))} FROM {table}").to_arrow_table())


def spark_table(data_dir: Path, master: str, table: str, columns: list[str] | None = None) -> tuple[list[str], list[tuple]]:
    from cdp_resources.spark import SparkEngine

    frame = SparkEngine(master, data_dir / "spark-warehouse").table(table)
    columns = columns or [c for c in frame.columns if c not in BOOKKEEPING]
    return columns, sorted_rows(frame.select(*[f"`{c}`" for c in columns]).toArrow())


def assert_public_tables_equal(duck_dir: Path, spark_dir: Path, master: str) -> dict[str, int]:
    """Every public table DuckDB has, on Spark with the same columns and rows; returns the row counts."""
    counts = {}
    for table in [f"cdp.{name}" for name in PUBLIC_TABLES]:
        columns, expected = duckdb_table(duck_dir, table)
        if not columns:
            continue
        spark_columns, rows = spark_table(spark_dir, master, table)
        assert sorted(spark_columns) == sorted(columns), table
        if spark_columns != columns:  # same set, another order: compare in DuckDB's order
            _, rows = spark_table(spark_dir, master, table, columns)
        rows, expected = same_api(without_times(table, columns, rows)), same_api(without_times(table, columns, expected))
        assert rows == expected, (
            f"{table}: {len(set(rows) ^ set(expected))} rows differ, e.g. Spark {sorted(set(rows) - set(expected), key=repr)[:2]} "
            f"vs DuckDB {sorted(set(expected) - set(rows), key=repr)[:2]}")
        counts[table] = len(rows)
    return counts


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """The same generated shop in two data directories, and the clock both runs read."""
    from cdp_assets.sample_data import generate_sample_data

    root = tmp_path_factory.mktemp("spark-run")
    end = datetime(2026, 11, 20, 12)
    generate_sample_data(root / "duckdb", events=1500, seed=7, end=end, days=7, log=lambda *_: None)
    shutil.copytree(root / "duckdb", root / "spark")
    return root / "duckdb", root / "spark", (end + timedelta(minutes=30)).isoformat(sep=" ")


def test_cdp_run_on_spark_equals_cdp_run_on_duckdb(shop, spark_cluster):
    duck_dir, spark_dir, clock = shop
    spark = {"CDP_ENGINE": "spark", "CDP_SPARK_MASTER": spark_cluster.master_url}
    duck_hook, spark_hook = Receiver(), Receiver()
    try:
        duck_summary = cdp_run(duck_dir, {}, clock, duck_hook)
        spark_summary = cdp_run(spark_dir, spark, clock, spark_hook)
        assert not (spark_dir / "warehouse.duckdb").exists(), "a Spark run must not create the DuckDB file"
        counts = assert_public_tables_equal(duck_dir, spark_dir, spark_cluster.master_url)
        # (cdp.identity_merges is compared too; a first resolution merges no one it had resolved before)
        for table in ("cdp.events", "cdp.id_map", "cdp.profiles", "cdp.profile_history", "cdp.segment_membership",
                      "cdp.segment_changes", "cdp.deliveries"):
            assert counts.get(table), f"{table}: the shop gives it no rows to compare"
        assert spark_summary.tables == duck_summary.tables
        assert spark_summary.segments == duck_summary.segments
        assert duck_hook.accepted, "the webhook received nothing to compare"
        assert sorted_items(spark_hook.accepted) == sorted_items(duck_hook.accepted)

        # The same inputs again: nothing changes, nothing is delivered twice, on either engine.
        delivered = len(duck_hook.accepted), len(spark_hook.accepted)
        cdp_run(duck_dir, {}, clock, duck_hook)
        cdp_run(spark_dir, spark, clock, spark_hook)
        assert (len(duck_hook.accepted), len(spark_hook.accepted)) == delivered
        assert assert_public_tables_equal(duck_dir, spark_dir, spark_cluster.master_url) == counts
    finally:
        duck_hook.close()
        spark_hook.close()


def sorted_items(items: list[dict]) -> list[str]:
    return sorted(json.dumps(item, sort_keys=True) for item in items)
