"""Delivery to a real local HTTP server that fails, then recovers: once per key, in order per person."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import duckdb
import polars as pl
import pytest
from dagster import materialize
from standardwebhooks import Webhook, WebhookVerificationError

from cdp_assets.activation.assets import build_destination_asset
from cdp_assets.activation.config import Destination, load_destinations, unknown_segments
from cdp_assets.activation.definitions import replay_dead_letters_job
from cdp_assets.activation.deliveries import deliver, ensure_ledger
from cdp_assets.activation.exports import export_segment_files, segment_members, write_back_tags
from cdp_assets.config import ConfigError
from cdp_resources import WarehouseResource
from cdp_resources.destinations import HttpDelivery
from cdp_resources.settings import config_dir

SECRET = "whsec_" + base64.b64encode(b"destination-secret-for-tests-012").decode()
T0 = datetime(2026, 5, 1, 8, 0)
TIMEOUT_S = 0.5  # only where the script makes the receiver hang; elsewhere a slow machine must not time out
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


class Receiver:
    """A Standard Webhooks receiver scripted to fail, then recover.

    Script steps, one per request: "500", "400", "401", "429" or "429:<Retry-After>", "hang" (answer
    after the client's timeout, accepting nothing), "accept-hang" (accept, then answer after the
    timeout); then 200. `refuse(item)`: a batch holding an item it refuses gets `refused_status` (400). Like a real receiver it verifies the signature and deduplicates by webhook-id:
    `accepted` holds each item once, `duplicates` counts batches recognised as already accepted.
    """

    def __init__(self, script=(), port: int = 0, delay_s: float = 0.0, refuse=None, refused_status: str = "400"):
        self.script, self.delay_s, self.refuse, self.refused_status = list(script), delay_s, refuse, refused_status
        self.accepted, self.seen_ids, self.arrivals = [], set(), []
        self.requests = self.duplicates = self.bad = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.answer(body, dict(self.headers.items()))
                self.send_response(status[0])
                for name, value in status[1].items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, body: bytes, headers: dict) -> tuple[int, dict]:
        try:
            Webhook(SECRET).verify(body, headers)
        except WebhookVerificationError:
            self.bad += 1
            return 401, {}
        if headers.get("Idempotency-Key") != headers.get("webhook-id"):
            self.bad += 1
            return 400, {}
        with self.lock:
            self.requests += 1
            self.arrivals.append(time.monotonic())
            step = self.script.pop(0) if self.script else "200"
            if step == "200" and self.refuse and any(self.refuse(item) for item in json.loads(body)["batch"]):
                step = self.refused_status
            key = headers["webhook-id"]
            if step in ("200", "accept-hang"):
                if key in self.seen_ids:
                    self.duplicates += 1
                else:
                    self.seen_ids.add(key)
                    self.accepted += json.loads(body)["batch"]
        if step in ("hang", "accept-hang"):
            time.sleep(TIMEOUT_S * 2)
            return 503, {}
        if step == "200":
            time.sleep(self.delay_s)
            return 200, {}
        if step.startswith("429"):
            return 429, {"Retry-After": step.partition(":")[2] or "0"}
        return int(step), {}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


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
    base = dict(name="hook", kind="http", url_env="CDP_TEST_HOOK_URL", segments=("vip",), events=("order_completed",),
                fields={"email": "email", "revenue": "total_revenue"}, hash_identifiers=True, batch_size=2, max_attempts=5,
                outage_backoff_s=0)
    return Destination(**{**base, **overrides})


def _client(url: str, timeout_s: float = 10.0) -> HttpDelivery:
    return HttpDelivery(url, SECRET, tries=2, timeout_s=timeout_s, backoff_base_s=0.01, backoff_max_s=0.02)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ledger(warehouse):
    with warehouse.connect() as con:
        return con.execute("SELECT idempotency_key, person_id, ordered_at, status, attempts FROM cdp.deliveries ORDER BY enqueued_at, ordered_at, idempotency_key").fetchall()


def _assert_exactly_once_in_order(receiver: Receiver, warehouse) -> None:
    ledger = _ledger(warehouse)
    assert {status for *_, status, _ in ledger} == {"sent"}
    keys = [item["idempotency_key"] for item in receiver.accepted]
    assert sorted(keys) == sorted(key for key, *_ in ledger)  # every item exactly once
    expected, arrived = {}, {}
    for key, person, *_ in ledger:
        expected.setdefault(person, []).append(key)
    for item in receiver.accepted:
        arrived.setdefault(item["person_id"], []).append(item["idempotency_key"])
    assert arrived == expected  # in order per person
    assert receiver.bad == 0  # every request signed, Idempotency-Key == webhook-id


def test_failures_then_recovery_deliver_each_item_once_and_in_order_per_person(warehouse):
    destination = _destination()
    port = _free_port()
    refused = deliver(warehouse.connect, destination, _client(f"http://127.0.0.1:{port}/hook"))
    # 6 changes + 1 subscribed event; nobody listens: the first batch waits, the rest untouched, no attempt spent
    assert (refused.enqueued, refused.sent, refused.waited, refused.failed, refused.deferred) == (7, 0, 2, 0, 5)
    assert refused.stopped and refused.open_total == 7
    assert sorted((s, a) for *_, s, a in _ledger(warehouse)) == [("pending", 0)] * 5 + [("waiting", 0)] * 2
    receiver = Receiver(["500", "500", "429", "hang", "accept-hang", "hang", "500"], port=port)
    try:
        for _ in range(8):
            report = deliver(warehouse.connect, destination, _client(receiver.url, TIMEOUT_S))
            if not report.open_total:
                break
        assert report.dead_total == 0
        _assert_exactly_once_in_order(receiver, warehouse)
        assert receiver.duplicates >= 1  # the batch whose 200 was lost came back under the same key
        first = next(i for i in receiver.accepted if i["type"] == "segment_change" and i["person_id"] == "p1")
        assert first["traits"]["email"] == hashlib.sha256(b"ann@x.io").hexdigest()
        assert first["traits"]["revenue"] == 600
        requests_before = receiver.requests
        again = deliver(warehouse.connect, destination, _client(receiver.url))  # a re-run sends nothing
        assert (again.enqueued, again.sent, receiver.requests) == (0, 0, requests_before)
    finally:
        receiver.close()


def test_a_batch_whose_answer_was_lost_is_resent_as_it_was(warehouse):
    """Accepted, but the client timed out: the next run re-sends the same items under the same key even
    though the batch size changed, so a receiver deduplicating by webhook-id lands them once."""
    receiver = Receiver(["accept-hang", "hang"])
    try:
        first = deliver(warehouse.connect, _destination(events=(), batch_size=3), _client(receiver.url, TIMEOUT_S))
        assert first.waited == 3 and first.sent == 1  # p3's entry does not wait behind p1 and p2
        second = deliver(warehouse.connect, _destination(events=(), batch_size=10), _client(receiver.url))
        assert second.sent == 5 and receiver.duplicates >= 1
        _assert_exactly_once_in_order(receiver, warehouse)
    finally:
        receiver.close()


def test_a_dead_item_holds_nothing_and_a_replayed_one_arrives_after_the_persons_later_items(warehouse):
    destination = _destination(events=(), batch_size=1, max_attempts=2)
    receiver = Receiver(["400"])  # the first item (p1 entered) is refused for good
    try:
        report = deliver(warehouse.connect, destination, _client(receiver.url))
        assert (report.dead_lettered, report.held, report.sent) == (1, 0, 5)  # p1's later changes flow
        statuses = sorted((person, status, attempts) for _, person, _, status, attempts in _ledger(warehouse))
        assert statuses == [("p1", "dead", 1), ("p1", "sent", 1), ("p1", "sent", 1), ("p2", "sent", 1), ("p2", "sent", 1), ("p3", "sent", 1)]
        replayed = replay_dead_letters_job.execute_in_process(
            resources={"warehouse": warehouse},
            run_config={"ops": {"replay_dead_letters_op": {"config": {"destination": "hook"}}}},
        )
        assert replayed.output_for_node("replay_dead_letters_op") == 1
        deliver(warehouse.connect, destination, _client(receiver.url))
        p1 = [i["change"] for i in receiver.accepted if i["person_id"] == "p1"]
        assert p1 == ["exited", "entered", "entered"]  # the replayed first entry last
        assert {status for *_, status, _ in _ledger(warehouse)} == {"sent"} and receiver.bad == 0
    finally:
        receiver.close()


def test_retry_after_is_honoured_and_a_long_one_ends_the_run(warehouse):
    receiver = Receiver(["429:1", "429:120"])
    try:
        destination = _destination(events=(), batch_size=3)
        started = time.monotonic()
        report = deliver(warehouse.connect, destination, _client(receiver.url))
        assert receiver.arrivals[1] - receiver.arrivals[0] >= 0.95  # waited Retry-After: 1 before the retry
        assert time.monotonic() - started < 5  # did not sleep through Retry-After: 120
        assert (report.sent, report.waited, report.failed, report.deferred) == (0, 3, 0, 3) and "429" in report.stopped
        assert {(s, a) for *_, s, a in _ledger(warehouse)} == {("waiting", 0), ("pending", 0)}
        deliver(warehouse.connect, destination, _client(receiver.url))
        _assert_exactly_once_in_order(receiver, warehouse)
    finally:
        receiver.close()


def test_a_destination_refusing_us_is_not_dead_lettered(warehouse):
    receiver = Receiver(["401"])  # a wrong credential is the destination's configuration, not the items'
    try:
        report = deliver(warehouse.connect, _destination(), _client(receiver.url))
        assert (report.waited, report.failed, report.dead_lettered, report.deferred) == (2, 0, 0, 5) and "401" in report.stopped
    finally:
        receiver.close()


def test_concurrent_runs_of_one_destination_send_nothing_twice(warehouse, tmp_path):
    receiver = Receiver(delay_s=0.05)
    lock = tmp_path / "deliveries.hook.lock"
    reports = []
    try:
        runs = [threading.Thread(target=lambda: reports.append(
            deliver(warehouse.connect, _destination(), _client(receiver.url), lock_path=lock))) for _ in range(2)]
        for run in runs:
            run.start()
        for run in runs:
            run.join(30)
        assert sorted(r.sent for r in reports) == [0, 7]
        assert (receiver.requests, receiver.duplicates) == (4, 0)
        _assert_exactly_once_in_order(receiver, warehouse)
    finally:
        receiver.close()


def test_destination_asset_reports_per_run_and_skips_without_url(warehouse, monkeypatch):
    receiver = Receiver(["500"])
    try:
        monkeypatch.setenv("CDP_TEST_HOOK_URL", receiver.url)
        monkeypatch.setenv("CDP_TEST_HOOK_SECRET", SECRET)
        asset = build_destination_asset(_destination(secret_env="CDP_TEST_HOOK_SECRET"), {"vip"})
        result = materialize([asset], resources={"warehouse": warehouse}, run_config=QUIET)
        [materialization] = result.asset_materializations_for_node(asset.op.name)
        metadata = {k: v.value for k, v in materialization.metadata.items()}
        assert (metadata["enqueued"], metadata["sent"], metadata["retried"], metadata["dead_lettered"]) == (7, 7, 1, 0)
        assert (metadata["open_total"], metadata["dead_total"]) == (0, 0)
        _assert_exactly_once_in_order(receiver, warehouse)
        monkeypatch.delenv("CDP_TEST_HOOK_URL")
        skipped = materialize([asset], resources={"warehouse": warehouse}, run_config=QUIET)
        [materialization] = skipped.asset_materializations_for_node(asset.op.name)
        assert materialization.metadata["skipped"].value == "CDP_TEST_HOOK_URL is not set"
    finally:
        receiver.close()
    typo = build_destination_asset(_destination(segments=("vipp",)), {"vip"})
    assert typo.descriptions_by_key[typo.key].startswith("INVALID")
    failed = materialize([typo], resources={"warehouse": warehouse}, run_config=QUIET, raise_on_error=False)
    assert not failed.success
    assert any("no segment named vipp" in str(e.event_specific_data.error) for e in failed.all_events if e.is_step_failure)


def test_destinations_config_is_validated(tmp_path):
    shipped = load_destinations(config_dir() / "destinations.yaml")
    known = {path.stem for path in (config_dir() / "segments").glob("*.yaml")}
    assert shipped and all(not unknown_segments(d, known) for d in shipped.values())
    for body, message in [
        ("destinations: {x: {kind: ftp}}", "kind"),
        ("destinations: {x: {kind: http, url_env: U, batch_size: 0}}", "batch_size"),
        ("destinations: {x: {kind: http, url_env: U, colour: red}}", "unknown field"),
        ("destinations: {x: {kind: http}}", "url_env"),
    ]:
        (tmp_path / "destinations.yaml").write_text(body)
        with pytest.raises(ConfigError, match=message):
            load_destinations(tmp_path / "destinations.yaml")


def test_segment_lists_are_exported_as_csv_and_parquet(warehouse, tmp_path):
    with warehouse.connect() as con:
        con.execute("CREATE TABLE cdp.segment_membership (segment VARCHAR, person_id VARCHAR, entered_at TIMESTAMP)")
        con.execute("INSERT INTO cdp.segment_membership VALUES ('vip', 'p1', ?), ('vip', 'p3', ?)", [T0, T0])
        destination = Destination(name="files", kind="file", segments=("vip",), fields={"email": "email"})
        members = segment_members(con, destination, destination.segments)
    for fmt in ("csv", "parquet"):
        written = export_segment_files(members, Destination(**{**destination.__dict__, "format": fmt}), tmp_path / "exports", T0, "run12345abc")
        [path] = (tmp_path / "exports" / "vip").glob(f"*.{fmt}")
        assert path.name == f"20260501T080000Z_run12345.{fmt}"
        frame = pl.read_csv(path) if fmt == "csv" else pl.read_parquet(path)
        assert written == {"vip": 2} and frame["person_id"].to_list() == ["p1", "p3"] and frame["email"].to_list()[0] == "Ann@X.io"
    assert not list((tmp_path / "exports").rglob(".*"))  # no temp file left behind


@pytest.mark.postgres
def test_crm_write_back_upserts_segments_and_clears_those_who_left(warehouse, pg_schema):
    pg, schema, dsn = pg_schema
    destination = Destination(name="crm", kind="postgres", dsn_env="X", table=f"{schema}.tags",
                              segments=("vip", "lapsed"), fields={"revenue": "total_revenue"})
    with warehouse.connect() as con:
        con.execute("CREATE TABLE cdp.segment_membership (segment VARCHAR, person_id VARCHAR, entered_at TIMESTAMP)")
        con.execute("INSERT INTO cdp.segment_membership VALUES ('vip', 'p1', ?), ('lapsed', 'p1', ?), ('vip', 'p2', ?)", [T0] * 3)
        members = segment_members(con, destination, destination.segments)
    assert write_back_tags(members, destination, dsn) == {"persons": 2, "cleared": 0}
    stamps = dict(pg.execute(f"SELECT person_id, updated_at FROM {schema}.tags").fetchall())
    write_back_tags(members, destination, dsn)  # nothing changed: no row is touched
    assert dict(pg.execute(f"SELECT person_id, updated_at FROM {schema}.tags").fetchall()) == stamps
    with warehouse.connect() as con:
        con.execute("DELETE FROM cdp.segment_membership WHERE person_id = 'p2'")
        members = segment_members(con, destination, destination.segments)
    assert write_back_tags(members, destination, dsn) == {"persons": 1, "cleared": 1}
    rows = dict(pg.execute(f"SELECT person_id, segments FROM {schema}.tags").fetchall())
    assert rows == {"p1": ["lapsed", "vip"], "p2": []}
    assert pg.execute(f"SELECT traits ->> 'revenue' FROM {schema}.tags WHERE person_id = 'p1'").fetchone()[0] == "600.0"


def test_items_go_out_in_the_order_the_ledger_learned_of_them(warehouse):
    """Items already in the ledger (here from an earlier run) go first, each enqueue by time."""
    with warehouse.connect() as con:
        ensure_ledger(con)
        con.executemany("INSERT INTO cdp.deliveries VALUES ('hook', ?, 'p9', 'segment_change', ?, ?, 'pending', 0, NULL, ?, NULL)",
                        [(f"old{h}", json.dumps({"type": "segment_change", "person_id": "p9", "n": h}), T0 - timedelta(hours=h), T0)
                         for h in (1, 3, 2)])
    receiver = Receiver()
    try:
        deliver(warehouse.connect, _destination(), _client(receiver.url))
        p9 = [i["n"] for i in receiver.accepted if i["person_id"] == "p9"]
        assert p9 == [3, 2, 1]  # the old items first, oldest first, then the 7 new ones
        assert len(receiver.accepted) == 10 and [i["person_id"] for i in receiver.accepted[:4]] == ["p9"] * 3 + ["p1"]
    finally:
        receiver.close()


def test_activation_follows_segment_runs_without_piling_up():
    from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, RunRequest, SkipReason, build_sensor_context

    from cdp_assets.activation.definitions import activation_after_segments

    with DagsterInstance.ephemeral() as instance:
        instance.add_run(DagsterRun(job_name="refresh_job", status=DagsterRunStatus.SUCCESS))

        def evaluate():
            return activation_after_segments(build_sensor_context(instance=instance))

        assert isinstance(evaluate(), RunRequest)
        # One waiting to start has not read the ledger: it delivers these changes too; one delivering is
        # followed by another once it ends, if segments changed meanwhile (tests/test_orchestration.py).
        instance.add_run(DagsterRun(job_name="activation_job", status=DagsterRunStatus.NOT_STARTED))
        assert isinstance(evaluate(), SkipReason)


def test_a_deletion_notice_from_the_privacy_stage_goes_out_after_the_persons_items(warehouse):
    """The privacy stage writes `person_deleted` items into the ledger by position: the ledger keeps that
    shape, the notice follows the person's open items, and once delivered the ledger forgets whom it was about."""
    from cdp_assets.privacy.erase import _deletion_notices

    receiver = Receiver(["500", "500"])  # p1's first batch fails: p1's items are still open at erasure time
    try:
        destination = _destination(events=(), batch_size=1)
        deliver(warehouse.connect, destination, _client(receiver.url))
        with warehouse.connect() as con:
            assert _deletion_notices(con, {"p1"}, ["hook"]) == 1
        deliver(warehouse.connect, destination, _client(receiver.url))
        p1 = [i.get("change", i["type"]) for i in receiver.accepted if i["person_id"] == "p1"]
        assert p1 == ["entered", "exited", "entered", "person_deleted"]
        with warehouse.connect() as con:
            notice = con.execute("SELECT person_id, payload, status FROM cdp.deliveries WHERE item_kind = 'person_deleted'").fetchone()
            assert notice == (None, '{"type": "person_deleted"}', "sent")
            assert con.execute("SELECT count(*) FROM cdp.delivery_batches").fetchone()[0] == 0
    finally:
        receiver.close()


def test_a_stored_batch_that_lost_a_member_is_batched_afresh():
    from cdp_assets.activation.deliveries import DeliveryReport, Item, _batches, batch_key_of

    whole = batch_key_of(["a", "b", "c"])
    intact = [Item("a", "p1", "{}", whole), Item("b", "p2", "{}", whole), Item("c", "p3", "{}", whole), Item("d", "p4", "{}", None)]
    assert [[i.key for i in b] for b in _batches(intact, set(), 10, DeliveryReport())] == [["a", "b", "c"], ["d"]]
    erased = [intact[0], intact[2], intact[3]]  # b was deleted by an erasure: [a, c] is not the payload `whole` named
    assert [[i.key for i in b] for b in _batches(erased, set(), 10, DeliveryReport())] == [["a", "c", "d"]]
    report = DeliveryReport()
    assert [[i.key for i in b] for b in _batches(intact, {"p2"}, 10, report)] == [["d"]] and report.held == 3
