"""The collector over real HTTP: the Segment and RudderStack SDKs, auth, limits, webhooks, durable landing."""

from __future__ import annotations

import base64
import gzip
import json
import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
import uvicorn
from standardwebhooks import Webhook

from cdp_resources.collector import create_app
from cdp_resources.collector.server import server_options

KEY, MOBILE_KEY = "wk_test_web", "wk_test_mobile"
SECRET = "whsec_" + base64.b64encode(b"billing-secret-for-tests-0123456").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"some-other-secret-0123456789abcd").decode()


@dataclass
class Collector:
    url: str
    data_dir: Path

    def post(self, path: str, body=None, *, key: str | None = KEY, timeout: float = 10, **kwargs) -> requests.Response:
        if body is not None:
            kwargs["data"] = body if isinstance(body, bytes) else json.dumps(body).encode()
        return requests.post(self.url + path, auth=(key, "") if key else None, timeout=timeout, **kwargs)

    def lines(self, source: str = "web") -> list[dict]:
        return [json.loads(line) for path in landed_files(self.data_dir, source) for line in path.read_text().splitlines()]


def landed_files(data_dir: Path, source: str) -> list[Path]:
    return sorted(p for p in (data_dir / "landing" / source).glob("dt=*/hour=*/*.jsonl") if not p.name.startswith("."))


