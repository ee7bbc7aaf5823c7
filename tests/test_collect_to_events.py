"""From the real SDKs to `cdp.events`: collector → landing files → landing sensor → partition runs."""

from __future__ import annotations

import uuid

import duckdb
import pytest
import requests
from dagster import SkipReason, build_sensor_context, materialize

from cdp_assets.config import load_sources
from cdp_assets.events.assets import validation_assets
from cdp_assets.sources.assets import build_source_asset
from cdp_assets.sources.jobs import source_job
from cdp_assets.sources.sensors import landing_sensor
from cdp_resources import LandingZoneResource, OrdersApiResource, WarehouseResource
from test_collector import start_server

pytestmark = pytest.mark.slow
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def test_sdk_messages_arrive_once_in_cdp_events_after_the_sensor_run(tmp_path, monkeypatch):
    import rudderstack.analytics as rudder
    from segment.analytics import Client

    data_dir = tmp_path / "data"
    monkeypatch.setenv("CDP_WRITE_KEYS", "wk_e2e")
    monkeypatch.setenv("CDP_DATA_DIR", str(data_dir))
    server, thread, url = start_server(data_dir)
    sent = []
    try:
        segment = Client("wk_e2e", host=url, max_retries=1)
        for i in range(40):
            message_id = str(uuid.uuid4())
            sent.append(message_id)
            if i % 4 == 0:
                segment.identify(f"user-{i}", {"email": f"U{i}@Example.com "}, anonymous_id=f"anon-{i}", message_id=message_id)
            else:
                segment.track(f"user-{i}", "product_viewed", {"product_id": f"sku_{i}"}, message_id=message_id)
        segment.flush()
        segment.join()
        monkeypatch.setattr(rudder, "write_key", "wk_e2e")
        monkeypatch.setattr(rudder, "dataPlaneUrl", url, raising=False)
        monkeypatch.setattr(rudder, "default_client", None)
        for i in range(20):
            message_id = str(uuid.uuid4())
            sent.append(message_id)
            rudder.track(f"app-user-{i}", "product_added", {"product_id": f"sku_{i}", "price": i}, message_id=message_id)
        rudder.flush()
        rudder.shutdown()
        # A client retrying a delivery it did not see acknowledged: the same messageId lands twice.
        replay = {"batch": [{"type": "track", "messageId": sent[1], "userId": "user-1", "event": "product_viewed",
                            "properties": {"product_id": "sku_1"}}]}
        assert requests.post(f"{url}/v1/batch", json=replay, auth=("wk_e2e", ""), timeout=10).status_code == 200
    finally:
        server.should_exit = True
        thread.join(10)

    events = events_in_warehouse(data_dir, rerun_a_partition=True)
    assert set(events) == set(sent) and len(events) == len(sent) == 60


def events_in_warehouse(data_dir, rerun_a_partition: bool = False) -> dict[str, dict]:
    """Runs what production runs on the landed `web` files (the landing sensor, a run per partition it asks
    for, then validation) and returns `cdp.events` by event id; fails if anything was quarantined.
    `rerun_a_partition`: run the first partition twice, as a retried run would."""
    source = load_sources()["web"]
    job = source_job(source)
    sensor = landing_sensor(source, job)
    landing = LandingZoneResource()
    context = build_sensor_context(resources={"landing_zone": landing, "warehouse": WarehouseResource()})
    run_requests = sensor(context)
    assert run_requests and len({r.run_key for r in run_requests}) == len(run_requests)
    resources = {"warehouse": WarehouseResource(), "landing_zone": landing, "orders_api": OrdersApiResource()}
    raw = build_source_asset(source)
    for request in run_requests:
        assert materialize([raw], partition_key=request.partition_key, resources=resources, run_config=QUIET).success
    assert isinstance(sensor(build_sensor_context(cursor=context.cursor, resources={"landing_zone": landing, "warehouse": WarehouseResource()})), SkipReason)
    if rerun_a_partition:  # must not double anything
        assert materialize([raw], partition_key=run_requests[0].partition_key, resources=resources, run_config=QUIET).success
    assert materialize([validation_assets()], resources=resources, run_config=QUIET).success

    con = duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)
    try:
        cursor = con.execute("SELECT * FROM cdp.events")
        columns = [column[0] for column in cursor.description]
        rows = [dict(zip(columns, row)) for row in cursor.fetchall()]
        quarantined = con.execute("SELECT reasons FROM cdp.quarantine").fetchall()
    finally:
        con.close()
    assert quarantined == []
    events = {row["event_id"]: row for row in rows}
    assert len(events) == len(rows)
    return events
