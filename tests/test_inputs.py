"""Reading inputs: CSV headers, unreadable files, the warehouse lock, the file sensors' cursor."""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os
import threading
import time

import pytest

from cdp_assets.sources.readers import UnreadableFile, csv_records, jsonl_records
from cdp_resources.landing import LandingZoneResource
from cdp_resources.warehouse import WarehouseResource, warehouse_lock


def test_csv_with_bom_and_added_columns(tmp_path):
    path = tmp_path / "pos_2026-01-02.csv"
    path.write_bytes("\ufeffreceipt_id,phone,amount,store_id,purchased_at,cashier\nr1,555,1.5,s1,2026-01-02,bob\n".encode())
    [(line, record)] = csv_records(path, ["receipt_id", "phone", "amount", "store_id", "purchased_at"])
    assert line == 2 and json.loads(record) == {
        "receipt_id": "r1", "phone": "555", "amount": "1.5", "store_id": "s1", "purchased_at": "2026-01-02", "cashier": "bob"}


def test_csv_missing_required_column_names_file_and_column(tmp_path):
    path = tmp_path / "pos.csv"
    path.write_text("receipt_id,amount\nr1,1\n")
    with pytest.raises(UnreadableFile, match=r"pos.csv: missing required column\(s\) phone, store_id"):
        csv_records(path, ["receipt_id", "phone", "amount", "store_id"])


def test_corrupt_gzip_is_unreadable_and_rejected_with_reason(tmp_path):
    folder = tmp_path / "landing" / "web" / "dt=2026-01-01" / "hour=05"
    folder.mkdir(parents=True)
    good = folder / "a.jsonl.gz"
    good.write_bytes(gzip.compress(b'{"a":1}\n\n{"b":2}\n'))
    bad = folder / "b.jsonl.gz"
    bad.write_bytes(b"not gzip")
    (folder / ".tmp-c.jsonl").write_text("partial")
    zone = LandingZoneResource(root=str(tmp_path))
    files = zone.landing_files("web")
    assert [f.path.name for f in files] == ["a.jsonl.gz", "b.jsonl.gz"]
    assert {f.partition_key for f in files} == {"2026-01-01-05:00"}
    assert jsonl_records(good) == [(1, '{"a":1}'), (3, '{"b":2}')]
    with pytest.raises(UnreadableFile) as error:
        jsonl_records(bad)
    target = zone.reject(bad, str(error.value))
    assert not bad.exists() and target.exists()
    assert "cannot be read" in target.with_name(target.name + ".reason").read_text()
    assert [f.path.name for f in zone.landing_files("web")] == ["a.jsonl.gz"]


def _hold(path, seconds, started):
    with warehouse_lock(path):
        started.set()
        time.sleep(seconds)


def test_warehouse_lock_serializes_processes(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    started = multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold, args=(path, 1.0, started))
    holder.start()
    started.wait(10)
    begun = time.monotonic()
    with warehouse_lock(path):
        waited = time.monotonic() - begun
        with warehouse_lock(path):  # re-entrant in one thread
            pass
    holder.join()
    assert waited > 0.5


def test_landing_sensor_requests_each_file_once(tmp_path, monkeypatch):
    from dagster import build_sensor_context

    from cdp_assets.config import SourceConfig
    from cdp_assets.sources.jobs import source_job
    from cdp_assets.sources.sensors import landing_sensor

    source = SourceConfig(name="web", kind="events", partitions="hourly")
    sensor = landing_sensor(source, source_job(source))
    zone = LandingZoneResource(root=str(tmp_path))

    def land(hour: str, name: str):
        folder = tmp_path / "landing" / "web" / "dt=2026-01-01" / f"hour={hour}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text('{"type":"track"}\n')

    land("01", "a.jsonl")
    land("02", "b.jsonl")
    context = build_sensor_context(resources={"landing_zone": zone, "warehouse": WarehouseResource(path=str(tmp_path / "w.duckdb"))})
    requests = sensor(context)
    assert sorted(r.partition_key for r in requests) == ["2026-01-01-01:00", "2026-01-01-02:00"]
    again = build_sensor_context(cursor=context.cursor, resources={"landing_zone": zone, "warehouse": WarehouseResource(path=str(tmp_path / "w.duckdb"))})
    assert not isinstance(sensor(again), list)  # nothing new: a skip
    time.sleep(0.01)
    land("02", "c.jsonl")
    third = build_sensor_context(cursor=context.cursor, resources={"landing_zone": zone, "warehouse": WarehouseResource(path=str(tmp_path / "w.duckdb"))})
    [request] = sensor(third)
    assert request.partition_key == "2026-01-01-02:00"
    assert request.run_key != requests[1].run_key