def start_server(data_dir: Path):
    """The collector as `cdp collect` configures it (limits from the environment), on a free port, in a thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = create_app(data_dir)
    server = uvicorn.Server(uvicorn.Config(app, **server_options(app), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "collector did not start"
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def collector(tmp_path, monkeypatch):
    monkeypatch.setenv("CDP_WRITE_KEYS", f"{KEY}, {MOBILE_KEY}:mobile")
    monkeypatch.setenv("CDP_WEBHOOK_SECRET_BILLING", SECRET)
    server, thread, url = start_server(tmp_path / "data")
    yield Collector(url, tmp_path / "data")
    server.should_exit = True
    thread.join(10)


def message(kind: str = "track", **fields) -> dict:
    return {"type": kind, "messageId": str(uuid.uuid4()), "anonymousId": "a1", "event": "product_viewed", **fields}


def test_segment_sdk_lands_every_message_once(collector):
    from segment.analytics import Client

    errors = []
    client = Client(KEY, host=collector.url, on_error=lambda e, batch: errors.append(e), max_retries=1)
    sent = []
    for i in range(240):
        user = f"user{i % 17}"
        call = i % 4
        if call == 0:
            _, msg = client.track(user, "product_viewed", {"price": i})
        elif call == 1:
            _, msg = client.identify(user, {"email": f"{user}@example.com"})
        elif call == 2:
            _, msg = client.page(user, "shop", "home")
        else:
            _, msg = client.alias(f"anon{i}", user)
        sent.append(msg["messageId"])
    client.shutdown()

    assert not errors
    lines = collector.lines("web")
    assert sorted(line["messageId"] for line in lines) == sorted(sent)
    line = lines[0]
    assert line["source"] == "web" and "writeKey" not in line
    assert line["receivedAt"].endswith("Z") and datetime.fromisoformat(line["receivedAt"]).tzinfo == timezone.utc
    assert line["context"]["library"]["name"] == "analytics-python"
    hour = datetime.fromisoformat(line["receivedAt"])
    assert all(p.parent.as_posix().endswith(f"dt={hour:%Y-%m-%d}/hour={hour:%H}") for p in landed_files(collector.data_dir, "web"))


def test_rudder_sdk_lands_in_the_source_of_its_write_key(collector, monkeypatch):
    import rudderstack.analytics as rudder_analytics

    # The SDK's documented module-level set-up; it posts gzipped batches to <dataPlaneUrl>/v1/batch.
    monkeypatch.setattr(rudder_analytics, "write_key", MOBILE_KEY)
    monkeypatch.setattr(rudder_analytics, "dataPlaneUrl", collector.url, raising=False)
    monkeypatch.setattr(rudder_analytics, "max_retries", 1)
    monkeypatch.setattr(rudder_analytics, "default_client", None)
    errors = []
    monkeypatch.setattr(rudder_analytics, "on_error", lambda e, batch: errors.append(e))
    sent = [str(uuid.uuid4()) for _ in range(180)]
    for i, message_id in enumerate(sent):
        if i % 3 == 0:
            rudder_analytics.track(f"u{i}", "order_completed", {"revenue": i}, message_id=message_id)
        elif i % 3 == 1:
            rudder_analytics.identify(f"u{i}", {"email": f"u{i}@example.com"}, message_id=message_id)
        else:
            rudder_analytics.screen(f"u{i}", "app", "cart", message_id=message_id)
    rudder_analytics.shutdown()

    assert not errors
    lines = collector.lines("mobile")
    assert sorted(line["messageId"] for line in lines) == sorted(sent)
    assert {line["source"] for line in lines} == {"mobile"}
    assert collector.lines("web") == []


def test_single_message_endpoints_and_body_write_key(collector):
    for kind in ("track", "identify", "page", "screen", "group", "alias"):
        body = message(kind)
        body.pop("type")  # the endpoint names the type
        response = collector.post(f"/v1/{kind}", body)
        assert response.status_code == 200 and response.json() == {"success": True}
    assert collector.post("/v1/t", message(), key=None, headers={}).status_code == 401
    assert collector.post("/v1/t", {**message(), "writeKey": KEY}, key=None).status_code == 200
    lines = collector.lines()
    assert [line["type"] for line in lines[:6]] == ["track", "identify", "page", "screen", "group", "alias"]
    assert len(lines) == 7 and all("writeKey" not in line for line in lines)


def test_unauthorized_without_or_with_a_wrong_key(collector):
    assert collector.post("/v1/batch", {"batch": [message()]}, key=None).status_code == 401
    response = collector.post("/v1/batch", {"batch": [message()]}, key="wrong")
    assert response.status_code == 401 and response.json()["message"] == "unknown write key"
    assert response.headers["www-authenticate"].startswith("Basic")
    assert collector.post("/v1/batch", {"batch": [message()], "writeKey": "wrong"}, key=None).status_code == 401
    bearer = {"Authorization": f"Bearer {KEY}"}
    assert collector.post("/v1/batch", {"batch": [message()]}, key=None, headers=bearer).status_code == 401
    assert collector.lines() == []


@pytest.mark.parametrize(
    ("path", "body", "reason"),
    [
        ("/v1/batch", b'{"batch": [', "not valid JSON"),
        ("/v1/batch", b'{"batch": [{"type": "track", "x": NaN}]}', "not valid JSON"),
        ("/v1/batch", b"[]", "JSON object"),
        ("/v1/batch", {"batch": "nope"}, "`batch` list"),
        ("/v1/batch", {"batch": [message(), message("purchase")]}, "batch[1] has unknown type 'purchase'"),
        ("/v1/batch", {"batch": [message(), {"event": "x"}]}, "batch[1] has no `type`"),
        ("/v1/batch", {"batch": [message(), 7]}, "batch[1] is not a JSON object"),
        ("/v1/track", message("identify"), "does not match the endpoint /v1/track"),
        ("/v1/track", b'{"type": "track", "event": "\\ud800"}', "not valid Unicode"),
        ("/v1/track", b'{"type": "track", "properties": {"price": 1e999}}', "number out of range"),
        ("/v1/track", b'{"type": "track", "properties": {"price": Infinity}}', "Infinity is not JSON"),
        ("/v1/track", b'{"type": "track", "properties": {"price": -Infinity}}', "-Infinity is not JSON"),
        ("/v1/batch", b'{"batch": [{"type": "track", "properties": {"a": [1, NaN]}}]}', "NaN is not JSON"),
        ("/v1/batch", {"batch": [message(), {**message(), "messageId": {"id": 1}}]}, "batch[1].messageId must be a string, not an object"),
        ("/v1/batch", {"batch": [{**message(), "messageId": 17}]}, "batch[0].messageId must be a string, not a number"),
        ("/v1/batch", {"batch": [{**message(), "messageId": ["a"]}]}, "batch[0].messageId must be a string, not an array"),
        ("/v1/track", {**message(), "messageId": True}, "the message.messageId must be a string, not a boolean"),
        # Over 64 KB: unpacked on the parser thread, refused the same way.
        ("/v1/batch", {"batch": [message(properties={"blob": "x" * 1000}) for _ in range(80)] + [{"event": "x"}]},
         "batch[80] has no `type`"),
        ("/v1/batch", b'{"batch": [' + b",".join([json.dumps(message(properties={"b": "y" * 900})).encode()] * 80)
         + b', {"type": "track", "x": NaN}]}', "NaN is not JSON"),
    ],
)
def test_bad_requests_are_400_with_the_reason_and_land_nothing(collector, path, body, reason):
    response = collector.post(path, body)
    assert response.status_code == 400
    assert reason in response.json()["message"]
    assert collector.lines() == []


def test_oversized_message_or_batch_is_413(collector):
    big = message(properties={"blob": "x" * (33 * 1024)})
    response = collector.post("/v1/track", big)
    assert response.status_code == 413 and "32768 bytes" in response.json()["message"]
    response = collector.post("/v1/batch", {"batch": [message(), big]})
    assert response.status_code == 413 and "batch[1]" in response.json()["message"]
    many = {"batch": [message(properties={"blob": "y" * 20_000}) for _ in range(30)]}
    response = collector.post("/v1/batch", many)
    assert response.status_code == 413 and "512000 bytes" in response.json()["message"]
    bomb = gzip.compress(json.dumps({"batch": [message(properties={"z": "0" * 600_000})]}).encode())
    assert collector.post("/v1/batch", bomb, headers={"Content-Encoding": "gzip"}).status_code == 413
    assert collector.lines() == []


def test_gzip_body_is_accepted(collector):
    body = gzip.compress(json.dumps({"batch": [message(), message("page")]}).encode())
    assert collector.post("/v1/batch", body, headers={"Content-Encoding": "gzip"}).status_code == 200
    assert len(collector.lines()) == 2
    assert collector.post("/v1/batch", body[:-8], headers={"Content-Encoding": "gzip"}).status_code == 400
    assert collector.post("/v1/batch", body, headers={"Content-Encoding": "br"}).status_code == 415


def test_a_gzip_body_of_several_members_is_read_whole(collector):
    """RFC 1952 allows concatenated members (`cat a.gz b.gz`, streaming compressors): all of them are the body."""
    text = json.dumps({"batch": [message(), message("page"), message("identify")]}).encode()
    members = gzip.compress(text[:40]) + gzip.compress(text[40:90]) + gzip.compress(text[90:]) + b"\0" * 8
    assert collector.post("/v1/batch", members, headers={"Content-Encoding": "gzip"}).status_code == 200
    assert len(collector.lines()) == 3
    for broken, reason in [(members[:-20], "member 3): truncated"), (gzip.compress(text) + b"garbage", "member 2")]:
        response = collector.post("/v1/batch", broken, headers={"Content-Encoding": "gzip"})
        assert response.status_code == 400 and reason in response.json()["message"], response.text
    assert len(collector.lines()) == 3
    # The size limit counts every member together.
    half = json.dumps({"batch": [message(properties={"z": "0" * 300_000})]}).encode()
    two = gzip.compress(half[:-2]) + gzip.compress(b"0" * 300_000) + gzip.compress(half[-2:])
    assert collector.post("/v1/batch", two, headers={"Content-Encoding": "gzip"}).status_code == 413


def test_batch_fields_merge_where_absent(collector):
    batch = {
        "batch": [
            {"type": "track", "messageId": "t", "anonymousId": "a", "context": {"ip": "1.2.3.4"}},
            {"type": "page", "messageId": "p", "anonymousId": "a"},
        ],
        "context": {"library": {"name": "custom"}},
        "integrations": {"All": False},
        "sentAt": "2025-03-04T05:06:08Z",
    }
    assert collector.post("/v1/batch", batch).status_code == 200
    lines = {line["messageId"]: line for line in collector.lines()}
    track, page = lines["t"], lines["p"]
    assert track["context"] == {"ip": "1.2.3.4"} and page["context"] == {"library": {"name": "custom"}}
    assert page["integrations"] == track["integrations"] == {"All": False}
    assert page["sentAt"] == track["sentAt"] == "2025-03-04T05:06:08Z"


@pytest.mark.parametrize("client_value", ["2025-03-04T05:06:07Z", "1999-12-31T23:00:00Z", "3000-01-01T00:00:00Z",
                                          "2026-13-45T99:00:00Z", "yesterday", 12345, None])
def test_received_at_and_the_landing_hour_are_the_collectors_own_clock(collector, client_value):
    """A client's `receivedAt` (wrong clock, other year, garbage) never decides where a line lands: every
    acknowledged line is in the hour `cdp run` reads for now, and carries the collector's time."""
    before = datetime.now(timezone.utc)
    sent = {**message(), "receivedAt": client_value, "sentAt": "2025-03-04T05:06:08Z",
            "originalTimestamp": "2025-03-04T05:06:00Z"}
    assert collector.post("/v1/batch", {"batch": [sent]}).status_code == 200
    assert collector.post("/v1/track", {**message(), "receivedAt": client_value}).status_code == 200
    after = datetime.now(timezone.utc)
    lines = collector.lines()
    assert len(lines) == 2
    for line in lines:
        received = datetime.fromisoformat(line["receivedAt"])
        assert before - timedelta(milliseconds=1) <= received <= after and line["receivedAt"].endswith("Z")
        assert line.get("clientReceivedAt") == client_value  # kept, under its own name
    # The raw client times stay as received.
    assert lines[0]["sentAt"] == "2025-03-04T05:06:08Z" and lines[0]["originalTimestamp"] == "2025-03-04T05:06:00Z"
    hours = {f"dt={moment:%Y-%m-%d}/hour={moment:%H}" for moment in (before, after)}
    for path in landed_files(collector.data_dir, "web"):
        assert path.parent.relative_to(collector.data_dir / "landing" / "web").as_posix() in hours


