"""Erasure and access requests (GDPR/CCPA).

`cdp erase TYPE:VALUE` only records the request (a file under data/privacy/requests/, mode 0600); the
privacy job processes it: it finds the person, hashes every identifier they were known by into
`cdp.suppressions`, deletes their rows from every table and scrubs their identifiers from other rows'
strings, rewrites every file under the data directory the same way, tells subscribed destinations, writes
an audit row holding no personal data, and finally rewrites the warehouse file itself (a DELETE leaves
the old values in the file's blocks). From then on extracts drop records carrying a suppressed
identifier, so data re-sent later never lands.

Every table is visited, so new tables need nothing here: a row is the person's when a person-id column
(`PERSON_ID_COLUMN`) holds one of their ids or any text, JSON or list column holds one of their
identifiers as a value (or as a JSON string inside it); other rows' strings that mention one are scrubbed.
On Spark (`CDP_ENGINE=spark`, `erasure_on`) cdp_assets/privacy/spark.py applies these same rules to the
Parquet tables, rewriting each table that holds the person.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from cdp_assets.identity.normalize import normalize_identifier
from cdp_assets.identity.rules import IdentityRules
from cdp_assets.privacy.files import erase_from_file
from cdp_assets.privacy.suppression import SUPPRESSIONS_DDL, KnownValues, identifier_hash
from cdp_resources.warehouse import rewrite_database, table_exists

AUDIT_DDL = """CREATE TABLE IF NOT EXISTS cdp.privacy_audit (
    request_id VARCHAR, action VARCHAR, requested_at TIMESTAMP, done_at TIMESTAMP, persons INTEGER,
    identifiers INTEGER, rows_deleted JSON, file_records_removed INTEGER, files_rewritten INTEGER,
    notices_enqueued INTEGER)"""
KEEP = {"cdp.suppressions", "cdp.privacy_audit"}
PERSON_ID_COLUMN = re.compile(r"^(.+_)?person_id$")  # person_id, from_person_id, to_person_id, ...
# Files an erasure leaves alone: the request itself (deleted once processed) and the salt; the online store,
# erased through its own interface (`_erase_online_store`); the warehouse, rewritten as a whole at the end
# (`rewrite_database`).
SKIPPED = ("privacy", "online")


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


def normalized_identifier(identifier_type: str, value: str, rules: IdentityRules) -> str:
    """The identifier of a request as the id map holds it (as given, trimmed, if it does not normalize)."""
    return normalize_identifier(identifier_type, value, rules.default_phone_region) or value.strip()


def erasure_on(warehouse):
    """The erasure's steps on the warehouse's engine: the one place erasure differs by engine."""
    engine = warehouse.engine()
    if engine.name == "spark":
        from cdp_assets.privacy.spark import SparkErasure

        return SparkErasure(engine)
    return DuckDBErasure(warehouse)


class DuckDBErasure:
    """Erasure on the DuckDB file: rows deleted by SQL, then the file rewritten (a DELETE leaves the old
    values in its blocks)."""

    def __init__(self, warehouse):
        self.warehouse = warehouse

    def lock(self):
        return self.warehouse.lock()

    def erase(self, root, request: dict, rules, salt: str, destinations) -> dict:
        with self.warehouse.connect() as con:
            return erase(con, root, request, rules, salt, destinations)

    def compact(self, log) -> None:
        rewrite = rewrite_database(self.warehouse.file(), self.warehouse.settings())
        log(f"warehouse rewritten without the erased rows' blocks: {rewrite['bytes_before']:,} -> "
            f"{rewrite['bytes_after']:,} bytes in {rewrite['seconds']} s")


def person_identifiers(con, identifier_type: str, value: str, rules: IdentityRules) -> tuple[set[str], set[tuple[str, str]]]:
    """(person ids, normalized identifiers) of whoever holds the identifier; the identifier alone if nobody."""
    normalized = normalized_identifier(identifier_type, value, rules)
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
    con.executemany("INSERT INTO cdp.suppressions VALUES (?, ?, ?) ON CONFLICT DO NOTHING", suppression_rows(identifiers, salt, request))
    spellings = _spellings(con, identifiers)
    notify = _destinations_holding(con, persons, destinations)
    erased = KnownValues(spellings | persons)
    rows_deleted, values_scrubbed = _erase_rows(con, persons, erased)
    database = Path(con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()[0])
    removed, rewritten, scrubbed = erase_files(data_dir, erased, lambda path: _is_warehouse(path, database))
    if scrubbed:
        values_scrubbed["files"] = scrubbed
    rows_deleted |= _erase_online_store(data_dir, persons, identifiers, erased, [identifier_hash(salt, v) for _, v in identifiers])
    notices = _deletion_notices(con, persons, notify)
    con.execute(AUDIT_DDL)
    audit = audit_row(request, persons, identifiers, rows_deleted, removed, rewritten, notices, values_scrubbed)
    con.execute("ALTER TABLE cdp.privacy_audit ADD COLUMN IF NOT EXISTS values_scrubbed JSON")
    con.execute("INSERT INTO cdp.privacy_audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [*list(audit.values())[:6], json.dumps(rows_deleted), removed, rewritten, notices, json.dumps(values_scrubbed)])
    con.execute("CHECKPOINT")
    return audit


def suppression_rows(identifiers: set[tuple[str, str]], salt: str, request: dict) -> list[tuple[str, str, datetime]]:
    """The request's rows of cdp.suppressions: each identifier hashed, when it was asked for."""
    return [(t, identifier_hash(salt, v), datetime.fromisoformat(request["requested_at"])) for t, v in sorted(identifiers)]


