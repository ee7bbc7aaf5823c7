"""The source extracts on Spark (`CDP_ENGINE=spark` on a real standalone cluster, tests/spark_cluster.py) store the raw
tables DuckDB's extracts store, row for row.

A small generated shop (landing files, CDC files, CSV imports and the sample orders API) plus a bad landing file and a
CSV missing a required column is copied to two data directories; the source assets (with their checks) are
materialized in one on DuckDB (the oracle) and in the other on Spark, and raw.<source>, raw.rejected_files and
raw.cursors are compared (load times left out: they are each run's own clock). Then an input file changes and another
arrives unreadable in both: re-extracting those partitions replaces them (the others kept) on both engines alike.
Last, an extract that fails midway leaves the Spark tables as they were. Marked `spark`: `-m 'not spark'` skips it.
"""

from __future__ import annotations

import gzip
import shutil
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pytest
from dagster import AssetSelection, materialize
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from spark_tables import quote, sorted_rows

from cdp_assets.config import load_sources
from cdp_assets.runner import RunSummary, _fill_summary, partitions_present
from cdp_assets.sample_orders_api import serve_sample_orders
from cdp_assets.sources.assets import build_source_asset, input_folders, raw_key
from cdp_assets.sources.checks import stray_files_check, volume_check
from cdp_assets.sources.sensors import loaded_files
from cdp_resources import LandingZoneResource, OrdersApiResource, WarehouseResource

pytestmark = pytest.mark.spark

QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
RUN_TIMES = {"loaded_at", "rejected_at", "updated_at"}  # each run's own clock
TABLES = ["raw.web", "raw.crm_customers", "raw.orders", "raw.pos", "raw.rejected_files", "raw.cursors"]


def extract(data_dir: Path, engine: dict[str, str], orders_url: str, partitions: dict[str, list[str]] | None = None) -> list:
    """Materialize the source assets (and their checks) over `data_dir` on an engine, one run per source as `cdp run`
    does (`partitions`: the keys to extract per partitioned source, default all with input), orders pulled from
    `orders_url`; the results."""
    patch = pytest.MonkeyPatch()
    patch.setenv("CDP_DATA_DIR", str(data_dir))
    for name in ("CDP_ENGINE", "CDP_SPARK_MASTER"):
        patch.delenv(name, raising=False)
    for name, value in engine.items():
        patch.setenv(name, value)
    try:
        sources = list(load_sources().values())
        folders = input_folders(sources)
        definitions = [build_source_asset(s) for s in sources]
        definitions += [volume_check(s) for s in sources if s.partitions != "none"]
        definitions += [stray_files_check(s, folders) for s in sources if s.kind in ("events", "csv", "cdc")]
        landing = LandingZoneResource()
        results = []
        resources = {"warehouse": WarehouseResource(), "landing_zone": landing, "orders_api": OrdersApiResource(url=orders_url)}
        for source in sources:
            tags = {}
            if source.partitions != "none":
                keys = partitions_present(source, landing) if partitions is None else partitions.get(source.name)
                if not keys:
                    continue
                tags = {ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]}
            elif partitions is not None and source.name not in partitions:
                continue
            selection = AssetSelection.assets(raw_key(source.name))
            results.append(materialize(definitions, selection=selection, resources=resources, tags=tags,
                                       run_config=QUIET, raise_on_error=False))
        return results
    finally:
        patch.undo()


def verdicts(result) -> list[tuple]:
    """The run's check results, as comparable values (the metadata a check computed from the tables)."""
    return sorted((c.check_name, c.passed, {k: v.value for k, v in c.metadata.items()})
                  for c in result.get_asset_check_evaluations())


def duckdb_tables(data_dir: Path) -> dict[str, tuple[list[str], list[tuple]]]:
    tables = {}
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        for table in TABLES:
            columns = [c for c in con.execute(f"SELECT * FROM {table} LIMIT 0").fetchdf().columns if c not in RUN_TIMES]
            rows = con.execute(f"SELECT {', '.join(quote(c) for c in columns)} FROM {table}").to_arrow_table()
            tables[table] = columns, sorted_rows(rows)
    return tables


def spark_tables(engine) -> dict[str, tuple[list[str], list[tuple]]]:
    tables = {}
    for table in TABLES:
        frame = engine.table(table)
        columns = [c for c in frame.columns if c not in RUN_TIMES]
        tables[table] = columns, sorted_rows(frame.select(*[f"`{c}`" for c in columns]).toArrow())
    return tables


SPARK_TYPES = {"VARCHAR": "string", "BIGINT": "bigint", "TIMESTAMP": "timestamp"}  # as tests/spark_tables.py copies


