"""Validation on Spark (cdp_assets/events/spark.py) gives DuckDB's validated layer, row for row.

A small generated shop is extracted and validated on DuckDB (the oracle); its raw tables are copied to the Spark
warehouse, and the events group (the validation asset and its checks) is materialized with CDP_ENGINE=spark on a
real standalone cluster (tests/spark_cluster.py). Every table validation writes is compared with DuckDB's (the
change-detection hash and batch columns aside, JSON compared as values), laid out as copy_to_spark lays out
DuckDB's; Spark judges in chunks of 500 raw records, whose event ids overlap, against DuckDB in one chunk (one
merge per source on Spark). Then a second raw batch (an event changed, one removed, a CRM row updated, an order gone) is validated
incrementally on both, and the tables, change logs included, are compared again. Last, a failure mode: rows
lost from the Spark quarantine turn the blocking reconcile check red.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest
from spark_tables import copy_to_spark, quote, sorted_rows

pytestmark = pytest.mark.spark

RAW = ["raw.web", "raw.crm_customers", "raw.orders", "raw.pos"]
TABLE_SOURCES = ["crm_customers", "orders", "pos"]
COMPARED = [
    "cdp.events", "core.event_duplicates", "core.events_removed", "cdp.quarantine", "cdp.tracking_plan_violations",
    "validated.reconciliation", "core.validated_partitions",
    *[f"validated.{s}{suffix}" for s in TABLE_SOURCES for suffix in ("", "_changes", "_removed")],
]
BOOKKEEPING = {"row_hash", "_batch_id", "_removed_batch_id"}
JSON_COLUMNS = {"properties", "traits", "context"}
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def materialize_stage(selection, tags=None):
    from dagster import DagsterInstance, materialize

    from cdp_assets.definitions import defs
    from cdp_assets.sample_orders_api import orders_api_for_run
    from cdp_resources.settings import data_dir

    resources = defs.resources
    with orders_api_for_run(resources["orders_api"], data_dir()) as (orders_api, _):
        return materialize(list(defs.assets) + list(defs.asset_checks), selection=selection,
                           resources={**resources, "orders_api": orders_api}, instance=DagsterInstance.ephemeral(),
                           tags=tags or {}, run_config=QUIET, raise_on_error=True)


def validate(engine: str, master: str = "") -> dict:
    """Materialize the events group on `engine`; returns what the run says it judged, per source, and its checks."""
    from dagster import AssetSelection

    from cdp_assets.refresh import PARSE_VIEWS

    patch = pytest.MonkeyPatch()
    patch.setenv("CDP_ENGINE", engine)
    if master:
        patch.setenv("CDP_SPARK_MASTER", master)
    try:
        result = materialize_stage(AssetSelection.groups("events") - PARSE_VIEWS)
    finally:
        patch.undo()
    quarantine = next(m for m in result.get_asset_materialization_events()
                      if m.asset_key.to_user_string() == "cdp/quarantine").materialization.metadata
    events = next(m for m in result.get_asset_materialization_events()
                  if m.asset_key.to_user_string() == "cdp/events").materialization.metadata
    return {
        "this_run": quarantine["this_run"].value,
        "reasons": quarantine["reasons"].value,
        "great_expectations": events["great_expectations"].value,
        "checks": {c.check_name: c.passed for c in result.get_asset_check_evaluations()},
    }


def extract_sources() -> None:
    from dagster import AssetSelection
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from cdp_assets.config import load_sources
    from cdp_assets.definitions import defs
    from cdp_assets.runner import partitions_present
    from cdp_assets.sources.assets import raw_key

    for source in load_sources().values():
        tags = {}
        if source.partitions != "none":
            keys = partitions_present(source, defs.resources["landing_zone"])
            tags = {ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]}
        materialize_stage(AssetSelection.assets(raw_key(source.name)), tags)


def canonical(column: str, value):
    """JSON as values (engines write the same JSON with other spacing and key order); the upper bound of event
    times in a reason is the run's own clock (now + 1 day), so not compared."""
    if column in JSON_COLUMNS and isinstance(value, str):
        return json.dumps(json.loads(value), sort_keys=True)
    if column == "reasons" and value is not None:
        return [re.sub(r"(is outside \[[^,]*, )[^\]]*\]", r"\1<run time + 1 day>]", reason) for reason in value]
    return value


def rows_of(arrow) -> list[tuple]:
    columns = [c for c in arrow.column_names if c not in BOOKKEEPING]
    table = arrow.select(columns)
    fixed = {c: [canonical(c, v) for v in table.column(c).to_pylist()] for c in columns}
    import pyarrow as pa

    return sorted_rows(pa.table(fixed)) if columns else []