def test_missing_message_id_is_a_content_hash_so_retries_dedupe(collector):
    body = {"userId": "u1", "event": "signed_up", "timestamp": "2025-03-04T05:06:07Z"}
    assert collector.post("/v1/track", body).status_code == 200
    assert collector.post("/v1/track", body).status_code == 200  # the client's retry
    assert collector.post("/v1/track", {**body, "event": "other"}).status_code == 200
    ids = [line["messageId"] for line in collector.lines()]
    assert len(ids) == 3 and len(set(ids)) == 2 and all(i.startswith("cdp-") for i in ids)


def test_a_retry_with_a_new_sent_at_gets_the_same_content_id(collector):
    """SDKs stamp `sentAt` at each delivery attempt (RudderStack's on the message, Segment's on the batch),
    and a client may send its own `receivedAt`: neither is content, so the retry dedupes."""
    body = {"type": "track", "anonymousId": "a9", "event": "signed_up", "originalTimestamp": "2025-03-04T05:06:00Z"}
    attempts = [
        {"batch": [{**body, "sentAt": "2025-03-04T05:06:01Z"}]},
        {"batch": [{**body, "sentAt": "2025-03-04T05:09:30Z", "receivedAt": "2025-03-04T05:09:31Z"}]},
        {"batch": [body], "sentAt": "2025-03-04T06:00:00Z"},
    ]
    for attempt in attempts:
        assert collector.post("/v1/batch", attempt).status_code == 200
    assert collector.post("/v1/track", {**body, "sentAt": "2025-03-05T00:00:00Z"}).status_code == 200
    assert collector.post("/v1/track", {**body, "originalTimestamp": "2025-03-04T05:07:00Z"}).status_code == 200
    lines = collector.lines()
    ids = [line["messageId"] for line in lines]
    assert len(ids) == 5 and len(set(ids[:4])) == 1 and ids[4] != ids[0]
    # The raw times are kept as received, each attempt's own.
    assert [line.get("sentAt") for line in lines[:4]] == [
        "2025-03-04T05:06:01Z", "2025-03-04T05:09:30Z", "2025-03-04T06:00:00Z", "2025-03-05T00:00:00Z"]
    assert all(line["originalTimestamp"] == "2025-03-04T05:06:00Z" for line in lines[:4])


