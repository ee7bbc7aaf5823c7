"""Shared fixtures: an isolated instance (data dir in tmp, the repo's config) built by the generator."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings
# One standalone Spark cluster per test process, shared by every Spark test module (fixtures imported into a test
# module are that module's own: each started a cluster of its own, all alive till the end).
from spark_cluster import spark_cluster, spark_engine  # noqa: F401 (fixtures)

# Property tests share two cores with pipeline tests: a slow example is load, not a failure.
settings.register_profile("cdp", deadline=None)
settings.load_profile("cdp")

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("CDP_CONFIG_DIR", str(REPO / "config"))
os.environ.pop("DAGSTER_HOME", None)  # tests use ephemeral Dagster instances


def pytest_collection_modifyitems(config, items):
    """Modules with Spark tests first, each module's tests still together and in order: they are the longest, and
    with `--dist loadfile` a long module handed out last keeps one worker busy while the other has finished."""
    spark_modules = {item.path for item in items if item.get_closest_marker("spark")}
    items.sort(key=lambda item: item.path not in spark_modules)


@dataclass
class Demo:
    data_dir: Path
    manifest: dict
    summary: object
    progress: list[str]


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Demo:
    """The sample data set (small) materialized end to end, in process."""
    from cdp_assets.runner import run_everything
    from cdp_assets.sample_data import generate_sample_data

    data_dir = tmp_path_factory.mktemp("instance") / "data"
    patch = pytest.MonkeyPatch()
    patch.setenv("CDP_DATA_DIR", str(data_dir))
    manifest = generate_sample_data(data_dir, events=4000, seed=11, log=lambda *_: None)
    progress: list[str] = []
    summary = run_everything(progress=progress.append)
    yield Demo(data_dir, manifest, summary, progress)
    patch.undo()


@pytest.fixture
def warehouse(demo):
    import duckdb

    con = duckdb.connect(str(demo.data_dir / "warehouse.duckdb"), read_only=True)
    yield con
    con.close()


POSTGRES_DSN = os.environ.get("CDP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_schema():
    """(connection, schema, dsn): an autocommit connection to the test PostgreSQL and a schema of its own, dropped
    afterwards. No server: skipped, saying why, except in CI (CI=true), where that is a failure."""
    import psycopg

    try:
        con = psycopg.connect(POSTGRES_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL must answer at {POSTGRES_DSN} in CI: {exc}")
        pytest.skip(f"no PostgreSQL server answers at {POSTGRES_DSN} ({exc})")
    schema = f"t_{uuid.uuid4().hex[:8]}"
    con.execute(f"CREATE SCHEMA {schema}")
    try:
        yield con, schema, POSTGRES_DSN
    finally:
        con.execute(f"DROP SCHEMA {schema} CASCADE")
        con.close()


def build_models(data_dir: Path, select: str, sources: dict | None = None, now=None, command: str = "run") -> None:
    """Run dbt models (`select`: dbt selection arguments) on the warehouse of `data_dir`, with the shipped
    configuration's vars, or with `sources` (name -> SourceConfig) in place of config/sources.yaml; `now`
    fixes the build time."""
    from cdp_assets.dbt.project import run_dbt
    from cdp_assets.dbt.vars import dbt_vars, source_vars

    patch = pytest.MonkeyPatch()
    patch.setenv("CDP_DATA_DIR", str(data_dir))
    try:
        vars_ = dbt_vars()
        if sources is not None:
            from cdp_assets.profiles.traits import load_trait_rules, profile_traits
            from cdp_resources.settings import config_dir

            vars_["sources"] = source_vars(sources)
            vars_["profile_traits"] = profile_traits(load_trait_rules(config_dir() / "traits.yaml"), sources)
        if now is not None:
            vars_["now"] = now.isoformat(sep=" ")
        run_dbt([command, "--select", *select.split()], vars_)
    finally:
        patch.undo()


@pytest.fixture(scope="module")
def parse_views(tmp_path_factory):
    """A warehouse holding the dbt parse views (staging.parsed_*) over empty raw tables: insert raw rows, read
    them parsed. Built once per module (a dbt run)."""
    import duckdb

    data_dir = tmp_path_factory.mktemp("parse")
    build_models(data_dir, "path:models/staging/parsed")
    con = duckdb.connect(str(data_dir / "warehouse.duckdb"))
    yield con
    con.close()
