"""Delivery to a real local HTTP server that fails, then recovers: once per key, in order per person."""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import duckdb
import polars as pl
import psycopg
import pytest
from standardwebhooks import Webhook

from cdp_assets.activation.config import Destination
from cdp_assets.activation.definitions import replay_dead_letters_job
from cdp_assets.activation.deliveries import deliver
from cdp_assets.activation.exports import export_segment_files, segment_members, write_back_tags
from cdp_resources import WarehouseResource
from cdp_resources.destinations import HttpDelivery

SECRET = "whsec_" + base64.b64encode(b"destination-secret-for-tests-012").decode()
T0 = datetime(2026, 5, 1, 8, 0)


class Receiver:
    """A destination that answers from a script ("500", "429", "hang", "400"; then 200) and keeps what it accepted."""

    def __init__(self, script=()):
        self.script, self.accepted, self.requests = list(script), [], 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                Webhook(SECRET).verify(body, {k: v for k, v in self.headers.items()})  # raises when unsigned or tampered
                assert self.headers["Idempotency-Key"] == self.headers["webhook-id"]
                receiver.requests += 1
                step = receiver.script.pop(0) if receiver.script else "200"
                if step == "hang":
                    time.sleep(1.0)
                    step = "503"
                if step == "200":
                    receiver.accepted += json.loads(body)["batch"]
                self.send_response(int(step))
                if step == "429":
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def warehouse(tmp_path, monkeypatch):
    monkeypatch.setenv("CDP_DATA_DIR", str(tmp_path))
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    con.execute("CREATE SCHEMA cdp; CREATE SCHEMA core")
    con.execute("CREATE TABLE cdp.profiles (person_id VARCHAR, email VARCHAR, total_revenue DOUBLE)")
    con.execute("INSERT INTO cdp.profiles VALUES ('p1', 'Ann@X.io', 600), ('p2', 'bo@x.io', 20), ('p3', NULL, 0)")
    con.execute("CREATE TABLE cdp.segment_changes (segment VARCHAR, person_id VARCHAR, change VARCHAR, changed_at TIMESTAMP)")
    changes = [("vip", p, c, T0 + timedelta(hours=h)) for h, (p, c) in enumerate(
        [("p1", "entered"), ("p2", "entered"), ("p1", "exited"), ("p3", "entered"), ("p1", "entered"), ("p2", "exited")])]
    con.executemany("INSERT INTO cdp.segment_changes VALUES (?, ?, ?, ?)", changes)
    con.execute("CREATE TABLE core.person_events (person_id VARCHAR, event_id VARCHAR, event_name VARCHAR, occurred_at TIMESTAMP, properties JSON)")
    con.execute("INSERT INTO core.person_events VALUES ('p2', 'e1', 'order_completed', ?, '{\"revenue\": 12}'), ('p2', 'e2', 'page', ?, '{}')",
                [T0 + timedelta(minutes=30), T0])
    con.close()
    return WarehouseResource()


def _destination(**overrides) -> Destination:
    base = dict(name="hook", kind="http", url_env="X", segments=("vip",), events=("order_completed",),
                fields={"email": "email", "revenue": "total_revenue"}, hash_identifiers=True, batch_size=2, max_attempts=5)
    return Destination(**{**base, **overrides})


def _client(url: str) -> HttpDelivery:
    return HttpDelivery(url, SECRET, tries=2, timeout_s=0.5, backoff_base_s=0.01, backoff_max_s=0.02)


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/hook"


def _ledger(warehouse):
    with warehouse.connect() as con:
        return con.execute("SELECT idempotency_key, person_id, ordered_at, status, attempts FROM cdp.deliveries ORDER BY ordered_at").fetchall()


def test_failures_then_recovery_deliver_each_item_once_and_in_order_per_person(warehouse):
    destination = _destination()
    refused = deliver(warehouse.connect, destination, _client(_closed_port_url()))
    # 6 changes + 1 subscribed event; after a failed batch, the later items of its persons wait
    assert (refused.enqueued, refused.sent, refused.failed, refused.waiting) == (7, 0, 3, 4)
    receiver = Receiver(["500", "500", "429", "hang", "hang"])
    try:
        for _ in range(6):
            deliver(warehouse.connect, destination, _client(receiver.url))
        ledger = _ledger(warehouse)
        assert {status for *_, status, _ in ledger} == {"sent"}
        keys = [item["idempotency_key"] for item in receiver.accepted]
        assert sorted(keys) == sorted(key for key, *_ in ledger)  # every item exactly once
        expected = {}
        for key, person, *_ in ledger:
            expected.setdefault(person, []).append(key)
        arrived = {}
        for item in receiver.accepted:
            arrived.setdefault(item["person_id"], []).append(item["idempotency_key"])
        assert arrived == expected  # in order per person
        first = next(i for i in receiver.accepted if i["type"] == "segment_change" and i["person_id"] == "p1")
        assert first["traits"]["email"] == __import__("hashlib").sha256(b"ann@x.io").hexdigest()
        assert first["traits"]["revenue"] == 600
        requests_before = receiver.requests
        again = deliver(warehouse.connect, destination, _client(receiver.url))  # a re-run sends nothing
        assert (again.enqueued, again.sent, receiver.requests) == (0, 0, requests_before)
    finally:
        receiver.close()


