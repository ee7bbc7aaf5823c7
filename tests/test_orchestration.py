"""Orchestration without waste: executors, schedules on by default, one refresh per change (a real Dagster
instance evaluating the sensor), no dbt parse at step start."""

from __future__ import annotations

import time

import pytest
from dagster import (
    DagsterEvent, DagsterEventType, DagsterInstance, DagsterRunStatus, RunRequest, SkipReason, build_sensor_context,
    instance_for_test,
)


@pytest.fixture(scope="module")
def defs():
    from cdp_assets.definitions import defs

    return defs


def _pools(job) -> set:
    return {getattr(node.definition, "pool", None) for node in job.graph.node_dict.values()}


def test_warehouse_bound_jobs_run_their_steps_in_one_process(defs):
    jobs = {job.name: job for job in defs.resolve_all_job_defs()}
    in_pool = set()
    for name, job in jobs.items():
        pools = _pools(job)
        # A step outside the pool reads files only (the stray-files check) or is an HTTP delivery.
        if "warehouse" in pools:
            in_pool.add(name)
            assert job.executor_def.name == "in_process", name
    assert {"refresh_job", "daily_segments_job", "web_hourly_job", "privacy_job", "__ASSET_JOB"} <= in_pool
    refresh = jobs["refresh_job"]
    outside = {n.name for n in refresh.graph.node_dict.values() if getattr(n.definition, "pool", None) != "warehouse"}
    assert outside == set(), outside  # every step of a refresh waits for the warehouse: nothing to run beside it
    # Deliveries wait on HTTP, not the warehouse: they keep a process each and run side by side.
    assert jobs["activation_job"].executor_def.name == "multiprocess"


def test_every_schedule_the_readme_promises_is_on_by_default(defs):
    from dagster import DefaultScheduleStatus

    schedules = {s.name: s for s in defs.schedules}
    promised = {  # README, Orchestration
        "web_hourly_job_schedule", "pos_daily_job_schedule", "orders_extract_job_schedule",
        "crm_customers_extract_job_schedule", "refresh_job_schedule", "daily_segments_job_schedule",
        "activation_job_schedule",
    }
    assert promised <= set(schedules)
    assert {name for name, s in schedules.items() if s.default_status != DefaultScheduleStatus.RUNNING} == set()


# --- one refresh per change: the sensor against a real instance (a temporary DAGSTER_HOME) ---------------------------------------------


def _report(instance: DagsterInstance, run, event_type: DagsterEventType) -> None:
    instance.report_dagster_event(
        DagsterEvent(event_type_value=event_type.value, job_name=run.job_name, message=event_type.value), run.run_id
    )
    time.sleep(0.01)  # run timestamps are compared: keep events apart


def _run(instance, job_name: str, *events: DagsterEventType | None):
    """A run in `instance`, created (not started: waiting, as in the queue) and taken through `events`."""
    from dagster._core.test_utils import create_run_for_test

    run = create_run_for_test(instance, job_name=job_name, status=DagsterRunStatus.NOT_STARTED)
    for event in filter(None, events):
        _report(instance, run, event)
    return run


def _evaluate(sensor, instance):
    result = sensor(build_sensor_context(instance=instance))
    return [result] if isinstance(result, RunRequest) else result if isinstance(result, list) else []