def signed(payload: bytes, *, secret: str = SECRET, msg_id: str | None = None, age: timedelta = timedelta(0)) -> dict:
    msg_id = f"msg_{uuid.uuid4().hex}" if msg_id is None else msg_id
    moment = datetime.now(timezone.utc) - age
    signature = Webhook(secret).sign(msg_id, moment, payload.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(moment.timestamp())), "webhook-signature": signature}


def test_signed_webhook_lands_once_even_when_replayed(collector):
    payload = json.dumps({"type": "invoice.paid", "data": {"amount": 1200, "customer": "ann@x.com"}}).encode()
    headers = signed(payload, msg_id="msg_1")
    first = collector.post("/webhooks/billing", payload, key=None, headers=headers)
    assert first.status_code == 200 and first.json() == {"success": True, "duplicate": False}
    replay = collector.post("/webhooks/billing", payload, key=None, headers=headers)
    assert replay.status_code == 200 and replay.json()["duplicate"] is True
    [line] = collector.lines("billing")
    assert set(line) == {"webhook_id", "source", "receivedAt", "body"}
    assert line["webhook_id"] == "msg_1" and line["source"] == "billing"
    assert line["body"] == json.loads(payload) and line["receivedAt"].endswith("Z")


def test_webhook_replay_is_deduplicated_across_restarts(collector):
    payload = b'{"event": "subscription.created"}'
    headers = signed(payload, msg_id="msg_restart")
    assert collector.post("/webhooks/billing", payload, key=None, headers=headers).status_code == 200
    server, thread, url = start_server(collector.data_dir)  # a second process's view: a fresh app, same data dir
    try:
        again = requests.post(f"{url}/webhooks/billing", data=payload, headers=signed(payload, msg_id="msg_restart"), timeout=10)
        assert again.status_code == 200 and again.json()["duplicate"] is True
    finally:
        server.should_exit = True
        thread.join(10)
    assert len(collector.lines("billing")) == 1