def test_dead_letters_hold_the_persons_later_items_until_replayed(warehouse):
    destination = _destination(events=(), batch_size=1, max_attempts=2)
    receiver = Receiver(["400"])  # the first item (p1 entered) is refused for good
    try:
        report = deliver(warehouse.connect, destination, _client(receiver.url))
        assert report.dead_lettered == 1 and report.waiting == 2  # p1's two later changes wait behind it
        statuses = {(person, status) for _, person, _, status, _ in _ledger(warehouse)}
        assert ("p1", "dead") in statuses and ("p1", "pending") in statuses and ("p2", "sent") in statuses
        replayed = replay_dead_letters_job.execute_in_process(
            resources={"warehouse": warehouse},
            run_config={"ops": {"replay_dead_letters_op": {"config": {"destination": "hook"}}}},
        )
        assert replayed.output_for_node("replay_dead_letters_op") == 1
        deliver(warehouse.connect, destination, _client(receiver.url))
        p1 = [i["change"] for i in receiver.accepted if i["person_id"] == "p1"]
        assert p1 == ["entered", "exited", "entered"]
    finally:
        receiver.close()


def test_segment_lists_are_exported_as_csv_and_parquet(warehouse, tmp_path):
    with warehouse.connect() as con:
        con.execute("CREATE TABLE cdp.segment_membership (segment VARCHAR, person_id VARCHAR, entered_at TIMESTAMP)")
        con.execute("INSERT INTO cdp.segment_membership VALUES ('vip', 'p1', ?), ('vip', 'p3', ?)", [T0, T0])
        destination = Destination(name="files", kind="file", segments=("vip",), fields={"email": "email"})
        members = segment_members(con, destination, destination.segments)
    for fmt in ("csv", "parquet"):
        written = export_segment_files(members, Destination(**{**destination.__dict__, "format": fmt}), tmp_path / "exports", T0)
        [path] = (tmp_path / "exports" / "vip").glob(f"*.{fmt}")
        frame = pl.read_csv(path) if fmt == "csv" else pl.read_parquet(path)
        assert written == {"vip": 2} and frame["person_id"].to_list() == ["p1", "p3"] and frame["email"].to_list()[0] == "Ann@X.io"
    assert not list((tmp_path / "exports").rglob(".*"))  # no temp file left behind


@pytest.mark.postgres
def test_crm_write_back_upserts_segments_and_clears_those_who_left(warehouse):
    dsn = os.environ.get("CDP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        pg = psycopg.connect(dsn, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL must answer at {dsn} in CI: {exc}")
        pytest.skip(f"no PostgreSQL server answers at {dsn} ({exc})")
    schema = f"crm_{uuid.uuid4().hex[:8]}"
    pg.execute(f"CREATE SCHEMA {schema}")
    try:
        destination = Destination(name="crm", kind="postgres", dsn_env="X", table=f"{schema}.tags",
                                  segments=("vip", "lapsed"), fields={"revenue": "total_revenue"})
        with warehouse.connect() as con:
            con.execute("CREATE TABLE cdp.segment_membership (segment VARCHAR, person_id VARCHAR, entered_at TIMESTAMP)")
            con.execute("INSERT INTO cdp.segment_membership VALUES ('vip', 'p1', ?), ('lapsed', 'p1', ?), ('vip', 'p2', ?)", [T0] * 3)
            members = segment_members(con, destination, destination.segments)
        assert write_back_tags(members, destination, dsn) == {"persons": 2, "cleared": 0}
        with warehouse.connect() as con:
            con.execute("DELETE FROM cdp.segment_membership WHERE person_id = 'p2'")
            members = segment_members(con, destination, destination.segments)
        assert write_back_tags(members, destination, dsn) == {"persons": 1, "cleared": 1}
        rows = dict(pg.execute(f"SELECT person_id, segments FROM {schema}.tags").fetchall())
        assert rows == {"p1": ["lapsed", "vip"], "p2": []}
        assert pg.execute(f"SELECT traits ->> 'revenue' FROM {schema}.tags WHERE person_id = 'p1'").fetchone()[0] == "600.0"
    finally:
        pg.execute(f"DROP SCHEMA {schema} CASCADE")
        pg.close()