def test_refresh_follows_extracts_once_and_never_overlaps_itself(defs):
    START, SUCCESS, ENQUEUED = DagsterEventType.RUN_START, DagsterEventType.RUN_SUCCESS, None
    sensor = defs.get_sensor_def("refresh_after_extract")
    with instance_for_test() as instance:
        assert _evaluate(sensor, instance) == []  # nothing happened yet (e.g. right after `make demo`)

        # Two extracts succeed while nothing else runs: one refresh.
        _run(instance, "web_hourly_job", START, SUCCESS)
        _run(instance, "crm_customers_extract_job", START, SUCCESS)
        [request] = _evaluate(sensor, instance)
        assert _evaluate(sensor, instance) == [request]  # same run key: the daemon launches it once

        # That refresh is queued: whatever succeeds now waits for it (it has read nothing yet).
        refresh = _run(instance, "refresh_job", ENQUEUED)
        _run(instance, "web_hourly_job", START, SUCCESS)
        assert _evaluate(sensor, instance) == []
        _report(instance, refresh, START)
        # An extract that succeeds while the refresh runs: still nothing while it runs ...
        _run(instance, "web_hourly_job", START, SUCCESS)
        assert _evaluate(sensor, instance) == []
        # ... and an extract still queued holds the next refresh back until it is done.
        queued = _run(instance, "web_hourly_job", ENQUEUED)
        _report(instance, refresh, SUCCESS)
        assert _evaluate(sensor, instance) == []
        _report(instance, queued, START)
        _report(instance, queued, SUCCESS)
        [after] = _evaluate(sensor, instance)  # exactly one refresh for everything that landed meanwhile
        assert after.run_key != request.run_key

        second = _run(instance, "refresh_job", ENQUEUED, START, SUCCESS)
        assert second.run_id
        assert _evaluate(sensor, instance) == []  # nothing new since the last refresh started
        _run(instance, "privacy_job", START, SUCCESS)  # an erasure: the derived tables are rebuilt once
        assert len(_evaluate(sensor, instance)) == 1


def test_activation_follows_segment_runs_without_overlap(defs):
    START, SUCCESS = DagsterEventType.RUN_START, DagsterEventType.RUN_SUCCESS
    sensor = defs.get_sensor_def("activation_after_segments")
    with instance_for_test() as instance:
        _run(instance, "refresh_job", START, SUCCESS)
        assert len(_evaluate(sensor, instance)) == 1
        _run(instance, "activation_job", START)  # delivering: no second activation beside it
        _run(instance, "daily_segments_job", START, SUCCESS)
        assert _evaluate(sensor, instance) == []


def test_backstop_schedules_skip_while_their_job_is_running(defs):
    from dagster import build_schedule_context

    schedule = defs.get_schedule_def("refresh_job_schedule")
    with instance_for_test() as instance:
        assert isinstance(schedule(build_schedule_context(instance=instance)), RunRequest)
        _run(instance, "refresh_job", DagsterEventType.RUN_START)
        assert isinstance(schedule(build_schedule_context(instance=instance)), SkipReason)


# --- dbt: parsed once ------------------------------------------------------------------------------------------


def test_a_code_location_load_parses_nothing_even_under_dagster_dev():
    import os
    import subprocess
    import sys

    from cdp_assets.dbt.project import TARGET_DIR, manifest_is_stale

    assert not manifest_is_stale()  # importing the project (above) prepared it if it had to
    manifest = TARGET_DIR / "manifest.json"
    before = manifest.stat().st_mtime_ns
    env = {**os.environ, "DAGSTER_IS_DEV_CLI": "1"}  # what `dagster dev` sets for the processes it starts
    subprocess.run([sys.executable, "-c", "import cdp_assets.definitions"], env=env, check=True, timeout=300)
    assert manifest.stat().st_mtime_ns == before


def test_dbt_commands_reuse_the_parse_cache_and_parse_views_are_built_only_when_needed(tmp_path, monkeypatch):
    import shutil
    from pathlib import Path

    import yaml

    from cdp_assets.config import load_sources
    from cdp_assets.dbt.project import run_dbt
    from cdp_assets.dbt.vars import dbt_vars
    from cdp_assets.events.validate import ensure_parse_views
    from cdp_resources import WarehouseResource

    root = Path(__file__).resolve().parents[1]
    assert not [p for p in [*root.glob("cdp_assets/**/*.py"), root / "Makefile"] if "--no-partial-parse" in p.read_text()]
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("CDP_DATA_DIR", str(tmp_path / "data"))
    warehouse = WarehouseResource()
    select = ["run", "--select", "path:models/staging/parsed"]
    run_dbt(select, dbt_vars(), warehouse)  # warms the cache if another configuration used it last
    assert run_dbt(select, dbt_vars(), warehouse) == []  # nothing parsed again

    sources = load_sources().values()
    assert ensure_parse_views(warehouse, sources) is True  # built by plain dbt: what from is unknown, so once
    assert ensure_parse_views(warehouse, sources) is False  # then left alone
    with warehouse.connect() as con:
        con.execute("DROP VIEW staging.parsed_records")
    assert ensure_parse_views(warehouse, sources) is True  # missing
    assert ensure_parse_views(warehouse, sources) is False

    # A new declared column changes what the parse views are: rebuilt once, and the column is there.
    config = tmp_path / "config"
    shutil.copytree(root / "config", config)
    declared = yaml.safe_load((config / "sources.yaml").read_text())
    declared["sources"]["crm_customers"]["columns"]["loyalty_tier"] = "string"
    (config / "sources.yaml").write_text(yaml.safe_dump(declared, sort_keys=False))
    monkeypatch.setenv("CDP_CONFIG_DIR", str(config))
    sources = load_sources().values()
    assert ensure_parse_views(warehouse, sources) is True
    assert ensure_parse_views(warehouse, sources) is False
    with warehouse.connect() as con:
        typed = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'parsed_records'").fetchone()[0]
    assert "loyalty_tier" in typed