def test_concurrent_deliveries_of_one_webhook_land_once(collector):
    payload = b'{"event": "refund"}'
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: collector.post("/webhooks/billing", payload, key=None, headers=signed(payload, msg_id="msg_c")).status_code, range(16)))
    assert codes == [200] * 16
    assert len(collector.lines("billing")) == 1


@pytest.mark.parametrize("case", ["tampered", "wrong secret", "stale", "from the future", "no headers", "no signature", "garbage signature"])
def test_unverifiable_webhook_is_401_and_lands_nothing(collector, case):
    payload = b'{"event": "invoice.paid", "amount": 10}'
    headers = signed(payload)
    if case == "tampered":
        payload = payload.replace(b"10", b"99")
    elif case == "wrong secret":
        headers = signed(payload, secret=OTHER_SECRET)
    elif case == "stale":
        headers = signed(payload, age=timedelta(minutes=6))
    elif case == "from the future":
        headers = signed(payload, age=timedelta(minutes=-6))
    elif case == "no headers":
        headers = {}
    elif case == "no signature":
        headers.pop("webhook-signature")
    else:
        headers["webhook-signature"] = "v1 not-base64"
    response = collector.post("/webhooks/billing", payload, key=None, headers=headers)
    assert response.status_code == 401, response.text
    assert collector.lines("billing") == []
    assert not (collector.data_dir / "landing" / "billing").exists()


def test_webhook_source_without_a_secret_is_404(collector):
    payload = b"{}"
    assert collector.post("/webhooks/stripe", payload, key=None, headers=signed(payload)).status_code == 404
    assert collector.post("/webhooks/_webhook_ids", payload, key=None, headers=signed(payload)).status_code == 404


def test_an_empty_webhook_id_is_400_and_lands_nothing(collector):
    """The id is what replays are deduplicated by: an empty one would make every delivery the same message."""
    payload = b'{"event": "invoice.paid"}'
    response = collector.post("/webhooks/billing", payload, key=None, headers=signed(payload, msg_id=""))
    assert response.status_code == 400 and "webhook-id header is empty" in response.json()["message"]
    assert collector.lines("billing") == []


def test_signed_webhook_that_is_not_json_is_400(collector):
    payload = b"not json"
    assert collector.post("/webhooks/billing", payload, key=None, headers=signed(payload)).status_code == 400


def test_concurrent_requests_share_files_and_every_file_is_complete(collector):
    """Group commit: fewer files than requests; atomicity: only dot-named files may be temporary."""

    def send(_):
        return collector.post("/v1/batch", {"batch": [message() for _ in range(5)]}).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(send, range(200)))
    assert codes == [200] * 200
    files = landed_files(collector.data_dir, "web")
    assert len(collector.lines()) == 1000 and len({line["messageId"] for line in collector.lines()}) == 1000
    assert len(files) < 200
    for path in (collector.data_dir / "landing").rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            assert path.suffix in (".jsonl", ".sqlite") or "_webhook_ids" in path.parts, path
            if path.suffix == ".jsonl":
                assert path.read_bytes().endswith(b"\n")
                assert all(json.loads(line) for line in path.read_text().splitlines())


BIG_BATCH = {"batch": [message(properties={"blob": "x" * 300}) for _ in range(1050)]}  # ~467 KB, under 500 KB


def timed_post(collector: Collector, body: dict) -> tuple[float, float]:
    """(seconds it took, monotonic time of the answer); asserts a 200."""
    began = time.monotonic()
    response = collector.post("/v1/batch", body, timeout=60)
    assert response.status_code == 200, response.text
    return time.monotonic() - began, time.monotonic()