def assert_same_tables(duckdb_dir: Path, engine) -> None:
    with duckdb.connect(str(duckdb_dir / "warehouse.duckdb"), read_only=True) as con:
        for table in TABLES:
            types = con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {table})").fetchall()
            assert engine.table(table).dtypes == [(c, SPARK_TYPES[t]) for c, t in types], table
    expected, found = duckdb_tables(duckdb_dir), spark_tables(engine)
    for table in TABLES:
        (columns, rows), (expected_columns, expected_rows) = found[table], expected[table]
        assert columns == expected_columns, table
        assert rows == expected_rows, f"{table}: {len(set(rows) ^ set(expected_rows))} rows differ, e.g. " \
            f"{sorted(set(rows) - set(expected_rows), key=repr)[:2]} vs {sorted(set(expected_rows) - set(rows), key=repr)[:2]}"


def in_both(dirs: tuple[Path, Path], relative: str, data: bytes) -> None:
    for data_dir in dirs:
        path = data_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@pytest.fixture(scope="module")
def shops(tmp_path_factory) -> tuple[Path, Path, str]:
    """The same generated shop in two data directories (DuckDB's, Spark's), with a bad file of each kind, and its
    orders API (one for both: the API's address is in the records' `file`)."""
    from cdp_assets.sample_data import generate_sample_data

    root = tmp_path_factory.mktemp("spark-sources")
    on_duckdb, on_spark = root / "duckdb", root / "spark"
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0, tzinfo=None)
    generate_sample_data(on_duckdb, events=1500, seed=11, end=end, days=7, log=lambda *_: None)
    shutil.copytree(on_duckdb, on_spark)
    hour = sorted((on_duckdb / "landing" / "web").glob("dt=*/hour=*"))[3].relative_to(on_duckdb)
    in_both((on_duckdb, on_spark), f"{hour}/broken.jsonl.gz", b"not gzip")
    day = sorted((on_duckdb / "imports" / "pos").glob("*.csv"))[0].name
    in_both((on_duckdb, on_spark), f"imports/pos/extra_{day}", b"receipt_id,amount\nr-extra,1\n")  # phone etc. missing
    with serve_sample_orders(on_duckdb / "api" / "orders") as url:
        yield on_duckdb, on_spark, url


