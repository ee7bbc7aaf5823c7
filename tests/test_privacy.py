"""Erasure leaves nothing of the person in any table or file, keeps them out when their data comes back,
and leaves everyone else as they were; the access export holds what we had."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timezone

import duckdb
import polars as pl
import pytest

from cdp_assets.identity.rules import load_identity_rules
from cdp_assets.privacy.erase import export_person, request_erasure
from cdp_assets.privacy.jobs import process_erasure_requests
from cdp_assets.profiles.computed import RFM_COLUMNS, load_computed_traits
from cdp_assets.runner import run_everything
from cdp_assets.sample_data import generate_sample_data
from cdp_resources import WarehouseResource
from cdp_resources.settings import config_dir

# Profile columns that move for everyone between two builds: RFM quintiles (one buyer less shifts the ranks)
# and traits counted against the clock (30-day windows, days since), which the rebuild minutes later moves.
_SHIFTING = ", ".join(
    list(RFM_COLUMNS)
    + [name for name, spec in load_computed_traits(config_dir() / "traits.yaml")["computed_traits"].items()
       if spec.get("within_days") or spec["aggregate"].startswith("days_since")]
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


def _found_in_files(data_dir, spellings: set[str]) -> list[str]:
    found = []
    for path in data_dir.rglob("*"):
        if not path.is_file() or path.name.startswith("warehouse.duckdb") or path.parent.name == "privacy":
            continue
        raw = path.read_bytes()
        if path.suffix == ".gz":
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError):  # the sample's corrupt file, rejected as it is
                pass
        text = pl.read_parquet(path).write_csv() if path.suffix == ".parquet" else raw.decode("utf-8", "replace")
        if any(s in text.lower() for s in spellings):
            found.append(str(path.relative_to(data_dir)))
    return found


def test_erasure_everywhere_and_for_good(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    monkeypatch.setenv("CDP_DATA_DIR", str(data_dir))
    monkeypatch.setenv("CDP_PII_SALT", "test-salt-not-a-secret")
    manifest = generate_sample_data(data_dir, events=3000, seed=5, log=lambda *_: None)
    assert run_everything(progress=lambda _: None).success
    manifest_text = (data_dir / "sample_manifest.json").read_text().lower()
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        candidates = con.execute(
            """SELECT p.person_id, p.email FROM cdp.profiles p JOIN cdp.id_map m ON m.person_id = p.person_id
               WHERE p.order_count > 0 AND p.email IS NOT NULL GROUP BY ALL
               HAVING count(*) FILTER (WHERE m.identifier_type = 'user_id') = 1 ORDER BY p.person_id"""
        ).fetchall()
        person_id, email = next((p, e) for p, e in candidates if e not in manifest_text)
        spellings = _spellings(con, person_id)
        assert _found_in_tables(con, spellings) and _found_in_files(data_dir, spellings)  # the scan does find them
        user_id = con.execute("SELECT identifier_value FROM cdp.id_map WHERE person_id = ? AND identifier_type = 'user_id'", [person_id]).fetchone()[0]
        others = con.execute(f"SELECT * EXCLUDE ({_SHIFTING}) FROM cdp.profiles WHERE person_id <> ? ORDER BY person_id", [person_id]).pl()
        export = export_person(con, "email", email.upper(), RULES)
    assert export["person_ids"] == [person_id] and export["events"] and export["profile"][0]["email"] == email

    request_erasure(data_dir, "email", f"  {email.upper()} ")
    [audit] = process_erasure_requests(WarehouseResource())
    assert audit["persons"] == 1 and audit["file_records_removed"] > 0
    assert email not in json.dumps(audit).lower() and user_id not in json.dumps(audit).lower()
    assert run_everything(progress=lambda _: None).success
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        assert _found_in_tables(con, spellings) == {}
        after = con.execute(f"SELECT * EXCLUDE ({_SHIFTING}) FROM cdp.profiles ORDER BY person_id").pl()
        suppressed = con.execute("SELECT count(*) FROM cdp.suppressions").fetchone()[0]
    assert _found_in_files(data_dir, spellings) == []
    assert after.equals(others) and suppressed >= 3  # everyone else untouched
    assert not list((data_dir / "privacy" / "requests").glob("*.json"))  # the request, with the identifier, is gone

    # They come back: a new web message and a CRM change carrying their identifiers.
    now = datetime.now(timezone.utc)
    hour = data_dir / "landing" / "web" / f"dt={now:%Y-%m-%d}" / f"hour={now:%H}"
    hour.mkdir(parents=True, exist_ok=True)
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
    assert _found_in_files(data_dir, spellings) == []