def test_slow_work_on_big_batches_does_not_hold_up_a_small_request(collector, monkeypatch):
    """Unpacking a ~467 KB batch takes CPU time (here 0.4 s, as on a busy machine): that work must not stop
    the server from answering a small request that arrives meanwhile."""
    from cdp_resources.collector import segment

    assert 400_000 < len(json.dumps(BIG_BATCH)) < 500 * 1024
    unpack = segment.landing_lines

    def slow_unpack(messages, *args, **kwargs):
        if len(messages) > 100:
            time.sleep(0.4)
        return unpack(messages, *args, **kwargs)

    monkeypatch.setattr(segment, "landing_lines", slow_unpack)
    with ThreadPoolExecutor(4) as pool:
        bigs = [pool.submit(timed_post, collector, BIG_BATCH) for _ in range(4)]
        time.sleep(0.2)
        small, _ = timed_post(collector, {"batch": [message()]})
        big_times = [future.result()[0] for future in bigs]
    assert small < 0.3 and min(big_times) > 0.4, (small, big_times)
    assert len(collector.lines()) == 4 * 1050 + 1


def test_a_small_request_is_not_written_behind_big_batches(collector, monkeypatch):
    """On a slow disk (an fsync of a big file takes 1 s) a small request waits for the write under way, but
    not for the big batches that were waiting with it: those are written after it, on their own."""
    fsync = os.fsync

    def slow_fsync(fd):
        if os.fstat(fd).st_size > 64 * 1024:
            time.sleep(1)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(timed_post, collector, BIG_BATCH)
        time.sleep(0.3)  # the first batch is being written
        waiting = [pool.submit(timed_post, collector, BIG_BATCH) for _ in range(2)]
        time.sleep(0.2)
        _, small_done = timed_post(collector, {"batch": [message()]})
        done = [future.result()[1] for future in waiting]
        first.result()
    assert small_done + 0.5 < max(done), (small_done, done)
    assert len(collector.lines()) == 3 * 1050 + 1


def test_a_failed_write_is_503_and_leaves_no_file(collector, monkeypatch):
    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    response = collector.post("/v1/batch", {"batch": [message()]})
    assert response.status_code == 503 and "retry" in response.json()["message"]
    monkeypatch.undo()
    assert [p for p in (collector.data_dir / "landing").rglob("*") if p.is_file()] == []
    assert collector.post("/v1/batch", {"batch": [message()]}).status_code == 200


def test_health(collector):
    response = requests.get(collector.url + "/health", timeout=10)
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_configuration_errors_fail_at_start_naming_the_setting():
    from cdp_resources.collector.config import CollectorConfig

    config = CollectorConfig.from_env({"CDP_WRITE_KEYS": "k1, k2:mobile-app,", "CDP_WEBHOOK_SECRET_BILLING_EU": SECRET})
    assert config.write_keys == {"k1": "web", "k2": "mobile-app"}
    assert config.source_of("k2") == "mobile-app" and config.source_of("k3") is None
    assert config.webhook("billing-eu") is not None and config.webhook("billing") is None
    with pytest.raises(ValueError, match="CDP_WRITE_KEYS"):
        CollectorConfig.from_env({"CDP_WRITE_KEYS": "k1:../etc"})
    with pytest.raises(ValueError, match="CDP_WEBHOOK_SECRET_X"):
        CollectorConfig.from_env({"CDP_WEBHOOK_SECRET_X": "whsec_"})
    with pytest.raises(ValueError, match="both Segment events and webhooks"):
        CollectorConfig.from_env({"CDP_WRITE_KEYS": "k1", "CDP_WEBHOOK_SECRET_WEB": SECRET})
    assert config.allowed_origins == ("*",)
    origins = CollectorConfig.from_env({"CDP_COLLECTOR_ALLOWED_ORIGINS": " https://Shop.example.com ,http://127.0.0.1:8000"})
    assert origins.allowed_origins == ("https://shop.example.com", "http://127.0.0.1:8000")
    for bad in ("shop.example.com", "https://shop.example.com/", "https://shop.example.com/path", "ftp://x.example"):
        with pytest.raises(ValueError, match="CDP_COLLECTOR_ALLOWED_ORIGINS"):
            CollectorConfig.from_env({"CDP_COLLECTOR_ALLOWED_ORIGINS": bad})
    limits = CollectorConfig.from_env({"CDP_COLLECTOR_HEADER_TIMEOUT": "2.5", "CDP_COLLECTOR_MAX_CONNECTIONS": "50"}).limits
    assert (limits.header_timeout, limits.body_timeout, limits.max_connections) == (2.5, 30.0, 50)
    for name, bad in [("CDP_COLLECTOR_BODY_TIMEOUT", "0"), ("CDP_COLLECTOR_BODY_TIMEOUT", "nan"),
                      ("CDP_COLLECTOR_HEADER_TIMEOUT", "soon"), ("CDP_COLLECTOR_MAX_CONNECTIONS", "1.5")]:
        with pytest.raises(ValueError, match=name):
            CollectorConfig.from_env({name: bad})


