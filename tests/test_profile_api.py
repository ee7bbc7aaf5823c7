"""The Profile API over real HTTP (`cdp serve`'s app on uvicorn), against the warehouse it mirrors, and a message
sent by the real Segment SDK to a real collector visible in `events` within 2 s."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
import uuid
from urllib.parse import quote

import duckdb
import pytest
import requests
import uvicorn

from cdp_assets.online.update import update_store
from cdp_resources.online_store import open_store
from cdp_resources.profile_api import create_app
from tests.test_online_store import REDIS_URL, redis_store

TOKEN = "pat_test_0123"
BASE = "/v1/spaces/default/collections/users/profiles/"


def start(app) -> tuple[uvicorn.Server, threading.Thread, str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


class Api:
    def __init__(self, url: str):
        self.url = url

    def get(self, external_id: str, what: str, token: str | None = TOKEN, **params) -> requests.Response:
        return requests.get(f"{self.url}{BASE}{quote(external_id, safe=':@')}/{what}", params=params,
                            auth=(token, "") if token else None, timeout=10)

    def json(self, external_id: str, what: str, **params) -> dict:
        response = self.get(external_id, what, **params)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def api(demo):
    """The API over the store `cdp run` loaded for the demo (read only here)."""
    server, thread, url = start(create_app(demo.data_dir, tokens=[TOKEN, "pat_other"]))
    yield Api(url)
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def person(demo) -> dict:
    """A demo person with an email, several events and a trait from the CRM, read from the warehouse."""
    with duckdb.connect(str(demo.data_dir / "warehouse.duckdb"), read_only=True) as con:
        row = con.execute("""SELECT p.person_id, p.email FROM cdp.profiles p
                             JOIN core.person_trait_values t ON t.person_id = p.person_id AND t.trait = 'first_name'
                             WHERE p.email IS NOT NULL AND p.event_count > 12 ORDER BY p.person_id LIMIT 1""").fetchone()
        profile = con.execute("SELECT * FROM cdp.profiles WHERE person_id = ?", [row[0]]).pl().row(0, named=True)
        sources = dict(con.execute("SELECT trait, source FROM core.person_trait_values WHERE person_id = ?", [row[0]]).fetchall())
        ids = sorted(con.execute("SELECT identifier_type, identifier_value FROM cdp.id_map WHERE person_id = ?", [row[0]]).fetchall())
        events = [r[0] for r in con.execute(
            "SELECT event_id FROM core.person_events WHERE person_id = ? ORDER BY occurred_at DESC, event_id DESC LIMIT 100",
            [row[0]]).fetchall()]
        segments = sorted(con.execute("SELECT segment FROM cdp.segment_membership WHERE person_id = ?", [row[0]]).fetchall())
    return {"person_id": row[0], "email": row[1], "profile": profile, "sources": sources, "ids": ids, "events": events,
            "segments": [s for s, in segments]}


def test_basic_auth_with_a_token_as_user_name(api, person):
    external_id = "email:" + person["email"]
    refused = api.get(external_id, "traits", token=None)
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
    assert refused.json()["error"]["code"] == "authentication_error"
    assert api.get(external_id, "traits", token="pat_wrong").status_code == 401
    assert requests.get(api.url + "/", timeout=5).status_code == 401  # the staff page too
    for token in (TOKEN, "pat_other"):
        assert api.get(external_id, "traits", token=token).status_code == 200


def test_traits_are_the_warehouse_profile_looked_up_by_any_spelling(api, person):
    profile = person["profile"]
    spelled = "email:  " + person["email"].upper() + " "
    traits = api.json(spelled, "traits", limit=200)["traits"]
    for name in ("email", "first_name", "last_name", "city", "event_count", "order_count"):
        assert traits[name] == profile[name], name
    assert traits["total_revenue"] == pytest.approx(float(profile["total_revenue"] or 0)) or profile["total_revenue"] is None
    assert set(api.json(spelled, "traits", include="first_name,city")["traits"]) == {"first_name", "city"}
    verbose = api.json(spelled, "traits", verbose="true", limit=200)["traits"]
    assert verbose["first_name"] == {**verbose["first_name"], "value": profile["first_name"], "source_id": person["sources"]["first_name"]}
    # Segment pages traits (10 by default): walking the pages gives every trait once.
    walked, token = {}, None
    while True:
        body = api.json(spelled, "traits", **({"next": token} if token else {}))
        assert len(body["traits"]) <= 10 and not set(body["traits"]) & set(walked)
        walked |= body["traits"]
        if not body["cursor"]["has_more"]:
            break
        token = body["cursor"]["next"]
    assert walked == traits
    computed = api.json(spelled, "traits", **{"class": "computed_trait", "limit": 200})["traits"]
    assert "event_count" in computed and "first_name" not in computed


def test_unknown_or_malformed_identifiers(api):
    missing = api.get("email:nobody-at-all@example.com", "traits")
    assert missing.status_code == 404 and missing.json() == {"error": {"code": "not_found", "message": "Profile was not found."}}
    assert api.get("no-colon-here", "traits").status_code == 400
    assert api.get("email:x@example.com", "nonsense").status_code == 404


def test_events_newest_first_in_pages(api, person):
    external_id = "email:" + person["email"]
    seen, token, pages = [], None, 0
    while True:
        body = api.json(external_id, "events", limit=7, **({"next": token} if token else {}))
        assert all({"event", "type", "timestamp", "properties"} <= set(item) for item in body["data"])
        seen += body["data"]
        pages += 1
        if not body["cursor"]["has_more"]:
            break
        token = body["cursor"]["next"]
    assert [e["message_id"] for e in seen] == person["events"]
    assert pages == -(-len(person["events"]) // 7)
    times = [e["timestamp"] for e in seen]
    assert times == sorted(times, reverse=True)


def test_external_ids_segments_and_links(api, person):
    external_id = "email:" + person["email"]
    ids = api.json(external_id, "external_ids", limit=100)["data"]
    assert sorted((i["type"], i["id"]) for i in ids) == person["ids"]
    assert all(i["collection"] == "users" and i["created_at"] and i["source_id"] for i in ids)
    segments = api.json(external_id, "segments")["data"]
    assert sorted(s["segment"] for s in segments) == person["segments"] and all(s["entered_at"] for s in segments)
    assert api.json(external_id, "links") == {"data": []} or all(l["external_ids"] for l in api.json(external_id, "links")["data"])


@pytest.fixture(params=["sqlite", "redis"])
def live_instance(request, demo, tmp_path, monkeypatch):
    """A copy of the demo instance with its store (SQLite, or loaded into Redis), a collector and the API on it."""
    from cdp_resources.collector import create_app as collector_app
    from cdp_resources.collector.server import server_options

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copy(demo.data_dir / "warehouse.duckdb", data_dir / "warehouse.duckdb")
    if request.param == "sqlite":
        shutil.copytree(demo.data_dir / "online", data_dir / "online")
    else:
        prefix = "test" + uuid.uuid4().hex[:8]
        store = redis_store(prefix)
        with duckdb.connect(str(data_dir / "warehouse.duckdb")) as con:
            update_store(con, store)
        store.close()
        monkeypatch.setenv("CDP_ONLINE_STORE", f"{REDIS_URL}?prefix={prefix}")
    monkeypatch.setenv("CDP_WRITE_KEYS", "wk_live")
    collector = collector_app(data_dir)
    servers = [start(collector), start(create_app(data_dir, tokens=[TOKEN]))]
    yield data_dir, servers[0][2], Api(servers[1][2])
    for server, thread, _ in servers:
        server.should_exit = True
        thread.join(10)
    if request.param == "redis":
        store = open_store(data_dir)
        store.drop_everything()
        store.close()


def test_a_message_acknowledged_by_the_collector_is_visible_within_2s(live_instance, person):
    from segment.analytics import Client

    data_dir, collector_url, api = live_instance
    user_id = next(v for t, v in person["ids"] if t == "user_id")
    newcomer = "anon-" + uuid.uuid4().hex
    client = Client("wk_live", host=collector_url, max_retries=1, sync_mode=True)
    sent = time.monotonic()
    client.track(user_id, "live_event_seen", {"order_id": "o-42"})
    client.track(anonymous_id=newcomer, event="first_visit", properties={"path": "/"})
    client.identify(anonymous_id=newcomer, traits={"email": "  New.Comer@Example.COM ", "first_name": "Nia"})
    acknowledged = time.monotonic()

    def newest(external_id: str) -> dict | None:
        response = api.get(external_id, "events", limit=3)
        return response.json()["data"][0] if response.status_code == 200 and response.json()["data"] else None

    deadline = acknowledged + 2
    while time.monotonic() < deadline and (newest("email:" + person["email"]) or {}).get("event") != "live_event_seen":
        time.sleep(0.02)
    visible = time.monotonic()
    top = newest("email:" + person["email"])
    assert top["event"] == "live_event_seen" and top["properties"] == {"order_id": "o-42"}, top
    assert visible - acknowledged < 2, f"visible {visible - acknowledged:.2f}s after the acknowledgement"
    # Its own provisional person until the next refresh: by its anonymous id or the email it identified with
    # (each message is appended as its request lands, so the identify may follow the track by a few ms).
    def provisional(external_id: str) -> dict:
        response = api.get(external_id, "traits")
        return response.json()["traits"] if response.status_code == 200 else {}

    for external_id in ("anonymous_id:" + newcomer, "email:new.comer@example.com"):
        while time.monotonic() < deadline and provisional(external_id).get("first_name") != "Nia":
            time.sleep(0.02)
        assert provisional(external_id)["first_name"] == "Nia", f"{external_id} not visible within 2 s"
    assert {e["event"] for e in api.json("anonymous_id:" + newcomer, "events")["data"]} == {"first_visit", None}
    assert api.get("anonymous_id:anon-never-sent", "events").status_code == 404
    # The refreshed profile is unchanged; the live message sits on top of its events, once.
    events = api.json("email:" + person["email"], "events", limit=100)["data"]
    assert [e["message_id"] for e in events[1:]] == person["events"][:99]
    print(f"event visible {visible - acknowledged:.3f}s after the acknowledgement ({acknowledged - sent:.3f}s to send)")
    landed = [json.loads(line) for p in (data_dir / "landing" / "web").rglob("*.jsonl") for line in p.read_text().splitlines()]
    assert {m.get("event") for m in landed} >= {"live_event_seen", "first_visit"}


def test_staff_page_shows_a_demo_persons_360_view(api, person):
    """Headless Chromium on `GET /`: look the person up by an email typed carelessly; the page shows what the
    warehouse holds (identifiers, traits with their winning source, computed traits, segments, events)."""
    from tests.browser import drive

    rows = """(id) => [...document.querySelectorAll('#' + id + ' tr[data-key]')].map(
                  (tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent))"""
    out = drive(api.url + "/", [
        {"fill": "#lookup", "value": "email:  " + person["email"].upper() + " "},
        {"click": "#find"},
        {"wait_for_function": "document.querySelectorAll('#timeline tr[data-key]').length > 0"},
        {"evaluate": f"({rows})('identifiers')", "as": "identifiers"},
        {"evaluate": f"({rows})('traits')", "as": "traits"},
        {"evaluate": f"({rows})('computed')", "as": "computed"},
        {"evaluate": f"({rows})('segments')", "as": "segments"},
        {"evaluate": f"({rows})('timeline')", "as": "timeline"},
        {"text": "#status", "as": "status"},
    ], credentials=(TOKEN, ""))
    assert out["ok"], out
    values = out["values"]
    assert sorted((r[0], r[1]) for r in values["identifiers"]) == person["ids"]
    traits = {r[0]: r for r in values["traits"]}
    assert traits["first_name"][1] == person["profile"]["first_name"]
    assert traits["first_name"][2] == person["sources"]["first_name"]  # the winning source
    assert {r[0] for r in values["computed"]} >= {"event_count", "total_revenue"}
    assert dict((r[0], r[1]) for r in values["computed"])["event_count"] == str(person["profile"]["event_count"])
    assert sorted(r[0] for r in values["segments"]) == person["segments"]
    assert len(values["timeline"]) == min(50, len(person["events"]))
    assert person["email"] in values["status"].lower() and not out["failed_requests"]
    assert not [line for line in out["console"] if line.startswith("error")], out["console"]


def test_an_erased_person_sending_again_stays_out_of_the_live_log(live_instance, person, monkeypatch):
    """After an erasure (while the collector runs) their new message lands (the extract drops it later) but never
    reaches the recent-event log, whose files then hold no byte of them; others' messages still do."""
    from bytescan import scan
    from segment.analytics import Client

    from cdp_assets.privacy.erase import request_erasure
    from cdp_assets.privacy.jobs import process_erasure_requests
    from cdp_resources import WarehouseResource

    data_dir, collector_url, api = live_instance
    monkeypatch.setenv("CDP_DATA_DIR", str(data_dir))
    user_id = next(v for t, v in person["ids"] if t == "user_id")
    request_erasure(data_dir, "email", person["email"].upper())
    [audit] = process_erasure_requests(WarehouseResource())
    assert audit["rows_deleted"]["online_store.persons"] >= 1
    assert api.get("email:" + person["email"], "traits").status_code == 404
    time.sleep(2.2)  # a running collector re-reads the suppressions every 2 s
    client = Client("wk_live", host=collector_url, max_retries=1, sync_mode=True)
    client.track(user_id, "came_back", {"email": person["email"]})
    client.track("someone-else-entirely", "control_event")
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and api.get("user_id:someone-else-entirely", "events").status_code != 200:
        time.sleep(0.02)
    assert api.get("user_id:someone-else-entirely", "events").status_code == 200
    assert api.get("user_id:" + user_id, "events").status_code == 404
    if (data_dir / "online").exists():
        assert scan(data_dir / "online", {person["email"], user_id, person["person_id"]}) == {}
