"""The PostgreSQL CRM source against the real server on 127.0.0.1:5432: incremental by updated_at, ties kept."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import duckdb
import pytest
from dagster import materialize

from cdp_assets.config import SourceConfig
from cdp_assets.sources.assets import build_source_asset
from cdp_resources import LandingZoneResource, OrdersApiResource, WarehouseResource
from cdp_resources.postgres import PostgresSourceError, table_pages
from tests.pipeline import refresh

pytestmark = pytest.mark.postgres
DSN = os.environ.get("CDP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@pytest.fixture
def crm_table(pg_schema):
    """A customers table in a schema of its own, dropped afterwards."""
    con, schema, _ = pg_schema
    con.execute(
        f"""CREATE TABLE {schema}.customers (id integer PRIMARY KEY, email text, phone text, first_name text,
            last_name text, gender text, city text, updated_at timestamptz NOT NULL)"""
    )
    return con, f"{schema}.customers"


def _insert(con, table, rows):
    con.cursor().executemany(
        f"INSERT INTO {table} VALUES (%s, %s, %s, 'Ann', 'Lee', NULL, %s, %s)",
        [(i, f"c{i}@Example.com", f"+1 415 555 {i:04d}", city, at) for i, city, at in rows],
    )


def _source(table, page_size=4) -> SourceConfig:
    return SourceConfig(
        name="crm_db", kind="postgres", partitions="none", dsn_env="CDP_TEST_CRM_DSN", table=table,
        primary_key="id", time_column="updated_at", page_size=page_size,
        columns={"id": "string", "email": "string", "phone": "string", "first_name": "string", "last_name": "string",
                 "gender": "string", "city": "string", "updated_at": "timestamp"},
        identifiers={"id": "crm_id", "email": "email", "phone": "phone"},
    )


def _extract(source):
    resources = {"warehouse": WarehouseResource(), "landing_zone": LandingZoneResource(), "orders_api": OrdersApiResource()}
    result = materialize([build_source_asset(source)], resources=resources, run_config=QUIET)
    assert result.success
    [materialization] = result.asset_materializations_for_node("raw__crm_db")
    return {k: v.value for k, v in materialization.metadata.items()}


def test_incremental_extract_keeps_ties_and_never_loads_a_version_twice(crm_table, tmp_path, monkeypatch):
    con, table = crm_table
    monkeypatch.setenv("CDP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CDP_TEST_CRM_DSN", DSN)
    # Ten rows share one updated_at, more than a page: pagination must not lose or repeat any of them.
    _insert(con, table, [(i, "Paris", T0) for i in range(1, 11)] + [(i, "Rome", T0 + timedelta(minutes=i)) for i in range(11, 16)])
    source = _source(table)
    first = _extract(source)
    assert (first["records_loaded"], first["rows_read"]) == (15, 15)
    assert first["cursor"] == (T0 + timedelta(minutes=15)).isoformat()

    # A row committed late with the same updated_at as the cursor (a tie), two updates, an added column.
    _insert(con, table, [(16, "Oslo", T0 + timedelta(minutes=15))])
    con.execute(f"UPDATE {table} SET city = 'Lyon', updated_at = %s WHERE id IN (3, 12)", [T0 + timedelta(hours=1)])
    con.execute(f"ALTER TABLE {table} ADD COLUMN loyalty_tier text DEFAULT 'gold'")
    second = _extract(source)
    assert second["records_loaded"] == 3
    assert _extract(source)["records_loaded"] == 0  # nothing changed: the rows at the cursor are skipped

    # Validated, resolved and profiled through the same path as every other source (its traits ranked by
    # config/traits.yaml).
    refresh(tmp_path, {"crm_db": replace(source, traits=("city",))})
    warehouse = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    assert warehouse.execute("SELECT count(*) FROM raw.crm_db").fetchone()[0] == 18
    current = dict(warehouse.execute("SELECT id, city FROM validated.crm_db").fetchall())
    assert len(current) == 16 and current["3"] == current["12"] == "Lyon" and current["16"] == "Oslo"
    observations = warehouse.sql("SELECT * FROM core.trait_observations").pl()
    edges = warehouse.sql("SELECT * FROM cdp.identity_edges").pl()
    warehouse.close()
    cities = {(r["raw_value"], r["value"]) for r in observations.iter_rows(named=True)}
    assert ("3", "Lyon") in cities and ("16", "Oslo") in cities and len(observations) == 16
    assert set(observations["identifier_type"]) == {"crm_id"} and set(observations["source_rank"]) == {2}  # city: [events, crm_customers, crm_db]
    pairs = {(row["left_type"], row["left_value"], row["right_type"], row["right_value"]) for row in edges.iter_rows(named=True)}
    assert any({("crm_id", "16"), ("email", "c16@example.com")} <= {(a, b), (c, d)} for a, b, c, d in pairs)


def test_a_failed_page_leaves_the_cursor_at_the_last_committed_page(crm_table, tmp_path, monkeypatch):
    con, table = crm_table
    monkeypatch.setenv("CDP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CDP_TEST_CRM_DSN", DSN)
    _insert(con, table, [(i, "Paris", T0 + timedelta(minutes=i)) for i in range(1, 11)])
    source = _source(table)
    import cdp_resources.postgres as postgres

    def failing_after_two_pages(*args):
        for number, page in enumerate(table_pages(*args), start=1):
            if number == 3:
                raise PostgresSourceError("connection lost")
            yield page

    monkeypatch.setattr(postgres, "table_pages", failing_after_two_pages)
    resources = {"warehouse": WarehouseResource(), "landing_zone": LandingZoneResource(), "orders_api": OrdersApiResource()}
    assert not materialize([build_source_asset(source)], resources=resources, run_config=QUIET, raise_on_error=False).success
    warehouse = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    assert warehouse.execute("SELECT count(*) FROM raw.crm_db").fetchone()[0] == 8
    assert warehouse.execute("SELECT cursor FROM raw.cursors").fetchone()[0] == (T0 + timedelta(minutes=8)).isoformat()
    warehouse.close()
    monkeypatch.undo()
    monkeypatch.setenv("CDP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CDP_TEST_CRM_DSN", DSN)
    resumed = _extract(source)
    assert resumed["records_loaded"] == 2 and resumed["dagster/row_count"] == 10


def test_a_missing_connection_setting_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("CDP_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CDP_TEST_CRM_DSN", raising=False)
    resources = {"warehouse": WarehouseResource(), "landing_zone": LandingZoneResource(), "orders_api": OrdersApiResource()}
    result = materialize([build_source_asset(_source("public.customers"))], resources=resources, run_config=QUIET,
                         raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "CDP_TEST_CRM_DSN is not set" in failure.step_failure_data.error.cause.message