class Lines(logging.Handler):
    """The collector's log lines, as formatted."""

    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def collector_log():
    """Attached after the collector started: uvicorn's logging set-up replaces the logger's handlers."""
    handler = Lines()
    logger = logging.getLogger("cdp_resources.collector")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def test_every_refused_request_is_one_log_line_without_payload_or_key(collector, collector_log):
    secret_body = "PAYLOAD-MARKER-91f3"
    refusals = [
        (401, "/v1/batch", lambda: collector.post("/v1/batch", {"batch": [message()]}, key="wk_WRONG_SECRET_KEY")),
        (400, "/v1/batch", lambda: collector.post("/v1/batch", b'{"batch": [{"event": "' + secret_body.encode() + b'"')),
        (404, "/v1/nothing", lambda: collector.post(f"/v1/nothing?writeKey={KEY}", {"x": secret_body})),
        (405, "/v1/batch", lambda: requests.get(f"{collector.url}/v1/batch", timeout=10)),
        (413, "/v1/track", lambda: collector.post("/v1/track", message(properties={"blob": secret_body * 3000}))),
        (400, "/webhooks/billing", lambda: collector.post("/webhooks/billing", b"{}", key=None, headers=signed(b"{}", msg_id=""))),
    ]
    for status, path, send in refusals:
        response = send()
        assert response.status_code == status and response.json()["success"] is False
    assert collector.post("/v1/batch", {"batch": [message()]}).status_code == 200  # not a refusal: no line
    assert len(collector_log.lines) == len(refusals), collector_log.lines
    for (status, path, _), line in zip(refusals, collector_log.lines):
        assert line.startswith(f"refused {status} ") and f" {path} from 127.0.0.1:" in line, line
        assert "\n" not in line and len(line) < 600
    text = "\n".join(collector_log.lines)
    assert secret_body not in text and KEY not in text and "WRONG_SECRET" not in text
    assert "unknown write key" in text and "not valid JSON" in text and "larger than the limit" in text