def erase_files(data_dir: Path, erased: KnownValues, is_warehouse) -> tuple[int, int, int]:
    """(records removed, files rewritten, strings scrubbed) over every file under the data directory but
    the skipped ones and the warehouse's own (`is_warehouse(path)`: the engine erases those)."""
    removed = rewritten = scrubbed = 0
    for path in sorted(data_dir.rglob("*")):
        if not path.is_file() or path.relative_to(data_dir).parts[0] in SKIPPED or is_warehouse(path):
            continue
        records, strings = erase_from_file(path, erased)
        removed, scrubbed, rewritten = removed + records, scrubbed + strings, rewritten + bool(records or strings)
    return removed, rewritten, scrubbed


def audit_row(request: dict, persons: set[str], identifiers: set[tuple[str, str]], rows_deleted: dict[str, int],
              removed: int, rewritten: int, notices: int, values_scrubbed: dict[str, int]) -> dict:
    """The erasure's report and cdp.privacy_audit row: counts only, no personal data."""
    return {
        "request_id": request["request_id"], "action": "erase", "requested_at": request["requested_at"],
        "done_at": _now().isoformat(), "persons": len(persons), "identifiers": len(identifiers),
        "rows_deleted": rows_deleted, "file_records_removed": removed, "files_rewritten": rewritten,
        "notices_enqueued": notices, "values_scrubbed": values_scrubbed,
    }


def _erase_online_store(data_dir: Path, persons: set[str], identifiers: set[tuple[str, str]], erased: KnownValues,
                        hashes: list[str]) -> dict[str, int]:
    """The person out of the online store (SQLite files under the data directory, or Redis): their entries, live
    messages carrying their identifiers, and anything mentioning them (a mention as long as the files' scrub
    looks for, or any of their values as a whole JSON string); the next refresh loads the store again. An
    unreachable store fails the erasure: it must not report done while the store still serves them."""
    from cdp_resources.online_store import open_store

    store = open_store(data_dir)
    try:
        needles = [*erased.mentioned, *(f'"{value}"' for value in erased.values)]
        store.suppress(hashes)  # a running collector keeps their messages out of the live log from now on
        counts = store.erase(persons, identifiers, needles)
    finally:
        store.close()
    return {f"online_store.{part}": count for part, count in counts.items()}


def _is_warehouse(path: Path, database: Path) -> bool:
    """The warehouse file and its companions (WAL, lock, spill directory): handled by `rewrite_database`."""
    return (path.parent == database.parent and path.name.startswith(database.name)) or f"{database.name}.tmp" in path.parts


def _spellings(con, identifiers: set[tuple[str, str]]) -> set[str]:
    """Every spelling of the identifiers seen in the data (raw values before normalization), lower-cased."""
    values = {v for _, v in identifiers}
    if table_exists(con, "core.identifier_lookup"):
        values |= {r[0] for r in con.execute(
            "SELECT raw_value FROM core.identifier_lookup WHERE list_contains(?, identifier_type || ':' || identifier_value)",
            [sorted(f"{t}:{v}" for t, v in identifiers)],
        ).fetchall() if r[0]}
    return lowered_spellings(values)


def lowered_spellings(values) -> set[str]:
    return {v.strip().lower() for v in values if v.strip()}


def erasure_columns(columns: list[tuple[str, str]]) -> tuple[list[str], list[tuple[str, str]]]:
    """Where an erasure looks in a table, of its (column, type) pairs (types as DuckDB names them; Spark's
    through `segments.spark.duckdb_type_name`): the person-id columns (a row holding one of their ids is
    theirs), and the text columns (text, JSON, lists and nested values, with their types) whose value or
    quoted strings are matched against their spellings, and whose mentions of them are scrubbed. The one
    rule both engines apply."""
    persons = [column for column, _ in columns if PERSON_ID_COLUMN.match(column)]
    texts = [(column, kind) for column, kind in columns
             if kind in ("VARCHAR", "JSON") or kind.endswith("[]") or kind.startswith(("STRUCT", "MAP", "UNION"))]
    return persons, texts