def test_a_file_landed_late_or_with_an_old_mtime_is_still_requested(tmp_path):
    """`mv` keeps a file's mtime; a cursor on mtime would skip a file moved in after a tick."""
    from cdp_assets.sources.sensors import file_set_digest, plan_landing_runs

    zone = LandingZoneResource(root=str(tmp_path))
    folder = tmp_path / "landing" / "web" / "dt=2026-01-01" / "hour=05"
    folder.mkdir(parents=True)
    (folder / "a.jsonl").write_text("{}\n")
    first = plan_landing_runs(zone.landing_files("web"), None)
    assert [key for key, _ in first.requests] == ["2026-01-01-05:00"]
    outside = tmp_path / "b.jsonl"
    outside.write_text("{}\n")
    os.utime(outside, (0, 0))
    os.rename(outside, folder / "b.jsonl")
    second = plan_landing_runs(zone.landing_files("web"), first.cursor)
    assert second.requests == [("2026-01-01-05:00", file_set_digest([folder / "a.jsonl", folder / "b.jsonl"]))]
    assert plan_landing_runs(zone.landing_files("web"), second.cursor).requests == []


def test_ticks_while_the_collector_writes_cover_every_file_and_never_repeat_a_run(tmp_path):
    from cdp_assets.sources.sensors import file_set_digest, plan_landing_runs

    zone = LandingZoneResource(root=str(tmp_path))
    stop = threading.Event()

    def write():
        for n in range(400):
            folder = tmp_path / "landing" / "web" / "dt=2026-01-01" / f"hour={n % 3:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f".tmp-{n}").write_text("{}\n")
            os.rename(folder / f".tmp-{n}", folder / f"{n:05d}.jsonl")
        stop.set()

    writer = threading.Thread(target=write)
    writer.start()
    cursor, requested = None, []
    while True:
        done = stop.is_set()
        plan = plan_landing_runs(zone.landing_files("web"), cursor)
        requested += plan.requests
        cursor = plan.cursor
        if done:
            break
    writer.join()
    assert len(requested) == len(set(requested))  # one run per distinct file set
    last = dict(requested)  # the newest request of each hour covers all of its files
    for hour in ("00", "01", "02"):
        files = sorted((tmp_path / "landing" / "web" / "dt=2026-01-01" / f"hour={hour}").glob("*.jsonl"))
        assert last[f"2026-01-01-{hour}:00"] == file_set_digest(files)


def test_cdc_sensor_requests_a_run_when_the_change_files_change(tmp_path):
    from dagster import SkipReason, build_sensor_context

    from cdp_assets.config import SourceConfig
    from cdp_assets.sources.jobs import source_job
    from cdp_assets.sources.sensors import cdc_sensor

    source = SourceConfig(name="crm_customers", kind="cdc", partitions="none")
    sensor = cdc_sensor(source, source_job(source))
    zone = LandingZoneResource(root=str(tmp_path))
    folder = tmp_path / "cdc" / "crm_customers"
    folder.mkdir(parents=True)
    assert isinstance(sensor(build_sensor_context(resources={"landing_zone": zone, "warehouse": WarehouseResource(path=str(tmp_path / "w.duckdb"))})), SkipReason)
    (folder / "0001.json").write_text("{}\n")
    context = build_sensor_context(resources={"landing_zone": zone, "warehouse": WarehouseResource(path=str(tmp_path / "w.duckdb"))})
    first = sensor(context)
    assert isinstance(sensor(build_sensor_context(cursor=context.cursor, resources={"landing_zone": zone, "warehouse": WarehouseResource(path=str(tmp_path / "w.duckdb"))})), SkipReason)
    (folder / "0000.json").write_text("{}\n")
    os.utime(folder / "0000.json", (0, 0))  # an old file dropped late
    second = sensor(build_sensor_context(cursor=context.cursor, resources={"landing_zone": zone, "warehouse": WarehouseResource(path=str(tmp_path / "w.duckdb"))}))
    assert second.run_key != first.run_key


def test_partitioned_schedules_request_the_partition_that_just_closed():
    from datetime import datetime, timezone

    from dagster import build_schedule_context

    from cdp_assets.config import SourceConfig
    from cdp_assets.sources.jobs import source_job
    from cdp_assets.sources.schedules import source_schedule

    for partitions, expected in [("hourly", "2026-03-04-06:00"), ("daily", "2026-03-03")]:
        source = SourceConfig(name="s", kind="csv", partitions=partitions, columns={"a": "string"})
        schedule = source_schedule(source, source_job(source))
        context = build_schedule_context(scheduled_execution_time=datetime(2026, 3, 4, 7, 5, tzinfo=timezone.utc))
        request = schedule(context)
        assert request.partition_key == expected
