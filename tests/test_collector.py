"""The collector over real HTTP: the Segment and RudderStack SDKs, auth, limits, webhooks, durable landing."""

from __future__ import annotations

import base64
import gzip
import json
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

KEY, MOBILE_KEY = "wk_test_web", "wk_test_mobile"
SECRET = "whsec_" + base64.b64encode(b"billing-secret-for-tests-0123456").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"some-other-secret-0123456789abcd").decode()


@dataclass
class Collector:
    url: str
    data_dir: Path

    def post(self, path: str, body=None, *, key: str | None = KEY, **kwargs) -> requests.Response:
        if body is not None:
            kwargs["data"] = body if isinstance(body, bytes) else json.dumps(body).encode()
        return requests.post(self.url + path, auth=(key, "") if key else None, timeout=10, **kwargs)

    def lines(self, source: str = "web") -> list[dict]:
        return [json.loads(line) for path in landed_files(self.data_dir, source) for line in path.read_text().splitlines()]


def landed_files(data_dir: Path, source: str) -> list[Path]:
    return sorted(p for p in (data_dir / "landing" / source).glob("dt=*/hour=*/*.jsonl") if not p.name.startswith("."))


def start_server(data_dir: Path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(data_dir), log_level="warning"))
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


def test_batch_fields_merge_where_absent_and_client_received_at_is_kept(collector):
    batch = {
        "batch": [
            {"type": "track", "messageId": "t", "anonymousId": "a", "context": {"ip": "1.2.3.4"}},
            {"type": "page", "messageId": "p", "anonymousId": "a"},
            {**message(), "messageId": "o", "receivedAt": "2025-03-04T05:06:07Z"},
        ],
        "context": {"library": {"name": "custom"}},
        "integrations": {"All": False},
        "sentAt": "2025-03-04T05:06:08Z",
    }
    assert collector.post("/v1/batch", batch).status_code == 200
    lines = {line["messageId"]: line for line in collector.lines()}
    track, page, old = lines["t"], lines["p"], lines["o"]
    assert track["context"] == {"ip": "1.2.3.4"} and page["context"] == {"library": {"name": "custom"}}
    assert page["integrations"] == track["integrations"] == {"All": False}
    assert page["sentAt"] == "2025-03-04T05:06:08Z"
    assert old["receivedAt"] == "2025-03-04T05:06:07Z"
    assert landed_files(collector.data_dir, "web")[0].parent.as_posix().endswith("dt=2025-03-04/hour=05")


def test_missing_message_id_is_a_content_hash_so_retries_dedupe(collector):
    body = {"userId": "u1", "event": "signed_up", "timestamp": "2025-03-04T05:06:07Z"}
    assert collector.post("/v1/track", body).status_code == 200
    assert collector.post("/v1/track", body).status_code == 200  # the client's retry
    assert collector.post("/v1/track", {**body, "event": "other"}).status_code == 200
    ids = [line["messageId"] for line in collector.lines()]
    assert len(ids) == 3 and len(set(ids)) == 2 and all(i.startswith("cdp-") for i in ids)


def signed(payload: bytes, *, secret: str = SECRET, msg_id: str | None = None, age: timedelta = timedelta(0)) -> dict:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
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
