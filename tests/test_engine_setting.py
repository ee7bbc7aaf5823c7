"""The engine setting (contract §5): CDP_ENGINE and CDP_SPARK_MASTER, read by the warehouse resource only."""

from __future__ import annotations

import pytest

from cdp_resources.warehouse import DuckDBEngine, WarehouseResource


def test_duckdb_is_the_default_engine(monkeypatch, tmp_path):
    monkeypatch.delenv("CDP_ENGINE", raising=False)
    monkeypatch.setenv("CDP_DATA_DIR", str(tmp_path))
    engine = WarehouseResource().engine()
    assert isinstance(engine, DuckDBEngine) and engine.name == "duckdb"
    with engine.connect() as con:
        assert con.execute("SELECT 42").fetchone() == (42,)
    assert (tmp_path / "warehouse.duckdb").exists()


def test_spark_engine_keeps_its_tables_under_the_data_directory(monkeypatch, tmp_path):
    pytest.importorskip("pyspark")
    monkeypatch.setenv("CDP_ENGINE", " Spark ")
    monkeypatch.setenv("CDP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CDP_SPARK_MASTER", "spark://127.0.0.1:7077")
    engine = WarehouseResource().engine()  # no session yet: it starts on first use
    assert (engine.name, engine.master) == ("spark", "spark://127.0.0.1:7077")
    assert engine.location("cdp.id_map") == tmp_path / "spark-warehouse" / "cdp.db" / "id_map"
    monkeypatch.delenv("CDP_SPARK_MASTER")
    assert WarehouseResource().engine().master == "local[*]"
    with pytest.raises(ValueError, match="schema.table"):
        engine.location("id_map")


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("CDP_ENGINE", "snowflake", "CDP_ENGINE='snowflake': expected one of duckdb, spark"),
    ("CDP_SPARK_MASTER", "yarn", "CDP_SPARK_MASTER='yarn': expected local"),
])
def test_an_unknown_engine_or_master_is_a_clear_error(monkeypatch, variable, value, message):
    monkeypatch.setenv("CDP_ENGINE", "spark")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("*", r"\*")):
        WarehouseResource().engine()


def test_the_run_clock_is_the_real_time_unless_cdp_now_fixes_it(monkeypatch):
    from datetime import datetime, timedelta, timezone

    from cdp_assets.dbt.vars import dbt_vars
    from cdp_resources.settings import clock

    monkeypatch.delenv("CDP_NOW", raising=False)
    assert abs(clock() - datetime.now(timezone.utc).replace(tzinfo=None)) < timedelta(seconds=5)
    assert "now" not in dbt_vars()  # the models read the database's clock
    monkeypatch.setenv("CDP_NOW", "2026-03-01T12:00:00+01:00")
    assert clock() == datetime(2026, 3, 1, 11)  # naive UTC, as the warehouse keeps times
    assert dbt_vars()["now"] == "2026-03-01 11:00:00"
    monkeypatch.setenv("CDP_NOW", "yesterday")
    with pytest.raises(ValueError, match="CDP_NOW='yesterday'"):
        clock()