def test_browsers_on_other_origins_may_send_by_default(collector, collector_log):
    """What a browser does before posting with an `Authorization` header: the preflight, then the post."""
    preflight = requests.options(f"{collector.url}/v1/t", timeout=10, headers={
        "Origin": "https://shop.example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-retry-count,anonymousid"})
    assert preflight.status_code in (200, 204)
    assert preflight.headers["access-control-allow-origin"] in ("*", "https://shop.example.com")
    allowed = {h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-retry-count", "anonymousid"} <= allowed
    assert "POST" in preflight.headers["access-control-allow-methods"]
    for path in ("/v1/batch", "/v1/t", "/v1/i", "/v1/p", "/v1/identify"):
        body = {"batch": [message()]} if path == "/v1/batch" else {k: v for k, v in message().items() if k != "type"}
        response = collector.post(path, body, headers={"Origin": "https://shop.example.com"})
        assert response.status_code == 200 and response.headers["access-control-allow-origin"] in ("*", "https://shop.example.com")
    refused = collector.post("/v1/batch", {"batch": "no"}, headers={"Origin": "https://shop.example.com"})
    assert refused.status_code == 400 and "access-control-allow-origin" in refused.headers  # the SDK can read why
    assert len(collector.lines()) == 5
    assert "access-control-allow-origin" not in requests.get(collector.url + "/health", headers={"Origin": "https://x.example"}, timeout=10).headers


def test_allowed_origins_are_configurable_and_others_refused(tmp_path, monkeypatch, collector_log):
    monkeypatch.setenv("CDP_WRITE_KEYS", KEY)
    monkeypatch.setenv("CDP_COLLECTOR_ALLOWED_ORIGINS", "https://shop.example.com, http://localhost:3000")
    server, thread, url = start_server(tmp_path / "data")
    logging.getLogger("cdp_resources.collector").addHandler(collector_log)
    try:
        def preflight(origin):
            return requests.options(f"{url}/v1/batch", timeout=10, headers={
                "Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"})

        def post(origin):
            return requests.post(f"{url}/v1/batch", json={"batch": [message()]}, auth=(KEY, ""), timeout=10,
                                 headers={"Origin": origin})

        for origin in ("https://shop.example.com", "http://localhost:3000"):
            ok = preflight(origin)
            assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == origin
            assert "origin" in ok.headers["vary"].lower()
            answer = post(origin)
            assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == origin
        for origin in ("https://evil.example.com", "http://localhost:3001", "null"):
            refused = preflight(origin)
            assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
            assert post(origin).status_code == 403  # a beacon needs no preflight: refused all the same
        # Servers and SDKs outside a browser send no Origin: unaffected.
        assert requests.post(f"{url}/v1/batch", json={"batch": [message()]}, auth=(KEY, ""), timeout=10).status_code == 200
    finally:
        server.should_exit = True
        thread.join(10)
    assert len(Collector(url, tmp_path / "data").lines()) == 3
    assert sum("refused 403 " in line and "CDP_COLLECTOR_ALLOWED_ORIGINS" in line for line in collector_log.lines) == 6


def raw_connection(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    return sock


def answer_and_close(sock: socket.socket, wait: float = 5) -> tuple[bytes, float]:
    """What the server sends until it closes the connection, and after how many seconds."""
    began, received = time.monotonic(), b""
    sock.settimeout(wait)
    while chunk := sock.recv(65536):
        received += chunk
    return received, time.monotonic() - began


def test_connection_level_refusals_are_answered_once_and_logged_once(tmp_path, monkeypatch, collector_log):
    """What never reaches the app: headers too slow, too big, not HTTP, too many connections."""
    monkeypatch.setenv("CDP_WRITE_KEYS", KEY)
    monkeypatch.setenv("CDP_COLLECTOR_HEADER_TIMEOUT", "0.5")
    monkeypatch.setenv("CDP_COLLECTOR_MAX_CONNECTIONS", "4")
    server, thread, url = start_server(tmp_path / "data")
    uvicorn_log = Lines()
    for name in ("cdp_resources.collector", "uvicorn.error"):
        logging.getLogger(name).addHandler(uvicorn_log if name == "uvicorn.error" else collector_log)
    try:
        idle = raw_connection(url)  # connects, says nothing: closed quietly at the deadline
        data, after = answer_and_close(idle)
        assert data == b"" and 0.4 < after < 2

        partial = raw_connection(url)
        partial.sendall(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\n")
        data, after = answer_and_close(partial)
        assert data.startswith(b"HTTP/1.1 408 ") and b"no complete request headers within 0.5 s" in data and after < 2

        huge = raw_connection(url)
        huge.sendall(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 70_000)
        data, _ = answer_and_close(huge)
        assert data.startswith(b"HTTP/1.1 431 ")

        garbage = raw_connection(url)
        garbage.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        data, _ = answer_and_close(garbage)
        assert data.startswith(b"HTTP/1.1 400 ")

        # Four slots: three connections sit on unfinished headers; a client's request still gets through,
        # then the next newcomer takes the place of the one that waited longest.
        slow = [raw_connection(url) for _ in range(3)]
        for sock in slow:
            sock.sendall(b"POST /v1/batch HTTP/1.1\r\n")
        time.sleep(0.1)
        with requests.Session() as client:
            assert client.post(f"{url}/v1/batch", json={"batch": [message()]}, auth=(KEY, "")).status_code == 200
            extra = raw_connection(url)
            data, _ = answer_and_close(slow[0], wait=2)
            assert data.startswith(b"HTTP/1.1 503 ") and b"waiting longest" in data
            assert client.post(f"{url}/v1/batch", json={"batch": [message()]}, auth=(KEY, "")).status_code == 200
        for sock in [*slow, extra, idle, partial, huge, garbage]:
            sock.close()
    finally:
        server.should_exit = True
        thread.join(10)
    refused = [line for line in collector_log.lines if line.startswith("refused ")]
    statuses = [line.split()[1] for line in refused]
    assert statuses[:4] == ["408", "431", "400", "503"], refused
    assert all(" connection from 127.0.0.1:" in line for line in refused)
    assert not any("Invalid HTTP request" in line for line in uvicorn_log.lines)  # said once, by us
    assert len(Collector(url, tmp_path / "data").lines()) == 2