def test_source_extracts_on_spark_equal_duckdb_row_for_row(shops, spark_cluster, monkeypatch):
    on_duckdb, on_spark, orders = shops
    spark = {"CDP_ENGINE": "spark", "CDP_SPARK_MASTER": spark_cluster.master_url}
    on_both = extract(on_duckdb, {}, orders), extract(on_spark, spark, orders)
    assert all(r.success for results in on_both for r in results)
    assert not (on_spark / "warehouse.duckdb").exists()  # nothing of a Spark run touches the DuckDB file
    duckdb_checks, spark_checks = ([verdicts(r) for r in results] for results in on_both)
    assert spark_checks == duckdb_checks and any(duckdb_checks)  # the checks read Spark's tables as DuckDB's

    monkeypatch.setenv("CDP_DATA_DIR", str(on_spark))
    monkeypatch.setenv("CDP_ENGINE", "spark")
    monkeypatch.setenv("CDP_SPARK_MASTER", spark_cluster.master_url)
    engine = WarehouseResource().engine()  # the session the extracts used
    assert_same_tables(on_duckdb, engine)
    rejected = {row[1] for row in spark_tables(engine)["raw.rejected_files"][1]}
    assert any(f.endswith("broken.jsonl.gz") for f in rejected) and any("extra_" in f for f in rejected), rejected
    with_spark = loaded_files(WarehouseResource(), "web")  # what a sensor's first tick starts from
    summary_on_spark = RunSummary()  # what `cdp run` prints
    _fill_summary(summary_on_spark, WarehouseResource())
    monkeypatch.setenv("CDP_DATA_DIR", str(on_duckdb))
    monkeypatch.delenv("CDP_ENGINE")
    assert with_spark == loaded_files(WarehouseResource(), "web") and len(with_spark) > 100
    summary = RunSummary()
    _fill_summary(summary, WarehouseResource())
    assert summary_on_spark == summary and summary.rejected_files == len(rejected) >= 2
    monkeypatch.setenv("CDP_DATA_DIR", str(on_spark))
    monkeypatch.setenv("CDP_ENGINE", "spark")

    # One hour's file changes, the next hour gets an unreadable file: re-extracting those two hours replaces
    # just them (the orders pulled again: nothing new, nothing stored twice).
    hours = sorted((on_duckdb / "landing" / "web").glob("dt=*/hour=*"))[7:9]
    changed = sorted(hours[0].glob("*.jsonl*"))[0]
    lines = (gzip.decompress(changed.read_bytes()) if changed.suffix == ".gz" else changed.read_bytes()).splitlines()
    kept = b"\n".join(lines[: max(1, len(lines) // 2)]) + b"\n"
    in_both((on_duckdb, on_spark), changed.relative_to(on_duckdb).as_posix(), gzip.compress(kept) if changed.suffix == ".gz" else kept)
    in_both((on_duckdb, on_spark), f"{hours[1].relative_to(on_duckdb)}/late.jsonl", b"\xff\xfe not utf-8\n")
    keys = [f"{h.parent.name[3:]}-{h.name[5:]}:00" for h in hours]
    before = {key: count for key, count in engine.table("raw.web").groupBy("partition_key").count().collect()}
    assert all(r.success for r in extract(on_duckdb, {}, orders, {"web": keys, "orders": []}))
    assert all(r.success for r in extract(on_spark, spark, orders, {"web": keys, "orders": []}))
    assert_same_tables(on_duckdb, engine)
    after = {key: count for key, count in engine.table("raw.web").groupBy("partition_key").count().collect()}
    assert after[keys[0]] < before[keys[0]] and {k: v for k, v in after.items() if k not in keys} == \
        {k: v for k, v in before.items() if k not in keys}
    assert any(row[1].endswith("late.jsonl") for row in spark_tables(engine)["raw.rejected_files"][1])

    # An extract that fails midway (here: stripping erased persons from a file raises) leaves every raw table
    # as it was, and no staging files behind.
    import cdp_assets.sources.assets as assets

    whole = spark_tables(engine)

    def failing(path, suppressions):
        raise RuntimeError(f"disk error reading {path.name}")

    monkeypatch.setattr(assets, "strip_file", failing)
    [result] = extract(on_spark, spark, orders, {"web": keys})
    assert not result.success
    assert spark_tables(engine) == whole
    assert not list((on_spark / "spark-warehouse" / "raw.db").glob("*--*"))


@pytest.mark.postgres
def test_postgres_extract_on_spark_equals_duckdb(pg_schema, spark_cluster, tmp_path, monkeypatch):
    """The PostgreSQL source's incremental pull (pages, ties at the cursor, updated rows) stores on Spark the rows
    and cursor it stores on DuckDB, run after run."""
    from datetime import timedelta

    from cdp_assets.config import SourceConfig

    con, schema, dsn = pg_schema
    table = f"{schema}.customers"
    con.execute(f"CREATE TABLE {table} (id integer PRIMARY KEY, email text, city text, updated_at timestamptz NOT NULL)")
    at = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)

    def insert(rows):
        con.cursor().executemany(f"INSERT INTO {table} VALUES (%s, %s, %s, %s)", [(i, f"c{i}@example.com", c, t) for i, c, t in rows])

    source = SourceConfig(name="crm_db", kind="postgres", partitions="none", dsn_env="CDP_TEST_CRM_DSN", table=table,
                          primary_key="id", time_column="updated_at", page_size=4,
                          columns={"id": "string", "email": "string", "city": "string", "updated_at": "timestamp"})
    monkeypatch.setenv("CDP_TEST_CRM_DSN", dsn)
    engines = {"duckdb": {}, "spark": {"CDP_ENGINE": "spark", "CDP_SPARK_MASTER": spark_cluster.master_url}}

    def pull() -> dict[str, int]:
        loaded = {}
        for name, settings in engines.items():
            with monkeypatch.context() as patch:
                patch.setenv("CDP_DATA_DIR", str(tmp_path / name))
                for variable, value in settings.items():
                    patch.setenv(variable, value)
                resources = {"warehouse": WarehouseResource(), "landing_zone": LandingZoneResource(), "orders_api": OrdersApiResource()}
                result = materialize([build_source_asset(source)], resources=resources, run_config=QUIET)
                [materialization] = result.asset_materializations_for_node("raw__crm_db")
                loaded[name] = materialization.metadata["records_loaded"].value
                engine = WarehouseResource().engine()
                if name == "spark":
                    found = {t: [r[:-1] for r in sorted_rows(engine.table(t).toArrow())] for t in ("raw.crm_db", "raw.cursors")}
        with duckdb.connect(str(tmp_path / "duckdb" / "warehouse.duckdb"), read_only=True) as warehouse:
            expected = {t: [r[:-1] for r in sorted_rows(warehouse.execute(f"SELECT * FROM {t}").to_arrow_table())]
                        for t in ("raw.crm_db", "raw.cursors")}
        assert found == expected
        return loaded

    insert([(i, "Paris", at) for i in range(1, 11)] + [(i, "Rome", at + timedelta(minutes=i)) for i in range(11, 16)])
    assert pull() == {"duckdb": 15, "spark": 15}
    insert([(16, "Oslo", at + timedelta(minutes=15))])  # a tie at the cursor
    con.execute(f"UPDATE {table} SET city = 'Lyon', updated_at = %s WHERE id IN (3, 12)", [at + timedelta(hours=1)])
    assert pull() == {"duckdb": 3, "spark": 3}
    assert pull() == {"duckdb": 0, "spark": 0}
