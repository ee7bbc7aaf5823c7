"""Erasure leaves nothing of the person in any table or any byte on disk, keeps them out when their data
comes back, and leaves everyone else as they were; the access export holds what we had.

The scan (tests/bytescan.py) reads every file under the data directory as bytes: the DuckDB file, dot-files
and temp files, rejected files and their reasons, gzip decompressed (a damaged one as far as it goes)."""

from __future__ import annotations

import gzip
import json
import os
import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import duckdb
import pytest
from bytescan import scan

from cdp_assets.identity.rules import load_identity_rules
from cdp_assets.privacy.erase import export_person, request_erasure
from cdp_assets.profiles.computed import RFM_COLUMNS, load_computed_traits
from cdp_assets.runner import run_everything
from cdp_assets.sample_data import generate_sample_data
from cdp_resources.settings import config_dir

# Profile columns that move for everyone between two builds: RFM quintiles (one buyer less shifts the ranks)
# and traits counted against the clock (30-day windows, days since), which the rebuild minutes later moves.
_SHIFTING = ", ".join(
    list(RFM_COLUMNS)
    + [name for name, spec in load_computed_traits(config_dir() / "traits.yaml")["computed_traits"].items()
       if spec.get("within_days") or spec["aggregate"].startswith("days_since")]
    + ["row_hash", "_batch_id"]  # bookkeeping of the incremental build: the rebuild after an erasure renews them
)

pytestmark = pytest.mark.slow
RULES = load_identity_rules(config_dir() / "identity.yaml")


def _spellings(con, person_id: str) -> set[str]:
    """Every value we hold for the person: identifiers in each spelling seen, and distinctive traits."""
    values = {r[0] for r in con.execute(
        """SELECT l.raw_value FROM core.identifier_lookup l JOIN cdp.id_map m USING (identifier_type, identifier_value)
           WHERE m.person_id = ? UNION SELECT identifier_value FROM cdp.id_map WHERE person_id = ?""", [person_id, person_id]
    ).fetchall()}
    return {v.strip().lower() for v in values if v and len(v.strip()) > 5} | {person_id}


def _found_in_tables(con, spellings: set[str]) -> dict[str, int]:
    found = {}
    for schema, table in con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' AND table_catalog = current_database()"
    ).fetchall():
        text = "lower(concat_ws('|', *COLUMNS(*)))"  # every column of the row in one string
        hits = con.execute(
            f'SELECT count(*) FROM (SELECT {text} AS t FROM "{schema}"."{table}") WHERE list_bool_or(list_transform(?, s -> contains(t, s)))',
            [sorted(spellings)],
        ).fetchone()[0]
        if hits:
            found[f"{schema}.{table}"] = hits
    return found


def _candidate(data_dir, manifest_text: str) -> str:
    """Before anything runs: a registered customer with orders whom the manifest does not name (the manifest
    is the generator's, kept in the data directory)."""
    orders = Counter()
    for line in (data_dir / "api" / "orders" / "orders.jsonl").read_text().splitlines():
        try:
            email = json.loads(line)["customer_email"].strip().lower()
        except (ValueError, KeyError, AttributeError):
            continue
        number = re.search(r"\.(\d+)@", email)
        if number and email not in manifest_text and f"u_{int(number[1]):06d}" not in manifest_text:
            orders[email] += 1
    return sorted(orders, key=lambda e: (-orders[e], e))[0]