# --- sensors start at the data already loaded -------------------------------------------------------------------


def test_after_the_demo_the_file_sensors_queue_nothing_and_a_new_file_exactly_one_run(tmp_path, monkeypatch):
    import os

    from dagster import materialize
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from cdp_assets.config import load_sources
    from cdp_assets.runner import QUIET, partitions_present
    from cdp_assets.sample_data import generate_sample_data
    from cdp_assets.sources.assets import build_source_asset
    from cdp_assets.sources.jobs import source_job
    from cdp_assets.sources.sensors import cdc_sensor, landing_sensor
    from cdp_resources import LandingZoneResource, OrdersApiResource, WarehouseResource

    data_dir = tmp_path / "data"
    monkeypatch.setenv("CDP_DATA_DIR", str(data_dir))
    generate_sample_data(data_dir, events=600, seed=5, log=lambda *_: None)
    sources = load_sources()
    web, crm = sources["web"], sources["crm_customers"]
    resources = {"warehouse": WarehouseResource(), "landing_zone": LandingZoneResource(), "orders_api": OrdersApiResource()}
    hours = partitions_present(web, resources["landing_zone"])
    assert len(hours) > 100
    tags = {ASSET_PARTITION_RANGE_START_TAG: hours[0], ASSET_PARTITION_RANGE_END_TAG: hours[-1]}
    assert materialize([build_source_asset(web)], resources=resources, tags=tags, run_config=QUIET).success
    assert materialize([build_source_asset(crm)], resources=resources, run_config=QUIET).success
    sensor_resources = {"landing_zone": resources["landing_zone"], "warehouse": resources["warehouse"]}

    # A file landed after the load, before the sensor's first tick (in an hour already loaded): that hour only.
    late = data_dir / "landing" / "web" / f"dt={hours[3][:10]}" / f"hour={hours[3][11:13]}" / "late.jsonl"
    late.write_text('{"type": "track", "event": "x", "userId": "u_late", "messageId": "m-late"}\n')
    landing = landing_sensor(web, source_job(web))
    first = build_sensor_context(resources=sensor_resources)
    [request] = landing(first)
    assert request.partition_key == hours[3]
    late.unlink()  # (back to what is loaded)

    # `make demo` then `make dev`: the first tick requests nothing.
    landing_first = build_sensor_context(resources=sensor_resources)
    assert isinstance(landing(landing_first), SkipReason)
    cdc = cdc_sensor(crm, source_job(crm))
    cdc_first = build_sensor_context(resources=sensor_resources)
    assert isinstance(cdc(cdc_first), SkipReason) and cdc_first.cursor

    # Then a new file: exactly one run, for its hour.
    time.sleep(0.01)
    newest = data_dir / "landing" / "web" / f"dt={hours[-1][:10]}" / f"hour={hours[-1][11:13]}" / "new.jsonl"
    newest.write_text('{"type": "track", "event": "x", "userId": "u_new", "messageId": "m-new"}\n')
    [request] = landing(build_sensor_context(cursor=landing_first.cursor, resources=sensor_resources))
    assert request.partition_key == hours[-1]
    change = data_dir / "cdc" / "crm_customers" / "zz-new.jsonl"
    change.write_text((sorted((data_dir / "cdc" / "crm_customers").glob("*.jsonl"))[0]).read_text().splitlines()[0] + "\n")
    os.utime(change)
    assert isinstance(cdc(build_sensor_context(cursor=cdc_first.cursor, resources=sensor_resources)), RunRequest)