def duckdb_table(con, table: str):
    return con.execute(f"SELECT * FROM {table}").fetch_arrow_table()


def assert_tables_equal(data_dir: Path, engine, layout) -> None:
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        for table in COMPARED:
            expected = duckdb_table(con, table)
            frame = engine.table(table)
            # The layout copy_to_spark gives DuckDB's table (what the dbt Spark models read).
            assert [(f.name, f.dataType.simpleString()) for f in frame.schema.fields] == layout(con, table), table
            got = rows_of(frame.toArrow())
            want = rows_of(expected)
            assert got == want, f"{table}: {len(set(got) ^ set(want))} rows differ, e.g. " \
                                f"{sorted(set(got) - set(want), key=repr)[:2]} vs {sorted(set(want) - set(got), key=repr)[:2]}"


def several_chunks_raw(data_dir: Path) -> None:
    """Copies of events placed in other hours, so that chunks of a few hundred records share event ids: the
    first hour's event again in the last hour (same content: the first copy stays the winner), and another
    first-hour event in the last hour with other properties and received a minute earlier (the later chunk's copy
    wins: the chunk-by-chunk merges would insert, then replace the first chunk's copy)."""
    with duckdb.connect(str(data_dir / "warehouse.duckdb")) as con:
        first, last = con.execute("SELECT min(partition_key), max(partition_key) FROM raw.web").fetchone()
        copies = con.execute(
            "SELECT file, line_no, record FROM raw.web WHERE partition_key = ? AND json_valid(record) "
            "AND json_extract_string(record, '$.messageId') IS NOT NULL AND json_extract_string(record, '$.receivedAt') IS NOT NULL ORDER BY file, line_no LIMIT 2",
            [first]).fetchall()
        assert len(copies) == 2, "the first hour holds too few events"
        file = con.execute("SELECT min(file) FROM raw.web WHERE partition_key = ?", [last]).fetchone()[0]
        same, changed = copies[0][2], json.loads(copies[1][2])
        received = datetime.fromisoformat(changed["receivedAt"].replace("Z", "+00:00"))
        changed["receivedAt"] = (received - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
        changed["properties"] = {**(changed.get("properties") or {}), "replayed": True}
        loaded = con.execute("SELECT max(loaded_at) FROM raw.web WHERE partition_key = ?", [last]).fetchone()[0]
        for line_no, record in ((10**6, same), (10**6 + 1, json.dumps(changed))):
            con.execute("INSERT INTO raw.web VALUES (?, ?, ?, ?, ?)", [last, file, line_no, record, loaded])


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A small shop whose web events hold duplicates across hours (several_chunks_raw), extracted and validated on
    DuckDB with every source's changed partitions in one chunk (the oracle of Spark's one merge per source); yields
    (data directory, validation). The module's tests run on DuckDB in one chunk too unless they say otherwise."""
    from cdp_assets.events import validate as validate_module
    from cdp_assets.sample_data import generate_sample_data

    data_dir = tmp_path_factory.mktemp("spark-validation") / "data"
    patch = pytest.MonkeyPatch()
    patch.setenv("CDP_DATA_DIR", str(data_dir))
    patch.setenv("CDP_ENGINE", "duckdb")
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0, tzinfo=None)
    generate_sample_data(data_dir, events=1500, seed=11, end=end, log=lambda *_: None)
    extract_sources()
    try:
        several_chunks_raw(data_dir)
        patch.setattr(validate_module, "CHUNK_ROWS", 10**9)
        yield data_dir, validate("duckdb")
    finally:
        patch.undo()


def copy_raw(data_dir: Path, engine) -> None:
    for table in RAW:
        shutil.rmtree(engine.location(table), ignore_errors=True)
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        copy_to_spark(con, engine, RAW)


class Layout:
    """Where copy_to_spark writes a DuckDB table to read its Spark layout (one session per process: no second engine)."""

    def __init__(self, root: Path):
        self.root = root

    def location(self, table: str) -> Path:
        schema, name = table.split(".")
        return self.root / f"{schema}.db" / name