def _erase_rows(con, persons: set[str], erased: KnownValues) -> tuple[dict[str, int], dict[str, int]]:
    """Every base table: delete the person's rows (a person-id column holds one of their ids, or a value,
    or a quoted string inside JSON text, is one of their spellings), then scrub mentions of their
    identifiers from the other rows' strings. The deletes are one SQL statement per table; the scrub
    reads only rows whose text contains a spelling."""
    deleted, scrubbed = {}, {}
    tables = con.execute(
        """SELECT table_schema, table_name FROM information_schema.tables
           WHERE table_type = 'BASE TABLE' AND table_catalog = current_database()
             AND table_schema NOT IN ('information_schema', 'pg_catalog') ORDER BY 1, 2"""
    ).fetchall()
    known = sorted(erased.values)
    for schema, name in tables:
        if f"{schema}.{name}" in KEEP:
            continue
        table = f'"{schema}"."{name}"'
        columns = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
            [schema, name],
        ).fetchall()
        person_columns, texts = erasure_columns(columns)
        conditions, params = [], []
        for column in person_columns if persons else ():
            conditions.append(f'list_contains(?, "{column}")')
            params.append(sorted(persons))
        for column, _ in texts:
            text = f'"{column}"::VARCHAR'
            conditions.append(f"list_contains(?, lower(trim({text})))")
            conditions.append(
                f"list_has_any(list_transform(regexp_extract_all({text}, '\"([^\"]*)\"', 1), x -> lower(trim(x))), ?)"
            )
            params += [known, known]
        if conditions:
            count = con.execute(f"DELETE FROM {table} WHERE {' OR '.join(conditions)}", params).fetchone()[0]
            if count:
                deleted[f"{schema}.{name}"] = count
        if texts and erased.mentioned:
            values, rows = _scrub_mentions(con, table, texts, erased)
            if rows:
                deleted[f"{schema}.{name}"] = deleted.get(f"{schema}.{name}", 0) + rows
            if values:
                scrubbed[f"{schema}.{name}"] = values
    return deleted, scrubbed


def _delete_rows(con, persons: set[str], spellings: set[str]) -> dict[str, int]:
    """`_erase_rows` for callers that hold the spellings as plain strings (the identity tests erase a
    person this way); the rows deleted per table."""
    return _erase_rows(con, persons, KnownValues(set(spellings) | set(persons)))[0]


def _scrub_mentions(con, table: str, texts: list[tuple[str, str]], erased: KnownValues) -> tuple[int, int]:
    """(values scrubbed, rows deleted) in `table`: each text value mentioning an identifier is rewritten
    with `[erased]`; a row whose mention sits in a STRUCT, MAP or UNION (which cannot be rewritten
    value by value) is deleted."""
    found = " OR ".join(f'list_bool_or(list_transform($needles, s -> contains(lower("{c}"::VARCHAR), s)))' for c, _ in texts)
    names = ", ".join(f'"{c}"' for c, _ in texts)
    rows = con.execute(f"SELECT rowid, {names} FROM {table} WHERE {found}", {"needles": erased.mentioned}).fetchall()
    scrubbed = deleted = 0
    for rowid, *values in rows:
        updates = scrubbed_values(texts, values, erased)
        if updates is None:
            con.execute(f"DELETE FROM {table} WHERE rowid = ?", [rowid])
            deleted += 1
        elif updates:
            assignments = ", ".join(f'"{column}" = ?' for column in updates)
            con.execute(f"UPDATE {table} SET {assignments} WHERE rowid = ?", [*updates.values(), rowid])
            scrubbed += len(updates)
    return scrubbed, deleted


def scrubbed_values(texts: list[tuple[str, str]], values: list, erased: KnownValues) -> dict | None:
    """{column: value without mentions} of one row's text columns (`erasure_columns`) that mention an
    identifier; None when a mention sits in a STRUCT, MAP or UNION (which cannot be rewritten value by
    value: the row goes)."""
    updates = {}
    for (column, kind), value in zip(texts, values):
        if value is None:
            continue
        if kind in ("VARCHAR", "JSON"):
            clean = erased.scrub(value)
        elif kind.endswith("[]") and all(v is None or isinstance(v, str) for v in value):
            clean = [None if v is None else erased.scrub(v) for v in value]
        elif erased.mentions(str(value)):
            return None
        else:
            clean = value
        if clean != value:
            updates[column] = clean
    return updates


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
    rows = deletion_notice_rows(persons, destinations)
    con.executemany("INSERT INTO cdp.deliveries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", rows)
    return len(rows)


