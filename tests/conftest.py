"""Shared fixtures: an isolated instance (data dir in tmp, the repo's config) built by the generator."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests share two cores with pipeline tests: a slow example is load, not a failure.
settings.register_profile("cdp", deadline=None)
settings.load_profile("cdp")

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("CDP_CONFIG_DIR", str(REPO / "config"))
os.environ.pop("DAGSTER_HOME", None)  # tests use ephemeral Dagster instances


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