def second_batch(data_dir: Path) -> None:
    """New raw content, as a re-extract would leave it: in one hour of web events one event's properties changed and
    another line gone, a CRM customer's update appended, an order gone."""
    later = datetime.now(timezone.utc).replace(tzinfo=None)
    with duckdb.connect(str(data_dir / "warehouse.duckdb")) as con:
        hour = con.execute("SELECT partition_key FROM raw.web GROUP BY 1 HAVING count(*) > 5 ORDER BY 1 LIMIT 1").fetchone()[0]
        first, second = con.execute(
            "SELECT file, line_no FROM raw.web WHERE partition_key = ? AND json_valid(record) AND record LIKE '%\"properties\"%' "
            "ORDER BY file, line_no LIMIT 2", [hour]).fetchall()
        con.execute("UPDATE raw.web SET record = json_merge_patch(record, '{\"properties\": {\"changed\": true}}'), loaded_at = ? "
                    "WHERE partition_key = ? AND file = ? AND line_no = ?", [later, hour, *first])
        con.execute("DELETE FROM raw.web WHERE partition_key = ? AND file = ? AND line_no = ?", [hour, *second])
        key, file, line, record = con.execute(
            "SELECT partition_key, file, line_no, record FROM raw.crm_customers "
            "WHERE record LIKE '%\"op\":\"c\"%' AND json_valid(record) ORDER BY file, line_no LIMIT 1").fetchone()
        payload = json.loads(record)["payload"]
        payload.update(op="u", before=payload["after"], after={**payload["after"], "city": "Reykjavik"})
        payload["source"]["lsn"] += 10**9
        con.execute("INSERT INTO raw.crm_customers VALUES (?, ?, ?, ?, ?)",
                    [key, file, 10**6, json.dumps({"payload": payload}), later])
        con.execute("DELETE FROM raw.orders WHERE line_no = (SELECT min(line_no) FROM raw.orders WHERE json_valid(record))")


def test_validation_on_spark_equals_duckdb(shop, spark_cluster):
    from cdp_assets.events import validate as validate_module
    from cdp_resources import WarehouseResource
    from cdp_resources.spark import SparkEngine

    data_dir, duck_first = shop
    engine = SparkEngine(spark_cluster.master_url, data_dir / "spark-warehouse")  # what the resource makes
    scratch = Layout(data_dir / "spark-layout")

    def layout(con, table: str) -> list[tuple[str, str]]:
        shutil.rmtree(scratch.location(table), ignore_errors=True)
        copy_to_spark(con, scratch, [table])
        return [(f.name, f.dataType.simpleString()) for f in engine.session().read.parquet(str(scratch.location(table))).schema.fields]

    # Spark judges in chunks (here of 500 raw records: three or more per events source) and merges each source's
    # verdicts once: its tables equal DuckDB's with all partitions in one chunk, row for row, change logs included.
    # The chunks share event ids: an event's later copy in a later chunk, and a later chunk's copy that wins over
    # an earlier chunk's.
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        hours = con.execute("SELECT partition_key, count(*) FROM raw.web GROUP BY 1 ORDER BY 1").pl()
        duplicates = con.execute("SELECT count(*) FROM core.event_duplicates WHERE line_no >= 1000000").fetchone()[0]
        replaced = con.execute("SELECT count(*) FROM cdp.events WHERE line_no = 1000001").fetchone()[0]
    assert len(list(validate_module.chunks(hours, 500))) >= 3
    assert (duplicates, replaced) == (1, 1)  # the same copy waits, the earlier-received copy wins
    copy_raw(data_dir, engine)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(validate_module, "CHUNK_ROWS", 500)
        spark_first = validate("spark", spark_cluster.master_url)
    # (the Great Expectations report is the last chunk's, so it is compared in the second round, in one chunk)
    assert {k: v for k, v in spark_first.items() if k != "great_expectations"} == \
        {k: v for k, v in duck_first.items() if k != "great_expectations"}
    assert all(spark_first["checks"].values()), spark_first["checks"]
    assert spark_first["great_expectations"]["web"]["success"] is False  # the shop's bad events: GE says so too
    assert_tables_equal(data_dir, engine, layout)
    assert not list((data_dir / "spark-warehouse" / "_staging").glob("*")), "staged verdicts left behind"

    # The incremental path: only the changed partitions are judged again; changed and removed rows are logged.
    second_batch(data_dir)
    duck_second = validate("duckdb")
    copy_raw(data_dir, engine)
    spark_second = validate("spark", spark_cluster.master_url)
    assert duck_second["this_run"]["web"]["partitions_judged"] == 1
    assert spark_second == duck_second
    assert_tables_equal(data_dir, engine, layout)
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        for log in ("core.events_removed", "validated.crm_customers_removed", "validated.orders_removed"):
            assert con.execute(f"SELECT count(*) FROM {log}").fetchone()[0] > 0, f"{log}: the second batch removed nothing"

    # A failure mode: quarantined records lost on Spark are caught by the blocking reconcile check.
    from cdp_assets.events.checks import records_reconcile

    quarantine = engine.table("cdp.quarantine")
    engine.replace_tables({"cdp.quarantine": quarantine.limit(max(quarantine.count() - 3, 0))})
    patch = pytest.MonkeyPatch()
    patch.setenv("CDP_ENGINE", "spark")
    patch.setenv("CDP_SPARK_MASTER", spark_cluster.master_url)
    try:
        result = records_reconcile(warehouse=WarehouseResource())
    finally:
        patch.undo()
    assert not result.passed
    assert "lost" in result.metadata["problems"].value