def deletion_notice_rows(persons: set[str], destinations: list[str]) -> list[tuple]:
    """The cdp.deliveries rows of `_deletion_notices`, in the ledger's column order."""
    return [
        (d, hashlib.sha256(f"{d}|person_deleted|{p}".encode()).hexdigest(), p, "person_deleted",
         json.dumps({"type": "person_deleted", "person_id": p}), _now(), "pending", 0, None, _now(), None)
        for d in destinations for p in sorted(persons)
    ]


# The access export: what is held about a person, per table. The rules are written once (`person_document`);
# what they read goes through the engine's reads (`person_reads_on`): `DuckDBPersonReads` here, `SparkPersonReads`
# in cdp_assets/privacy/spark.py.
EXPORTED = {
    "profile": "cdp.profiles", "profile_history": "cdp.profile_history", "trait_values": "core.person_trait_values",
    "segments": "cdp.segment_membership", "segment_changes": "cdp.segment_changes", "events": "core.person_events",
    "purchases": "core.person_purchases", "relationships": "cdp.relationships", "deliveries": "cdp.deliveries",
}
# The pipeline's bookkeeping (which run wrote a row, its change digest): not data about the person, and it differs
# between engines and between rebuilds of the same inputs, so the export leaves it out.
BOOKKEEPING = frozenset({"_batch_id", "_removed_batch_id", "row_hash"})


class PersonReads(Protocol):
    """What the access export reads of the warehouse; rows as DuckDB gives them (naive UTC times, JSON as text)."""

    def person_identifiers(self, identifier_type: str, value: str, rules: IdentityRules) -> tuple[set[str], set[tuple[str, str]]]:
        """(person ids, normalized identifiers) of whoever holds the identifier (`person_identifiers`)."""

    def rows(self, table: str, persons: set[str]) -> list[dict]:
        """Every column of the table's rows whose person_id is one of `persons`; none if it does not exist."""

    def spellings(self, identifiers: set[tuple[str, str]]) -> set[str]:
        """Every spelling of the identifiers seen, lower-cased (`_spellings`)."""

    def quarantined(self) -> list[dict]:
        """source, record, reasons and received_at of every row of cdp.quarantine; none if it does not exist."""


@contextmanager
def person_reads_on(warehouse) -> Iterator[PersonReads]:
    """The export's reads on the warehouse's engine: the one place the export differs by engine."""
    engine = warehouse.engine()
    if engine.name == "spark":
        from cdp_assets.privacy.spark import SparkPersonReads

        yield SparkPersonReads(engine)
        return
    with warehouse.connect() as con:
        yield DuckDBPersonReads(con)


def export_person(con, identifier_type: str, value: str, rules: IdentityRules) -> dict:
    """`person_document` from a DuckDB connection."""
    return person_document(DuckDBPersonReads(con), identifier_type, value, rules)


def person_document(reads: PersonReads, identifier_type: str, value: str, rules: IdentityRules) -> dict:
    """Everything held about a person, as one JSON-ready document (the access request). Rows come in the order
    of their values, column by column (nulls last): the engines return them in no set order."""
    persons, identifiers = reads.person_identifiers(identifier_type, value, rules)
    document = {"request": {"type": identifier_type, "value": value}, "person_ids": sorted(persons),
                "identifiers": [{"type": t, "value": v} for t, v in sorted(identifiers)]}
    for key, table in EXPORTED.items():
        document[key] = _in_order([{c: v for c, v in row.items() if c not in BOOKKEEPING}
                                   for row in (reads.rows(table, persons) if persons else [])])
    matcher = KnownValues(reads.spellings(identifiers))
    document["quarantined_records"] = _in_order([row for row in reads.quarantined() if matcher.matches_record(row["record"])])
    return document


def _in_order(rows: list[dict]) -> list[dict]:
    """Rows sorted by their values, column by column, nulls last (lists and objects by their JSON text)."""
    def key(row: dict) -> tuple:
        return tuple((v is None, json.dumps(v, sort_keys=True, default=str) if isinstance(v, (list, dict)) else v)
                     for v in row.values())
    return sorted(rows, key=key)


class DuckDBPersonReads:
    """The export's reads in the DuckDB file."""

    def __init__(self, con):
        self.con = con

    def person_identifiers(self, identifier_type: str, value: str, rules: IdentityRules):
        return person_identifiers(self.con, identifier_type, value, rules)

    def rows(self, table: str, persons: set[str]) -> list[dict]:
        if not table_exists(self.con, table):
            return []
        return _rows(self.con, f"SELECT * FROM {table} WHERE list_contains(?, person_id)", [sorted(persons)])

    def spellings(self, identifiers: set[tuple[str, str]]) -> set[str]:
        return _spellings(self.con, identifiers)

    def quarantined(self) -> list[dict]:
        if not table_exists(self.con, "cdp.quarantine"):
            return []
        return _rows(self.con, "SELECT source, record, reasons, received_at FROM cdp.quarantine", [])


def _rows(con, sql: str, params: list) -> list[dict]:
    cursor = con.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]
