"""The orders API pull against a real local HTTP server that misbehaves: 429, 500, hangs, repeated pages."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from cdp_resources.orders_api import ApiError, OrdersApiResource

ORDERS = [
    {"order_id": f"o{i:03d}", "customer_email": f"c{i}@example.com", "amount": i, "currency": "EUR",
     "status": "completed", "items": ["sku_1"], "created_at": f"2026-01-01T00:{i:02d}:00Z"}
    for i in range(25)
]


@contextmanager
def api(faults: list[str], page_size: int = 10, repeat_after: int | None = None, orders: list[dict] = ORDERS):
    """Serves `orders` (read at each request) with cursor pagination, the cursor being an offset; each
    request first consumes one fault from `faults`."""
    log: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            log.append(self.path)
            fault = faults.pop(0) if faults else "ok"
            if fault == "500":
                return self._send(500, b"boom")
            if fault.startswith("429"):
                return self._send(429, b"slow down", {"Retry-After": fault.split(":")[1]})
            if fault == "hang":
                time.sleep(1.5)
            cursor = parse_qs(urlparse(self.path).query).get("cursor", [""])[0]
            start = int(cursor or 0)
            if repeat_after is not None and start >= repeat_after:
                start = repeat_after - page_size  # a buggy API serving the previous page again
                next_cursor = cursor
            else:
                next_cursor = str(start + page_size) if start + page_size < len(orders) else None
            body = json.dumps({"data": orders[start:start + page_size], "next_cursor": next_cursor}).encode()
            return self._send(200, body)

        def _send(self, status, body, headers=None):
            try:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()


def client(**overrides) -> OrdersApiResource:
    settings = {"page_size": 10, "read_timeout_s": 0.5, "backoff_base_s": 0.01, "backoff_max_s": 0.05, "max_attempts": 5}
    return OrdersApiResource(**{**settings, **overrides})


def test_recovers_from_500_429_and_a_hang_and_honours_retry_after():
    with api(["500", "429:1", "hang"]) as (url, log):
        started = time.monotonic()
        pages = list(client().pages(url, None))
        elapsed = time.monotonic() - started
    assert [o["order_id"] for page, _ in pages for o in page] == [o["order_id"] for o in ORDERS]
    assert elapsed >= 1.0  # waited for Retry-After
    assert len(log) == 3 + 3  # three failed attempts, then three pages
    assert pages[-1][1] == "20"


def test_gives_up_with_a_clear_error_after_the_last_attempt():
    with api(["500"] * 10) as (url, _):
        with pytest.raises(ApiError, match="failed 3 times, last: 500"):
            list(client(max_attempts=3).pages(url, None))


def test_a_repeated_page_ends_the_pull_instead_of_looping():
    with api([], repeat_after=20) as (url, log):
        pages = list(client().pages(url, None))
    assert len(log) == 3 and len(pages) == 3


def test_resumes_from_the_cursor():
    with api([]) as (url, log):
        pages = list(client().pages(url, "10"))
    assert [o["order_id"] for o in pages[0][0]][0] == "o010"


def test_client_side_rate_limit_spaces_calls():
    with api([]) as (url, _):
        started = time.monotonic()
        list(client(calls_per_minute=600).pages(url, None))  # 0.1 s between calls
        assert time.monotonic() - started >= 0.2


def test_extract_commits_page_by_page_and_resumes_after_a_failure(tmp_path, monkeypatch):
    import duckdb
    from dagster import AssetSelection, materialize

    from cdp_assets.config import load_sources
    from cdp_assets.sources.assets import build_source_asset
    from cdp_resources import LandingZoneResource, WarehouseResource

    monkeypatch.setenv("CDP_DATA_DIR", str(tmp_path))
    asset = build_source_asset(load_sources()["orders"])
    resources = {"warehouse": WarehouseResource(), "landing_zone": LandingZoneResource()}
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    # First run: the second page fails on every attempt.
    with api(["ok", "500", "500", "500"]) as (url, _):
        monkeypatch.setenv("CDP_ORDERS_API_URL", url)
        result = materialize([asset], resources={**resources, "orders_api": client(max_attempts=3)},
                             run_config=quiet, raise_on_error=False, selection=AssetSelection.all())
    assert not result.success
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    assert con.execute("SELECT count(*) FROM raw.orders").fetchone()[0] == 10
    assert con.execute("SELECT cursor FROM raw.cursors WHERE source = 'orders'").fetchone()[0] == "10"
    con.close()
    with api([]) as (url, log):
        monkeypatch.setenv("CDP_ORDERS_API_URL", url)
        result = materialize([asset], resources={**resources, "orders_api": client()}, run_config=quiet)
    assert result.success and "cursor=10" in log[0]
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    ids = [r[0] for r in con.execute("SELECT record::JSON ->> 'order_id' FROM raw.orders ORDER BY 1").fetchall()]
    assert ids == [o["order_id"] for o in ORDERS]


def _extract(tmp_path, monkeypatch, url: str | None, orders_api: OrdersApiResource | None = None):
    from dagster import materialize

    from cdp_assets.config import load_sources
    from cdp_assets.sources.assets import build_source_asset
    from cdp_resources import LandingZoneResource, WarehouseResource

    monkeypatch.setenv("CDP_DATA_DIR", str(tmp_path))
    if url is None:
        monkeypatch.delenv("CDP_ORDERS_API_URL", raising=False)
    else:
        monkeypatch.setenv("CDP_ORDERS_API_URL", url)
    resources = {"warehouse": WarehouseResource(), "landing_zone": LandingZoneResource(), "orders_api": orders_api or client()}
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    return materialize([build_source_asset(load_sources()["orders"])], resources=resources, run_config=quiet, raise_on_error=False)


def _held(tmp_path) -> list[tuple[str, str]]:
    import duckdb

    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        return con.execute("SELECT record::JSON ->> 'order_id', record::JSON ->> 'status' FROM raw.orders ORDER BY ALL").fetchall()


def test_a_pull_repeated_stores_each_record_once_and_picks_up_what_was_added(tmp_path, monkeypatch):
    """The cursor re-reads the last page on purpose: what it already holds is not stored again (79 orders
    once gave 79 -> 108 -> 137 raw rows), what was added or changed on that page is."""
    orders = [dict(order) for order in ORDERS]
    with api([], orders=orders) as (url, log):
        for _ in range(3):
            assert _extract(tmp_path, monkeypatch, url).success
        assert len(_held(tmp_path)) == len(ORDERS) == 25
        assert "cursor=20" in log[-1]  # the third pull did re-read the last page
        orders.append({**ORDERS[0], "order_id": "o025", "created_at": "2026-01-01T01:00:00Z"})
        orders[22] = {**orders[22], "status": "refunded"}  # a changed version of an order on the re-read page
        result = _extract(tmp_path, monkeypatch, url)
    assert result.success
    held = _held(tmp_path)
    assert len(held) == 27 and ("o025", "completed") in held and ("o022", "refunded") in held and ("o022", "completed") in held
    [event] = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert metadata["records_loaded"].value == 2 and metadata["already_held"].value == 4  # o020, o021, o023, o024


def test_without_its_url_the_pull_fails_naming_the_variable(tmp_path, monkeypatch):
    """No built-in demo server in the production resource: an unset URL is an error, even beside sample data."""
    (tmp_path / "api" / "orders").mkdir(parents=True)
    (tmp_path / "api" / "orders" / "orders.jsonl").write_text(json.dumps(ORDERS[0]) + "\n")
    result = _extract(tmp_path, monkeypatch, None)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "CDP_ORDERS_API_URL is not set" in failure.step_failure_data.error.to_string()


def test_cdp_run_serves_the_sample_api_only_over_the_demos_data(tmp_path, monkeypatch):
    import requests

    from cdp_assets.sample_orders_api import MANIFEST, orders_api_for_run
    from cdp_resources.orders_api import OrdersApiNotConfigured

    monkeypatch.delenv("CDP_ORDERS_API_URL", raising=False)
    (tmp_path / "api" / "orders").mkdir(parents=True)
    (tmp_path / "api" / "orders" / "orders.jsonl").write_text("".join(json.dumps(o) + "\n" for o in ORDERS))
    with orders_api_for_run(client(), tmp_path) as (resource, note):  # not the demo's data: as configured
        with pytest.raises(OrdersApiNotConfigured, match="CDP_ORDERS_API_URL"):
            resource.base_url()
        assert "CDP_ORDERS_API_URL is not set" in note
    (tmp_path / MANIFEST).write_text("{}")
    with orders_api_for_run(client(), tmp_path) as (resource, note):
        assert resource.base_url().startswith("http://127.0.0.1:") and "sample API" in note
        served = resource.base_url()
        result = _extract(tmp_path, monkeypatch, None, resource)  # the resource cdp run hands to Dagster
    assert result.success and [i for i, _ in _held(tmp_path)] == [o["order_id"] for o in ORDERS]
    with pytest.raises(requests.ConnectionError):  # served for the run only
        requests.get(f"{served}/orders", timeout=2)
    monkeypatch.setenv("CDP_ORDERS_API_URL", "http://127.0.0.1:9/api/")
    with orders_api_for_run(client(), tmp_path) as (resource, _):  # a configured URL always wins
        assert resource.base_url() == "http://127.0.0.1:9/api"


def test_cdp_sample_api_serves_the_demos_orders_for_the_ui(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    import requests

    (tmp_path / "api" / "orders").mkdir(parents=True)
    (tmp_path / "api" / "orders" / "orders.jsonl").write_text("".join(json.dumps(o) + "\n" for o in reversed(ORDERS)))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "CDP_DATA_DIR": str(tmp_path)}
    server = subprocess.Popen([sys.executable, "-m", "cdp_assets.cli", "sample-api", "--port", str(port)], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert f"CDP_ORDERS_API_URL=http://127.0.0.1:{port}" in server.stdout.readline()
        pages = list(client().pages(f"http://127.0.0.1:{port}", None))
    finally:
        server.terminate()
        server.wait(10)
    assert [o["order_id"] for page, _ in pages for o in page] == [o["order_id"] for o in ORDERS]  # in cursor order