def test_debezium_encodings_parse_on_spark(shop, spark_cluster):
    """The CDC parse view's Spark SQL (dbt/macros/debezium.sql spark__*) decodes every Debezium encoding as the
    DuckDB test's oracle says (tests/test_debezium.py: Python's datetime and Decimal arithmetic)."""
    from decimal import Decimal

    import polars as pl
    from tests.test_debezium import EPOCH, TYPES, envelope, unscaled

    from cdp_assets.dbt.project import run_dbt
    from cdp_assets.dbt.vars import dbt_vars
    from cdp_assets.events.spark import _arrow, _built_views, _naive
    from cdp_assets.events.validate import unpack_typed
    from cdp_resources.spark import SparkEngine

    data_dir, _ = shop
    engine = SparkEngine(spark_cluster.master_url, data_dir / "spark-warehouse")
    moment = datetime(2026, 11, 27, 10, 15, 30, 123456)
    micros = (moment - EPOCH) // timedelta(microseconds=1)
    days = (moment.date() - EPOCH.date()).days
    of_day = (moment - moment.replace(hour=0, minute=0, second=0, microsecond=0)) // timedelta(microseconds=1)
    after = {
        "id": 1, "born": days, "kday": days, "wake_ms": of_day // 1000, "kwake": of_day // 1000, "wake_us": of_day,
        "wake_ns": of_day * 1000 + 789, "ms_at": micros // 1000, "kafka_at": micros // 1000, "us_at": micros,
        "ns_at": micros * 1000 + 789, "zoned_at": "2026-11-27T11:15:30.123456+01:00",
        "price": unscaled(Decimal("-1234567.89"), 2),
        "price_text": unscaled(Decimal("12345678901234567890123456.123456789012"), 12),
        "balance": {"scale": 3, "value": unscaled(Decimal("0.125"), 3)}, "plain_at": micros,
    }
    lines = [envelope(after, {"price": 2, "price_text": 12}, 1),
             envelope({"id": 2, "us_at": 9223372036825200000, "price": "not base64!"}, {"price": 2}, 2),
             envelope({"id": 3, "us_at": micros, "price": 1234}, {}, 3, with_schema=False)]
    raw = pl.DataFrame({"partition_key": [""] * 3, "file": ["f.jsonl"] * 3, "line_no": [1, 2, 3], "record": lines,
                        "loaded_at": [datetime(2026, 1, 1)] * 3})
    engine.replace_tables({"raw.pg_types": engine.frame(raw.with_columns(pl.col("loaded_at").dt.replace_time_zone("UTC")))})
    engine.register_tables()
    vars_ = dbt_vars()
    vars_["sources"]["pg_types"] = {**vars_["sources"]["crm_customers"], "columns": TYPES.columns, "primary_key": "id"}
    patch = pytest.MonkeyPatch()
    patch.setenv("CDP_DATA_DIR", str(data_dir))
    patch.setenv("CDP_SPARK_MASTER", spark_cluster.master_url)
    try:
        run_dbt(["run", "--target", "spark", "--select", "path:models/staging/parsed"], vars_)
    finally:
        patch.undo()
        _built_views.clear()  # the views now parse pg_types too: the next validation builds its own
    parsed = engine.session().sql("SELECT * FROM staging.parsed_records WHERE raw_source = 'pg_types' ORDER BY line_no")
    frame = unpack_typed(_naive(pl.from_arrow(_arrow(parsed))), TYPES)
    assert frame["parse_errors"].to_list() == [
        [], ["bad_timestamp: us_at 9223372036825200000 is not a timestamp", "wrong_type: price not base64! is not a number"],
        []]
    row = frame.row(0, named=True)
    millis = moment.replace(microsecond=123000)
    assert row["born"] == datetime(2026, 11, 27) and row["kday"] == "2026-11-27"
    assert (row["wake_ms"], row["kwake"], row["wake_us"], row["wake_ns"]) == (
        "10:15:30.123000", "10:15:30.123000", "10:15:30.123456", "10:15:30.123456")
    assert (row["ms_at"], row["kafka_at"], row["us_at"], row["ns_at"]) == (millis, millis, moment, moment)
    assert row["zoned_at"] == moment and row["plain_at"] == moment
    assert row["price"] == -1234567.89 and row["balance"] == 0.125
    assert row["price_text"] == "12345678901234567890123456.123456789012"  # exact, all 38 digits
    schemaless = frame.row(2, named=True)
    assert schemaless["us_at"] == moment and schemaless["price"] == 1234.0
