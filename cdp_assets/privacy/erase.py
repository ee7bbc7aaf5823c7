"""Erasure and access requests (GDPR/CCPA).

`cdp erase TYPE:VALUE` only records the request (a file under data/privacy/requests/, mode 0600); the
privacy job processes it: it finds the person, hashes every identifier they were known by into
`cdp.suppressions`, deletes their rows from every table, rewrites every input and export file without
their records, tells subscribed destinations, and writes an audit row holding no personal data. From then
on extracts drop records carrying a suppressed identifier, so data re-sent later never lands.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path

from cdp_assets.identity.normalize import normalize_identifier
from cdp_assets.identity.rules import IdentityRules
from cdp_assets.privacy.files import DATA_SUFFIXES, strip_file
from cdp_assets.privacy.suppression import SUPPRESSIONS_DDL, KnownValues, identifier_hash
from cdp_resources.warehouse import table_exists

AUDIT_DDL = """CREATE TABLE IF NOT EXISTS cdp.privacy_audit (
    request_id VARCHAR, action VARCHAR, requested_at TIMESTAMP, done_at TIMESTAMP, persons INTEGER,
    identifiers INTEGER, rows_deleted JSON, file_records_removed INTEGER, files_rewritten INTEGER,
    notices_enqueued INTEGER)"""
KEEP = {"cdp.suppressions", "cdp.privacy_audit"}


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def requests_dir(data_dir: Path) -> Path:
    return data_dir / "privacy" / "requests"


def request_erasure(data_dir: Path, identifier_type: str, value: str) -> str:
    """Record a request; the identifier is kept only until the request is processed."""
    request_id = uuid.uuid4().hex
    folder = requests_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    temp = folder / f".{request_id}.json"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"request_id": request_id, "type": identifier_type, "value": value,
                   "requested_at": _now().isoformat()}, handle)
    os.replace(temp, folder / f"{request_id}.json")
    return request_id


def pending_requests(data_dir: Path) -> list[tuple[Path, dict]]:
    folder = requests_dir(data_dir)
    return [(p, json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))] if folder.exists() else []


def person_identifiers(con, identifier_type: str, value: str, rules: IdentityRules) -> tuple[set[str], set[tuple[str, str]]]:
    """(person ids, normalized identifiers) of whoever holds the identifier; the identifier alone if nobody."""
    normalized = normalize_identifier(identifier_type, value, rules.default_phone_region) or value.strip()
    persons = {r[0] for r in con.execute(
        "SELECT person_id FROM cdp.id_map WHERE identifier_type = ? AND identifier_value = ?", [identifier_type, normalized]
    ).fetchall()} if table_exists(con, "cdp.id_map") else set()
    identifiers = {(identifier_type, normalized)}
    if persons:
        identifiers |= set(con.execute(
            "SELECT identifier_type, identifier_value FROM cdp.id_map WHERE list_contains(?, person_id)", [sorted(persons)]
        ).fetchall())
    return persons, identifiers


def erase(con, data_dir: Path, request: dict, rules: IdentityRules, salt: str, destinations=()) -> dict:
    """Process one erasure request; the audit row it writes is returned."""
    persons, identifiers = person_identifiers(con, request["type"], request["value"], rules)
    con.execute("CREATE SCHEMA IF NOT EXISTS cdp")
    con.execute(SUPPRESSIONS_DDL)
    con.executemany(
        "INSERT INTO cdp.suppressions VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        [(t, identifier_hash(salt, v), datetime.fromisoformat(request["requested_at"])) for t, v in sorted(identifiers)],
    )
    spellings = _spellings(con, identifiers)
    notify = _destinations_holding(con, persons, destinations)
    rows_deleted = _delete_rows(con, persons, spellings)
    erased = KnownValues(spellings)
    removed = rewritten = 0
    for path in sorted(data_dir.rglob("*")):
        if path.is_file() and path.suffix in DATA_SUFFIXES and "privacy" not in path.relative_to(data_dir).parts:
            count = strip_file(path, erased)
            removed, rewritten = removed + count, rewritten + bool(count)
    notices = _deletion_notices(con, persons, notify)
    con.execute(AUDIT_DDL)
    audit = {
        "request_id": request["request_id"], "action": "erase", "requested_at": request["requested_at"],
        "done_at": _now().isoformat(), "persons": len(persons), "identifiers": len(identifiers),
        "rows_deleted": rows_deleted, "file_records_removed": removed, "files_rewritten": rewritten,
        "notices_enqueued": notices,
    }
    con.execute("INSERT INTO cdp.privacy_audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [*list(audit.values())[:6], json.dumps(rows_deleted), removed, rewritten, notices])
    con.execute("CHECKPOINT")
    return audit


def _spellings(con, identifiers: set[tuple[str, str]]) -> set[str]:
    """Every spelling of the identifiers seen in the data (raw values before normalization), lower-cased."""
    values = {v for _, v in identifiers}
    if table_exists(con, "core.identifier_lookup"):
        values |= {r[0] for r in con.execute(
            "SELECT raw_value FROM core.identifier_lookup WHERE list_contains(?, identifier_type || ':' || identifier_value)",
            [sorted(f"{t}:{v}" for t, v in identifiers)],
        ).fetchall() if r[0]}
    return {v.strip().lower() for v in values if v.strip()}


def _delete_rows(con, persons: set[str], spellings: set[str]) -> dict[str, int]:
    """Every base table: rows of the persons, and rows with one of the spellings as a value or as a
    quoted string inside JSON text (events, raw records, quarantine). Done in SQL, one statement per table."""
    deleted = {}
    tables = con.execute(
        """SELECT table_schema, table_name FROM information_schema.tables
           WHERE table_type = 'BASE TABLE' AND table_catalog = current_database()
             AND table_schema NOT IN ('information_schema', 'pg_catalog') ORDER BY 1, 2"""
    ).fetchall()
    known = sorted(spellings)
    for schema, name in tables:
        if f"{schema}.{name}" in KEEP:
            continue
        columns = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
            [schema, name],
        ).fetchall()
        conditions, params = [], []
        for column, kind in columns:
            quoted = f'"{column}"'
            if column in ("person_id", "from_person_id", "to_person_id") and persons:
                conditions.append(f"list_contains(?, {quoted})")
                params.append(sorted(persons))
            if kind == "VARCHAR" or kind == "JSON" or kind.endswith("[]"):
                text = f"{quoted}::VARCHAR"
                conditions.append(f"list_contains(?, lower(trim({text})))")
                conditions.append(
                    f"list_has_any(list_transform(regexp_extract_all({text}, '\"([^\"]*)\"', 1), x -> lower(trim(x))), ?)"
                )
                params += [known, known]
        if not conditions:
            continue
        count = con.execute(f'DELETE FROM "{schema}"."{name}" WHERE {" OR ".join(conditions)}', params).fetchone()[0]
        if count:
            deleted[f"{schema}.{name}"] = count
    return deleted


def _destinations_holding(con, persons: set[str], destinations) -> list[str]:
    """The HTTP destinations that were sent something about these persons: they get a deletion notice."""
    http = [d.name for d in destinations if d.kind == "http"]
    if not http or not persons or not table_exists(con, "cdp.deliveries"):
        return []
    return [r[0] for r in con.execute(
        """SELECT DISTINCT destination FROM cdp.deliveries
           WHERE status = 'sent' AND list_contains(?, person_id) AND list_contains(?, destination) ORDER BY 1""",
        [sorted(persons), http],
    ).fetchall()]


def _deletion_notices(con, persons: set[str], destinations: list[str]) -> int:
    """A `person_deleted` item per destination and person: the pseudonymous id, and only until it is
    delivered (the ledger then forgets whom it was about)."""
    from cdp_assets.activation.deliveries import LEDGER_DDL

    if not destinations or not persons:
        return 0
    con.execute(LEDGER_DDL)
    rows = [
        (d, hashlib.sha256(f"{d}|person_deleted|{p}".encode()).hexdigest(), p, "person_deleted",
         json.dumps({"type": "person_deleted", "person_id": p}), _now(), "pending", 0, None, _now(), None)
        for d in destinations for p in sorted(persons)
    ]
    con.executemany("INSERT INTO cdp.deliveries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", rows)
    return len(rows)


def export_person(con, identifier_type: str, value: str, rules: IdentityRules) -> dict:
    """Everything held about a person, as one JSON-ready document (the access request)."""
    persons, identifiers = person_identifiers(con, identifier_type, value, rules)
    document = {"request": {"type": identifier_type, "value": value}, "person_ids": sorted(persons),
                "identifiers": [{"type": t, "value": v} for t, v in sorted(identifiers)]}
    by_person = {
        "profile": "cdp.profiles", "profile_history": "cdp.profile_history", "trait_values": "core.person_trait_values",
        "segments": "cdp.segment_membership", "segment_changes": "cdp.segment_changes", "events": "core.person_events",
        "purchases": "core.person_purchases", "relationships": "cdp.relationships", "deliveries": "cdp.deliveries",
    }
    for key, table in by_person.items():
        document[key] = _rows(con, f"SELECT * FROM {table} WHERE list_contains(?, person_id)", [sorted(persons)]) \
            if table_exists(con, table) else []
    matcher = KnownValues(_spellings(con, identifiers))
    document["quarantined_records"] = [
        row for row in (_rows(con, "SELECT source, record, reasons, received_at FROM cdp.quarantine", [])
                        if table_exists(con, "cdp.quarantine") else [])
        if matcher.matches_record(row["record"])
    ]
    return document


def _rows(con, sql: str, params: list) -> list[dict]:
    cursor = con.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]
