"""Fault injection for erasure: the person's data planted everywhere a crash, a rejection or a careless
client leaves it (a collector's temp file cut mid-line, a rejected file and its reason, a damaged gzip, a
file that is not UTF-8, a page URL and a search term of someone else's event, a STRUCT column), then one
erasure and a byte scan of every file under the data directory (tests/bytescan.py) that finds nothing.
Everyone else's rows stay, with the mentions of the person scrubbed."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import sqlite3

import duckdb
import polars as pl
import pytest
from bytescan import scan

from cdp_assets.metadata import markdown_preview
from cdp_assets.privacy.erase import request_erasure
from cdp_assets.privacy.jobs import process_erasure_requests
from cdp_assets.privacy.suppression import KnownValues
from cdp_resources import WarehouseResource

ANN = "p_a11a11a11a11a11a"
BOB = "p_b0bb0bb0bb0bb0bb"
# Ann's identifiers as normalized, then every raw spelling the data holds for them.
ANN_IDS = {("email", "ann.lee@x.com"), ("user_id", "u_ann_001"), ("phone", "+4915112345678"), ("anonymous_id", "anon-ann-0001")}
ANN_RAW = ["  Ann.Lee@X.com ", "ANN.LEE@X.COM", "+49 151 12345678", "0151 12345678"]
NEEDLES = {v for _, v in ANN_IDS} | {r.strip() for r in ANN_RAW} | {ANN, "ann.lee%40x.com"}
HOUR = "dt=2026-05-01/hour=08"


def _event(message_id: str, user_id: str, **extra) -> dict:
    return {"type": "track", "messageId": message_id, "userId": user_id, "event": "page_viewed",
            "timestamp": "2026-05-01T08:00:00Z", **extra}


ANN_EVENT = _event("m1", "u_ann_001", context={"traits": {"email": "  Ann.Lee@X.com "}})
BOB_MENTIONS = _event("m2", "u_bob_001", context={"page": {"url": "https://shop.example/account?email=Ann.Lee%40X.com&src=mail"}},
                      properties={"query": "orders of ANN.LEE@X.COM please", "referrer": "mailto:ann.lee@x.com."})
BOB_PLAIN = _event("m3", "u_bob_001", properties={"query": "red shoes", "friend": "jo.bob@x.com"})


def _build_warehouse(path) -> None:
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA cdp; CREATE SCHEMA core; CREATE SCHEMA raw")
        con.execute("CREATE TABLE cdp.id_map (identifier_type VARCHAR, identifier_value VARCHAR, person_id VARCHAR)")
        con.executemany("INSERT INTO cdp.id_map VALUES (?, ?, ?)", [(t, v, ANN) for t, v in sorted(ANN_IDS)]
                        + [("email", "jo.bob@x.com", BOB), ("user_id", "u_bob_001", BOB)])
        con.execute("CREATE TABLE core.identifier_lookup (identifier_type VARCHAR, identifier_value VARCHAR, raw_value VARCHAR)")
        con.executemany("INSERT INTO core.identifier_lookup VALUES (?, ?, ?)", [
            ("email", "ann.lee@x.com", ANN_RAW[0]), ("email", "ann.lee@x.com", ANN_RAW[1]),
            ("phone", "+4915112345678", ANN_RAW[2]), ("phone", "+4915112345678", ANN_RAW[3])])
        con.execute("CREATE TABLE cdp.profiles (person_id VARCHAR PRIMARY KEY, email VARCHAR, first_name VARCHAR, tags VARCHAR[])")
        con.execute("INSERT INTO cdp.profiles VALUES (?, 'ann.lee@x.com', 'Ann', ['vip']), (?, 'jo.bob@x.com', 'Bob', ['friend of ann.lee@x.com'])",
                    [ANN, BOB])
        con.execute("CREATE TABLE cdp.events (event_id VARCHAR, user_id VARCHAR, properties JSON, context JSON)")
        for event in (ANN_EVENT, BOB_MENTIONS, BOB_PLAIN):
            con.execute("INSERT INTO cdp.events VALUES (?, ?, ?, ?)", [event["messageId"], event["userId"],
                        json.dumps(event.get("properties", {})), json.dumps(event.get("context", {}))])
        # Bulk: enough of Ann's rows that, deleted, they would stay in the file's blocks.
        con.execute("CREATE TABLE raw.web (file VARCHAR, line_no INTEGER, record VARCHAR)")
        con.execute("INSERT INTO raw.web SELECT 'f', i, ? FROM range(2000) t(i)", [json.dumps(ANN_EVENT)])
        con.execute("INSERT INTO raw.web SELECT 'f', 5000 + i, ? FROM range(2000) t(i)", [json.dumps(BOB_PLAIN)])
        con.execute("CREATE TABLE cdp.quarantine (source VARCHAR, record VARCHAR, reasons VARCHAR[])")
        con.execute("INSERT INTO cdp.quarantine VALUES ('web', 'not json, sent by ann.lee@x.com;', ['malformed_json: ...']), "
                    "('web', '{\"phone\": \"+49 151 12345678\"', ['malformed_json: ...'])")
        con.execute("CREATE TABLE core.notes (person_id VARCHAR, detail STRUCT(note VARCHAR, n INTEGER))")
        con.execute("INSERT INTO core.notes VALUES (?, {'note': 'met ann.lee@x.com at the fair', 'n': 1}), (?, {'note': 'none', 'n': 2})",
                    [BOB, BOB])
        con.execute("CREATE VIEW cdp.bob_events AS SELECT * FROM cdp.events WHERE user_id = 'u_bob_001'")


def _plant_files(data) -> None:
    hour = data / "landing" / "web" / HOUR
    hour.mkdir(parents=True)
    lines = [json.dumps(e) for e in (ANN_EVENT, BOB_MENTIONS, BOB_PLAIN)]
    (hour / "part-00000.jsonl").write_text("\n".join(lines) + "\n")
    (hour / "part-00001.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    # A collector killed mid-write: a temp file whose last line is cut.
    (hour / ".tmp-5f3a9c").write_text(lines[2] + "\n" + lines[0] + "\n" + lines[0][:70])
    # Not UTF-8: a stray Latin-1 byte on Bob's line.
    (hour / "part-00002.jsonl").write_bytes(lines[0].encode() + b"\n" + lines[2].encode().replace(b"red", b"r\xe9d") + b"\n")
    # A damaged gzip: a readable prefix holding Ann, then garbage.
    noise = [json.dumps(_event(f"n{i}", "u_bob_001", properties={"x": os.urandom(24).hex()})) for i in range(200)]
    damaged = gzip.compress(("\n".join([lines[1], lines[0], *noise, lines[0]]) + "\n").encode())
    (hour / "part-00003.jsonl.gz").write_bytes(damaged[: len(damaged) // 2] + b"\x00garbage" * 20)
    rejected = data / "landing" / "_rejected" / "web" / HOUR
    rejected.mkdir(parents=True)
    (rejected / "part-00009.jsonl.gz").write_bytes(b"this is not gzip: " + lines[0].encode() + b"\n" + lines[2].encode())
    (rejected / "part-00009.jsonl.gz.reason").write_text("part-00009.jsonl.gz: cannot be read near 'ANN.LEE@X.COM'\n")
    cdc = data / "cdc" / "crm_customers"
    cdc.mkdir(parents=True)
    (cdc / "0001.jsonl").write_text(json.dumps({"payload": {"op": "c", "after": {"id": "c1", "email": ANN_RAW[1], "phone": ANN_RAW[2]}}})
                                    + "\n" + json.dumps({"payload": {"op": "c", "after": {"id": "c2", "email": "jo.bob@x.com"}}}) + "\n")
    imports = data / "imports" / "pos"
    imports.mkdir(parents=True)
    with open(imports / "pos_2026-05-01.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["receipt_id", "phone", "note"], ["r1", ANN_RAW[3], ""],
                                      ["r2", "+4930123456", "gift for +4915112345678"]])
    api = data / "api" / "orders"
    api.mkdir(parents=True)
    (api / "page-1.json").write_text(json.dumps({"orders": [{"order_id": "o1", "customer_email": ANN_RAW[0]},
                                                            {"order_id": "o2", "customer_email": "jo.bob@x.com"}]}, indent=2))
    exports = data / "exports" / "segment_exports" / "vip"
    exports.mkdir(parents=True)
    frame = pl.DataFrame({"person_id": [ANN, BOB], "email": ["ann.lee@x.com", "jo.bob@x.com"],
                          "note": ["", "referred by ann.lee@x.com"]})
    frame.write_parquet(exports / "20260501T080000Z.parquet")
    frame.write_csv(exports / "20260501T080000Z.csv")
    _plant_online_store(data)
    (data / "landing" / "_webhook_ids").mkdir()
    with sqlite3.connect(data / "landing" / "_webhook_ids" / "ids.sqlite") as db:
        db.execute("CREATE TABLE seen (id TEXT PRIMARY KEY)")
        db.execute("INSERT INTO seen VALUES ('msg_1')")


def _plant_online_store(data) -> None:
    """The online store (SQLite under data/online/): both persons as a refresh writes them, and the recent-event
    log holding Ann's live message and Bob's that mentions her."""
    from cdp_resources.online_store import PersonRecord, open_store
    from cdp_resources.online_store.live import live_events

    store = open_store(data)
    with store.writer(full=True) as writer:
        writer.put([
            PersonRecord(ANN, {"traits": {"email": "ann.lee@x.com", "phone": "+4915112345678"}, "segments": []},
                         [{"type": t, "id": v} for t, v in sorted(ANN_IDS)], [(1, "m1", ANN_EVENT)]),
            PersonRecord(BOB, {"traits": {"email": "jo.bob@x.com"}, "segments": []}, [{"type": "user_id", "id": "u_bob_001"}],
                         [(2, "m3", BOB_PLAIN)]),
        ])
        writer.set_meta({"batch": "1"})
    store.append_live(live_events([{**ANN_EVENT, "messageId": "live-1", "anonymousId": "anon-ann-0001"},
                                   {**BOB_MENTIONS, "messageId": "live-2"}, {**BOB_PLAIN, "messageId": "live-3"}]))
    store.close()


@pytest.fixture
def data(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("CDP_DATA_DIR", str(data))
    monkeypatch.setenv("CDP_PII_SALT", "test-salt-not-a-secret")
    _build_warehouse(data / "warehouse.duckdb")
    _plant_files(data)
    return data


def test_one_erasure_leaves_no_byte_of_the_person_anywhere(data):
    before = scan(data, NEEDLES)
    assert {"warehouse.duckdb", "online/store.sqlite", "online/live.sqlite", f"landing/web/{HOUR}/.tmp-5f3a9c", f"landing/web/{HOUR}/part-00003.jsonl.gz",
            f"landing/_rejected/web/{HOUR}/part-00009.jsonl.gz.reason", "exports/segment_exports/vip/20260501T080000Z.parquet",
            f"landing/web/{HOUR}/part-00002.jsonl"} <= set(before)  # the scan sees them where they are
    request_erasure(data, "email", " ann.LEE@x.com")
    [audit] = process_erasure_requests(WarehouseResource())
    assert audit["persons"] == 1 and audit["files_rewritten"] >= 10
    assert scan(data, NEEDLES) == {}
    assert not list((data / "privacy" / "requests").iterdir())

    with duckdb.connect(str(data / "warehouse.duckdb")) as con:
        assert con.execute("SELECT person_id, email, tags FROM cdp.profiles").fetchall() == [(BOB, "jo.bob@x.com", ["friend of [erased]"])]
        events = dict(con.execute("SELECT event_id, concat(properties, context) FROM cdp.events").fetchall())
        assert set(events) == {"m2", "m3"}  # Ann's event went; Bob's stay, scrubbed
        assert "email=[erased]&src=mail" in events["m2"] and "orders of [erased] please" in events["m2"]
        assert "mailto:[erased]." in events["m2"]
        assert con.execute("SELECT count(*) FROM raw.web").fetchone()[0] == 2000  # Bob's 2,000 rows, all of them
        assert con.execute("SELECT record FROM cdp.quarantine").fetchall() == [("not json, sent by [erased];",)]
        assert con.execute("SELECT detail.n FROM core.notes").fetchall() == [(2,)]  # a STRUCT cannot be scrubbed: that row went
        assert con.execute("SELECT count(*) FROM cdp.bob_events").fetchone()[0] == 2  # views survive the rewrite
        with pytest.raises(duckdb.ConstraintException):  # and constraints
            con.execute("INSERT INTO cdp.profiles VALUES (?, NULL, NULL, NULL)", [BOB])
    hour = data / "landing" / "web" / HOUR
    kept = [json.loads(line) for line in (hour / "part-00000.jsonl").read_text().splitlines()]
    assert [e["messageId"] for e in kept] == ["m2", "m3"] and "email=[erased]&src=mail" in kept[0]["context"]["page"]["url"]
    assert gzip.decompress((hour / "part-00001.jsonl.gz").read_bytes()).decode().count('"messageId"') == 2
    assert (hour / ".tmp-5f3a9c").read_text().splitlines() == [json.dumps(BOB_PLAIN)]  # the cut line of Ann went too
    assert b"r\xe9d shoes" in (hour / "part-00002.jsonl").read_bytes()  # an unreadable file keeps what is not hers
    assert "jo.bob@x.com" in (data / "cdc" / "crm_customers" / "0001.jsonl").read_text()
    pos = list(csv.reader(io.StringIO((data / "imports" / "pos" / "pos_2026-05-01.csv").read_text())))
    assert pos == [["receipt_id", "phone", "note"], ["r2", "+4930123456", "gift for [erased]"]]
    assert json.loads((data / "api" / "orders" / "page-1.json").read_text()) == {"orders": [{"order_id": "o2", "customer_email": "jo.bob@x.com"}]}
    exported = pl.read_parquet(data / "exports" / "segment_exports" / "vip" / "20260501T080000Z.parquet")
    assert exported.to_dicts() == [{"person_id": BOB, "email": "jo.bob@x.com", "note": "referred by [erased]"}]
    assert (data / "landing" / "_rejected" / "web" / HOUR / "part-00009.jsonl.gz.reason").read_text() == (
        "part-00009.jsonl.gz: cannot be read near '[erased]'\n")
    with sqlite3.connect(data / "landing" / "_webhook_ids" / "ids.sqlite") as db:  # databases are left whole
        assert db.execute("SELECT id FROM seen").fetchall() == [("msg_1",)]
    assert not [p for p in data.rglob("*") if p.name.endswith((".rewrite", ".wal"))]
    from cdp_resources.online_store import open_store

    store = open_store(data)  # Ann is gone from the online store; Bob's entry and his plain live message stay
    assert store.person(ANN) is None and store.person_of("email", "ann.lee@x.com") is None
    assert store.person(BOB)["traits"]["email"] == "jo.bob@x.com" and store.person_of("user_id", "u_bob_001") == BOB
    assert [e[1] for e in store.live_events([("user_id", "u_bob_001")], None, 10)] == ["live-3"]
    assert store.meta() == {}  # the next refresh loads the store again, whole
    assert audit["rows_deleted"]["online_store.persons"] == 1 and audit["rows_deleted"]["online_store.live_events"] == 2


def test_a_mention_is_the_identifier_not_glued_to_more_of_another():
    erased = KnownValues(["ann.lee@x.com", "u_ann_001", "42"])
    assert erased.scrub("https://s/?email=Ann.Lee%40X.com&x=1 or email%3Dann.lee%40x.com") == (
        "https://s/?email=[erased]&x=1 or email%3D[erased]")
    assert erased.scrub("joann.lee@x.com, ann.lee@x.com.au, x.ann.lee@x.com, u_ann_0010") == (
        "joann.lee@x.com, ann.lee@x.com.au, x.ann.lee@x.com, u_ann_0010")  # other people's identifiers
    assert erased.scrub("order 42 shipped") == "order 42 shipped"  # too short to be told from anything else


def test_previews_never_show_personal_values():
    """Dagster keeps metadata where an erasure cannot reach it: previews show only non-personal columns."""
    frame = pl.DataFrame({"source": ["web"], "file": ["landing/web/x.jsonl"], "user_id": ["u_ann_001"],
                          "record": ['{"email": "ann.lee@x.com"}'], "reasons": [["invalid_email: ann.lee@x is not an email"]],
                          "left_value": ["+4915112345678"]})
    text = markdown_preview(frame).value
    assert not any(needle in text.lower() for needle in NEEDLES | {"ann.lee@x"})
    assert "| web | landing/web/x.jsonl | ‹hidden› | ‹hidden› | invalid_email | ‹hidden› |" in text


def test_the_rewrite_keeps_every_row(tmp_path):
    from cdp_resources.warehouse import rewrite_database

    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE t AS SELECT range AS i FROM range(10)")
    result = rewrite_database(path)
    assert result["bytes_after"] > 0 and os.path.exists(path)
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT sum(i) FROM t").fetchone()[0] == 45