def _damaged_gzip(lines: list[str]) -> bytes:
    noise = [json.dumps({"type": "page", "messageId": f"noise-{i}", "anonymousId": os.urandom(8).hex()}) for i in range(300)]
    whole = gzip.compress(("\n".join(lines + noise) + "\n").encode())
    return whole[: len(whole) * 2 // 3] + b"\x00 not gzip any more" * 10


def test_erasure_everywhere_and_for_good(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    monkeypatch.setenv("CDP_DATA_DIR", str(data_dir))
    monkeypatch.setenv("CDP_PII_SALT", "test-salt-not-a-secret")
    generate_sample_data(data_dir, events=3000, seed=5, log=lambda *_: None)
    manifest_text = (data_dir / "sample_manifest.json").read_text().lower()
    email = _candidate(data_dir, manifest_text)
    now = datetime.now(timezone.utc)
    hour = data_dir / "landing" / "web" / f"dt={now - timedelta(hours=2):%Y-%m-%d}" / f"hour={now - timedelta(hours=2):%H}"
    hour.mkdir(parents=True, exist_ok=True)
    stamp = (now - timedelta(hours=2)).isoformat()
    # Someone else's events mentioning them inside longer strings: a page URL, a search term; a malformed line.
    visitor = {"anonymousId": "anon-planted-visitor", "timestamp": stamp, "receivedAt": stamp}
    (hour / "part-90000.jsonl").write_text("\n".join([
        json.dumps({"type": "page", "messageId": "planted-1", "name": "account", **visitor,
                    "properties": {"path": "/account", "url": f"https://shop.example/account?email={quote(email.title())}&src=mail"},
                    "context": {"page": {"referrer": f"https://mail.example/?to={email.upper()}"}}}),
        json.dumps({"type": "track", "messageId": "planted-2", "event": "products_searched", **visitor,
                    "properties": {"query": f"orders of {email.upper()} please"}}),
        '{"type": "track", "messageId": "planted-3", "note": "sent by ' + email + '"',
    ]) + "\n")
    # A gzip damaged in flight holding their identify call: the extract rejects it, with a reason.
    (hour / "part-90001.jsonl.gz").write_bytes(_damaged_gzip([json.dumps(
        {"type": "identify", "messageId": "planted-4", "anonymousId": "anon-planted-2", "traits": {"email": email.upper()},
         "timestamp": stamp})]))
    assert run_everything(progress=lambda _: None).success
    assert list((data_dir / "landing" / "_rejected").rglob("part-90001.jsonl.gz.reason"))

    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        [(person_id,)] = con.execute("SELECT DISTINCT person_id FROM cdp.id_map WHERE identifier_type = 'email' AND identifier_value = ?",
                                     [email]).fetchall()
        [(user_id,)] = con.execute("SELECT identifier_value FROM cdp.id_map WHERE person_id = ? AND identifier_type = 'user_id'",
                                   [person_id]).fetchall()
        spellings = _spellings(con, person_id) | {quote(email)}
        assert _found_in_tables(con, spellings)
        assert con.execute("SELECT count(*) FROM cdp.events WHERE event_id IN ('planted-1', 'planted-2')").fetchone()[0] == 2
        others = con.execute(f"SELECT * EXCLUDE ({_SHIFTING}) FROM cdp.profiles WHERE person_id <> ? ORDER BY person_id", [person_id]).pl()
        export = export_person(con, "email", email.upper(), RULES)
    assert export["person_ids"] == [person_id] and export["events"] and export["profile"][0]["email"] == email

    # What a killed collector leaves (temp files, the last line cut), and a file rejected by hand with its reason.
    identify = json.dumps({"type": "identify", "messageId": "planted-5", "userId": user_id, "traits": {"email": email},
                           "timestamp": stamp})
    (hour / ".tmp-3f9ac2d1").write_text(identify + "\n" + identify[:60])
    (hour / ".tmp-77e0b4aa.gz").write_bytes(gzip.compress((identify + "\n").encode())[:-9])
    rejected = data_dir / "landing" / "_rejected" / "web" / hour.relative_to(data_dir / "landing" / "web")
    rejected.mkdir(parents=True, exist_ok=True)
    (rejected / "part-90002.jsonl").write_bytes(identify.encode() + b"\n\xff\xfe not utf-8\n")
    (rejected / "part-90002.jsonl.reason").write_text(f"part-90002.jsonl: line 2 is not UTF-8 (after {email.title()})\n")
    found = scan(data_dir, spellings)
    assert "warehouse.duckdb" in found and any(".tmp-" in f for f in found) and any(f.endswith(".reason") for f in found)
    assert any("part-90001.jsonl.gz" in f and "_rejected" in f for f in found)  # the scan reads a damaged gzip's prefix

    request_erasure(data_dir, "email", f"  {email.upper()} ")
    progress: list[str] = []
    assert run_everything(progress=progress.append).success  # `cdp run` erases first, then rebuilds
    assert progress[0].startswith("[0] privacy: 1 erasure request")
    assert scan(data_dir, spellings) == {}
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        assert _found_in_tables(con, spellings) == {}
        after = con.execute(f"SELECT * EXCLUDE ({_SHIFTING}) FROM cdp.profiles ORDER BY person_id").pl()
        suppressed = con.execute("SELECT count(*) FROM cdp.suppressions").fetchone()[0]
        [audit] = con.execute("SELECT * FROM cdp.privacy_audit").pl().to_dicts()
        urls = dict(con.execute("SELECT event_id, properties::VARCHAR FROM cdp.events WHERE event_id LIKE 'planted-%'").fetchall())
    assert after.equals(others) and suppressed >= 3  # everyone else untouched
    assert audit["persons"] == 1 and audit["file_records_removed"] > 0
    assert email not in json.dumps(audit, default=str).lower() and user_id not in json.dumps(audit, default=str).lower()
    assert "email=[erased]&src=mail" in urls["planted-1"] and "orders of [erased] please" in urls["planted-2"]  # theirs, scrubbed
    assert not list((data_dir / "privacy" / "requests").glob("*.json"))  # the request, with the identifier, is gone

    # They come back: a new web message and a CRM change carrying their identifiers.
    (hour / "resent.jsonl").write_text(json.dumps({
        "type": "identify", "messageId": "resent-1", "userId": user_id, "traits": {"email": email.title()},
        "timestamp": now.isoformat(), "receivedAt": now.isoformat()}) + "\n")
    (data_dir / "cdc" / "crm_customers" / "9999.jsonl").write_text(json.dumps({"payload": {
        "op": "u", "before": None, "source": {"lsn": 10**9, "ts_ms": 10**12},
        "after": {"id": "crm_new", "email": email, "phone": None, "first_name": "X", "last_name": "Y",
                  "gender": None, "city": "Oslo", "updated_at": now.isoformat()}}}) + "\n")
    assert run_everything(progress=lambda _: None).success
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        assert _found_in_tables(con, spellings) == {}
    assert scan(data_dir, spellings) == {}
