"""DuckDB's single-writer limit: two `cdp run`s launched together on one data dir both succeed."""

from __future__ import annotations

import os
import subprocess
import sys

import duckdb
import pytest

pytestmark = pytest.mark.slow


def test_two_runs_launched_together_both_succeed(tmp_path):
    from cdp_assets.sample_data import generate_sample_data

    data_dir = tmp_path / "data"
    manifest = generate_sample_data(data_dir, events=1500, seed=3, log=lambda *_: None)
    env = {**os.environ, "CDP_DATA_DIR": str(data_dir)}
    env.pop("DAGSTER_HOME", None)
    runs = [
        subprocess.Popen([sys.executable, "-m", "cdp_assets.cli", "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=900)[0] for run in runs]
    for run, output in zip(runs, outputs):
        assert run.returncode == 0, output[-3000:]
    con = duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM cdp.events").fetchone()[0] == manifest["web_messages"]
        assert con.execute("SELECT count(DISTINCT person_id) FROM cdp.id_map").fetchone()[0] == manifest["persons"]
    finally:
        con.close()
