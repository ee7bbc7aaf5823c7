"""The embedded online store: two SQLite files under the data directory (`online/`), in WAL mode.

WAL lets readers (the Profile API) read the last committed state while a writer writes, so a refresh never
makes a request wait. The refresh writes `store.sqlite` in one transaction; the collector appends to
`live.sqlite`, a file of its own, so a long refresh transaction never delays a message becoming visible.
`secure_delete` zeroes deleted content, and an erasure ends with VACUUM and a truncating checkpoint, so no
byte of an erased person stays in either file or its WAL.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cdp_resources.online_store.base import LiveEvent, OnlineStore, PersonRecord, StoreWriter, dump_json, load_json

# Documents and events are rowid tables found through an index: WITHOUT ROWID suits small rows only (a row over
# a twentieth of a page spills into overflow pages, which doubled the file).
SCHEMA = """
CREATE TABLE IF NOT EXISTS persons (person_id TEXT PRIMARY KEY, document TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identifiers (
    type TEXT, value TEXT, person_id TEXT NOT NULL, source_id TEXT, created_at TEXT,
    PRIMARY KEY (type, value)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS identifiers_by_person ON identifiers (person_id);
CREATE TABLE IF NOT EXISTS events (person_id TEXT, ts INTEGER, event_id TEXT, item TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS events_by_person ON events (person_id, ts, event_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
"""
LIVE_SCHEMA = """
CREATE TABLE IF NOT EXISTS live.live_events (
    seq INTEGER PRIMARY KEY, message_id TEXT NOT NULL, ts INTEGER, received_at INTEGER, item TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS live.live_by_message ON live_events (message_id);
CREATE INDEX IF NOT EXISTS live.live_by_received ON live_events (received_at);
CREATE TABLE IF NOT EXISTS live.live_identifiers (
    type TEXT, value TEXT, seq INTEGER, PRIMARY KEY (type, value, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS live.live_identifiers_by_seq ON live_identifiers (seq);
CREATE TABLE IF NOT EXISTS live.suppressed (hash TEXT PRIMARY KEY) WITHOUT ROWID;
"""


class SqliteStore(OnlineStore):
    kind = "sqlite"

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "store.sqlite"
        self.live_path = self.folder / "live.sqlite"
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"sqlite {self.path}"

    # One connection per thread: sqlite3 connections must not be shared across threads mid-statement.
    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints; the warehouse is the record
            con.execute("PRAGMA secure_delete=ON")
            con.execute("ATTACH DATABASE ? AS live", [str(self.live_path)])
            con.execute("PRAGMA live.journal_mode=WAL")
            con.execute("PRAGMA live.synchronous=NORMAL")
            con.execute("PRAGMA live.secure_delete=ON")
            con.executescript(SCHEMA + LIVE_SCHEMA)
            self._local.con = con
            with self._lock:
                self._connections.append(con)
        return con

    # --- reads ---
    def person_of(self, identifier_type: str, value: str) -> str | None:
        row = self._con().execute(
            "SELECT person_id FROM identifiers WHERE type = ? AND value = ?", [identifier_type, value]).fetchone()
        return row[0] if row else None

    def person(self, person_id: str) -> dict | None:
        row = self._con().execute("SELECT document FROM persons WHERE person_id = ?", [person_id]).fetchone()
        return load_json(row[0]) if row else None

    def identifiers(self, person_id: str) -> list[dict]:
        rows = self._con().execute(
            "SELECT type, value, source_id, created_at FROM identifiers WHERE person_id = ? ORDER BY type, value",
            [person_id]).fetchall()
        return [{"type": t, "id": v, "source_id": s, "created_at": c} for t, v, s, c in rows]

    def events(self, person_id: str, before: tuple[int, str] | None, limit: int) -> list[tuple[int, str, dict]]:
        if before is None:
            rows = self._con().execute(
                "SELECT ts, event_id, item FROM events WHERE person_id = ? ORDER BY ts DESC, event_id DESC LIMIT ?",
                [person_id, limit]).fetchall()
        else:
            rows = self._con().execute(
                "SELECT ts, event_id, item FROM events WHERE person_id = ? AND (ts, event_id) < (?, ?) "
                "ORDER BY ts DESC, event_id DESC LIMIT ?", [person_id, before[0], before[1], limit]).fetchall()
        return [(ts, event_id, load_json(item)) for ts, event_id, item in rows]

    def live_events(self, identifiers: list[tuple[str, str]], before: tuple[int, str] | None, limit: int) -> list[tuple[int, str, dict]]:
        if not identifiers:
            return []
        pairs = " OR ".join("(i.type = ? AND i.value = ?)" for _ in identifiers)
        params: list = [x for pair in identifiers for x in pair]
        where = ""
        if before is not None:
            where = "AND (e.ts, e.message_id) < (?, ?)"
            params += list(before)
        rows = self._con().execute(
            f"""SELECT DISTINCT e.ts, e.message_id, e.item FROM live.live_identifiers i JOIN live.live_events e USING (seq)
                WHERE ({pairs}) {where} ORDER BY e.ts DESC, e.message_id DESC LIMIT ?""", [*params, limit * 2]).fetchall()
        out, seen = [], set()
        for ts, message_id, item in rows:  # a message landed twice (a client's retry) shows once
            if message_id not in seen:
                seen.add(message_id)
                out.append((ts, message_id, load_json(item)))
        return out[:limit]

    # --- writes ---
    @contextmanager
    def writer(self, full: bool = False) -> Iterator[StoreWriter]:
        con = self._con()
        con.execute("BEGIN IMMEDIATE")
        try:
            if full:
                for table in ("persons", "identifiers", "events", "meta"):
                    con.execute(f"DELETE FROM {table}")
            yield _SqliteWriter(con, empty=full)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def meta(self) -> dict[str, str]:
        return dict(self._con().execute("SELECT key, value FROM meta").fetchall())

    def persons_count(self) -> int:
        return self._con().execute("SELECT count(*) FROM persons").fetchone()[0]

    def append_live(self, events: list[LiveEvent]) -> None:
        if not events:
            return
        con = self._con()
        con.execute("BEGIN IMMEDIATE")
        try:
            for event in events:
                seq = con.execute(
                    "INSERT INTO live.live_events (message_id, ts, received_at, item) VALUES (?, ?, ?, ?)",
                    [event.message_id, event.ts, event.received_at, dump_json(event.item)]).lastrowid
                con.executemany("INSERT OR IGNORE INTO live.live_identifiers VALUES (?, ?, ?)",
                                [(t, v, seq) for t, v in event.identifiers])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def live_message_ids(self) -> list[str]:
        return [r[0] for r in self._con().execute("SELECT DISTINCT message_id FROM live.live_events").fetchall()]

    def drop_live(self, message_ids: Iterable[str], received_before: int | None = None) -> int:
        con = self._con()
        con.execute("BEGIN IMMEDIATE")
        try:
            con.execute("CREATE TEMP TABLE IF NOT EXISTS _drop (message_id TEXT PRIMARY KEY) WITHOUT ROWID")
            con.execute("DELETE FROM _drop")
            con.executemany("INSERT OR IGNORE INTO _drop VALUES (?)", [(m,) for m in message_ids])
            condition = "message_id IN (SELECT message_id FROM _drop)"
            params: list = []
            if received_before is not None:
                condition += " OR received_at < ?"
                params.append(received_before)
            con.execute(f"DELETE FROM live.live_identifiers WHERE seq IN (SELECT seq FROM live.live_events WHERE {condition})", params)
            dropped = con.execute(f"DELETE FROM live.live_events WHERE {condition}", params).rowcount
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return dropped

    # --- erasure ---
    def erase(self, person_ids: set[str], identifiers: set[tuple[str, str]], needles: list[str]) -> dict[str, int]:
        con = self._con()
        counts: dict[str, int] = {}
        needles = sorted({n.lower() for n in needles if n})
        con.execute("BEGIN IMMEDIATE")
        try:
            ids = sorted(person_ids)
            for table in ("persons", "identifiers", "events"):
                counts[table] = sum(con.execute(f"DELETE FROM {table} WHERE person_id = ?", [p]).rowcount for p in ids)
            for pair in sorted(identifiers):
                counts["identifiers"] += con.execute("DELETE FROM identifiers WHERE type = ? AND value = ?", list(pair)).rowcount
                con.execute("DELETE FROM live.live_identifiers WHERE type = ? AND value = ?", list(pair))
            # Anyone else's row that mentions them (a relationship, an event property, a live message).
            for table, column in (("persons", "document"), ("events", "item")):
                counts[table] += _delete_mentions(con, table, column, needles)
            counts["live_events"] = con.execute(
                "DELETE FROM live.live_events WHERE seq NOT IN (SELECT seq FROM live.live_identifiers)").rowcount
            counts["live_events"] += _delete_mentions(con, "live.live_events", "item", needles)
            con.execute("DELETE FROM live.live_identifiers WHERE seq NOT IN (SELECT seq FROM live.live_events)")
            # The next refresh loads the store again, whole: rows of other persons deleted for a mention come
            # back from the warehouse, scrubbed there.
            con.execute("DELETE FROM meta")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        for schema in ("main", "live"):
            con.execute(f"VACUUM {schema}")
            con.execute(f"PRAGMA {schema}.wal_checkpoint(TRUNCATE)")
        return {k: v for k, v in counts.items() if v}

    def suppress(self, hashes: Iterable[str]) -> None:
        self._con().executemany("INSERT OR IGNORE INTO live.suppressed VALUES (?)", [(h,) for h in hashes])

    def suppressed(self) -> set[str]:
        return {r[0] for r in self._con().execute("SELECT hash FROM live.suppressed").fetchall()}

    def close(self) -> None:
        with self._lock:
            for con in self._connections:
                try:
                    con.close()
                except sqlite3.Error:
                    pass
            self._connections.clear()
        self._local = threading.local()


def _delete_mentions(con: sqlite3.Connection, table: str, column: str, needles: list[str]) -> int:
    if not needles:
        return 0
    where = " OR ".join([f"instr(lower({column}), ?) > 0"] * len(needles))
    return con.execute(f"DELETE FROM {table} WHERE {where}", needles).rowcount




class _SqliteWriter(StoreWriter):
    def __init__(self, con: sqlite3.Connection, empty: bool = False):
        self.con = con
        self.empty = empty  # a full load: nothing to replace

    def put(self, persons: Iterable[PersonRecord]) -> None:
        persons = list(persons)
        if not self.empty:
            self.delete([p.person_id for p in persons])
        self.con.executemany("INSERT INTO persons VALUES (?, ?)",
                             [(p.person_id, dump_json(p.document)) for p in persons])
        self.con.executemany(
            "INSERT OR REPLACE INTO identifiers VALUES (?, ?, ?, ?, ?)",
            [(i["type"], i["id"], p.person_id, i.get("source_id"), i.get("created_at")) for p in persons for i in p.identifiers])
        self.con.executemany(
            "INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?)",
            [(p.person_id, ts, event_id, dump_json(item)) for p in persons for ts, event_id, item in p.events])

    def delete(self, person_ids: Iterable[str]) -> None:
        rows = [(p,) for p in person_ids]
        for table in ("persons", "identifiers", "events"):
            self.con.executemany(f"DELETE FROM {table} WHERE person_id = ?", rows)

    def set_meta(self, values: dict[str, str]) -> None:
        self.con.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(values.items()))
