"""The dbt models on Spark (`dbt build --target spark`, dbt-spark's session method on a real standalone cluster,
tests/spark_cluster.py) give the DuckDB build's rows, row for row.

A small generated shop runs through the pipeline on DuckDB the normal way; the tables the models read
(raw, validated and change logs, cdp.events, cdp.id_map, core.persons...) are copied to the Spark warehouse as
Parquet; then the identity and profile models are built on both engines at one fixed build time and every model's
rows are compared (the DuckDB build is the oracle). A second Spark build over unchanged inputs takes the
incremental paths (deletes and delete+insert rewritten for Parquet, watermarks) and must leave the same rows.
Marked `spark`: `-m 'not spark'` skips it locally; CI runs it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest
from spark_tables import copy_to_spark, quote, sorted_rows

pytestmark = pytest.mark.spark

# What the models read and the platform's Python stages write (dbt/models/staging/_sources.yml and the
# bookkeeping of dbt/macros/incremental.sql).
SOURCE_TABLES = [
    "raw.web", "raw.crm_customers", "raw.orders", "raw.pos",
    "cdp.events", "cdp.id_map", "core.persons", "core.events_removed", "core.id_map_changes", "core.batches",
    "validated.crm_customers", "validated.orders", "validated.pos",
    "validated.crm_customers_removed", "validated.orders_removed", "validated.pos_removed",
]
# Every identity and profile model, in dependency order; bookkeeping columns (the batch that wrote a row, a
# change-detection hash whose function differs between engines) are left out of the comparison.
MODELS = [
    "core.identifier_sightings", "core.identifier_lookup", "core.touched_identifiers", "core.identifiers",
    "cdp.identity_edges", "core.identifier_persons", "core.person_events", "core.purchase_claims",
    "core.person_purchases", "core.trait_observations", "core.affected_persons", "core.person_trait_values",
    "core.person_computed_base", "core.person_computed_traits", "cdp.profiles", "core.profile_versions",
    "cdp.relationships",
]
BOOKKEEPING = {"_batch_id", "row_hash"}
SELECT = ["--select", "path:models/identity", "path:models/profiles"]


def duckdb_rows(con: duckdb.DuckDBPyConnection, table: str) -> tuple[list[str], list[tuple]]:
    columns = [c for c in con.execute(f"SELECT * FROM {table} LIMIT 0").fetchdf().columns if c not in BOOKKEEPING]
    rows = con.execute(f"SELECT {', '.join(quote(c) for c in columns)} FROM {table}").fetch_arrow_table()
    return columns, sorted_rows(rows)


def spark_rows(session, table: str) -> tuple[list[str], list[tuple]]:
    frame = session.table(table)
    columns = [c for c in frame.columns if c not in BOOKKEEPING]
    return columns, sorted_rows(frame.select(*[f"`{c}`" for c in columns]).toArrow())


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> tuple[Path, datetime]:
    """A small shop run through the pipeline on DuckDB, then its identity and profile models rebuilt at a fixed
    build time (computed traits count days to it): the oracle."""
    from tests.conftest import build_models

    from cdp_assets.runner import run_everything
    from cdp_assets.sample_data import generate_sample_data

    data_dir = tmp_path_factory.mktemp("spark-dbt") / "data"
    patch = pytest.MonkeyPatch()
    patch.setenv("CDP_DATA_DIR", str(data_dir))
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0, tzinfo=None)
    generate_sample_data(data_dir, events=1500, seed=11, end=end, log=lambda *_: None)
    run_everything(progress=lambda *_: None)
    now = end + timedelta(minutes=30)
    build_models(data_dir, " ".join(SELECT[1:]) + " --full-refresh", now=now)
    yield data_dir, now
    patch.undo()


@pytest.fixture(scope="module")
def spark_build(shop, spark_cluster):
    """The shop's source tables on a Spark warehouse and a SparkEngine on the cluster, the session prepared."""
    from cdp_assets.dbt.spark import prepare_session
    from cdp_resources.spark import SparkEngine

    data_dir, now = shop
    engine = SparkEngine(spark_cluster.master_url, data_dir / "spark-warehouse", spark_cluster.conf)
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        copy_to_spark(con, engine, SOURCE_TABLES)
    session = prepare_session(engine)
    yield engine, session
    engine.stop()


def build_on_spark(data_dir: Path, now: datetime) -> None:
    from cdp_assets.dbt.project import run_dbt
    from cdp_assets.dbt.vars import dbt_vars

    patch = pytest.MonkeyPatch()
    patch.setenv("CDP_DATA_DIR", str(data_dir))
    try:
        run_dbt(["build", "--target", "spark", *SELECT, "--exclude", "resource_type:snapshot"],
                {**dbt_vars(), "now": now.isoformat(sep=" ")})
    finally:
        patch.undo()


def assert_models_equal(data_dir: Path, session) -> None:
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        for model in MODELS:
            expected_columns, expected = duckdb_rows(con, model)
            columns, rows = spark_rows(session, model)
            assert columns == expected_columns, model
            assert expected, f"{model}: the shop gives it no rows to compare"
            assert rows == expected, f"{model}: {len(set(rows) ^ set(expected))} rows differ, e.g. " \
                                     f"{sorted(set(rows) - set(expected), key=repr)[:2]} vs {sorted(set(expected) - set(rows), key=repr)[:2]}"


def test_models_on_spark_equal_duckdb_row_for_row(shop, spark_build):
    data_dir, now = shop
    _, session = spark_build
    build_on_spark(data_dir, now)
    assert_models_equal(data_dir, session)

    # Again over the same inputs: every incremental model takes its incremental path (nothing changed, so
    # nothing may change).
    build_on_spark(data_dir, now)
    assert_models_equal(data_dir, session)
