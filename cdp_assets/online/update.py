"""Bringing the online store up to date with the warehouse, reading only what changed.

Like every incremental consumer, the store remembers where it read up to (the warehouse's last batch, and
the last segment change), in its own bookkeeping and in core.watermarks (consumer `online_store`, so the
change logs it reads are kept until it has read them). A refresh rewrites, whole, each person whose profile
row, records, identifiers or segment memberships changed since then, and forgets persons who no longer
exist. It loads everything when the store is empty, was written under another configuration (or another
store format), was erased from, or holds another number of persons than the warehouse afterwards.
Messages of the recent-event log that the warehouse now holds leave the log (they are in the person's events).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import duckdb

from cdp_resources.online_store import FORMAT, OnlineStore, PersonRecord
from cdp_resources.online_store.base import load_json
from cdp_resources.online_store.live import micros
from cdp_resources.settings import config_dir

SQL = Path(__file__).parent / "sql"
CONSUMER = "online_store"
CHUNK_PERSONS = 20_000
LIVE_KEEP = timedelta(hours=24)  # a message validation never accepted (quarantined) leaves the log after this
EVENTS_PER_PERSON_ENV = "CDP_ONLINE_EVENTS_PER_PERSON"
HIDDEN = {"person_id", "row_hash", "_batch_id", "person_created_at"}  # bookkeeping columns, not traits


@dataclass
class StoreUpdate:
    mode: str  # "full" | "incremental"
    persons_written: int
    persons_deleted: int
    live_dropped: int
    persons_in_store: int
    reason: str


def events_per_person() -> int:
    return int(os.environ.get(EVENTS_PER_PERSON_ENV, "100"))


def sql(name: str) -> str:
    text = "\n".join(line for line in (SQL / f"{name}.sql").read_text().splitlines() if not line.lstrip().startswith("--"))
    return text.strip().rstrip(";")


def config_digest() -> str:
    """What the store's content depends on besides the data: the configuration, the store's format and the
    number of events kept per person."""
    folder = config_dir()
    parts = [FORMAT, str(events_per_person())]
    for path in [folder / "identity.yaml", folder / "traits.yaml", folder / "sources.yaml",
                 *sorted((folder / "segments").glob("*.yaml"))]:
        parts.append(f"{path.name}:{path.read_text() if path.exists() else ''}")
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def update_store(con: duckdb.DuckDBPyConnection, store: OnlineStore, now: datetime | None = None, full: bool = False) -> StoreUpdate:
    """Apply the warehouse's changes since the store's watermark (or everything) to the store."""
    return apply_changes(DuckDBReads(con), store, now, full)


def update_store_in(engine, store: OnlineStore, now: datetime | None = None, full: bool = False) -> StoreUpdate:
    """`update_store` on the warehouse's engine (`WarehouseResource.engine()`): the one place the store's load
    differs by engine (which SQL reads the warehouse; what the store receives is the same)."""
    if engine.name == "spark":
        from cdp_assets.online.spark import SparkReads

        with engine.lock():  # the watermark below is read, then written
            return apply_changes(SparkReads(engine), store, now, full)
    with engine.connect() as con:
        return update_store(con, store, now, full)


class DuckDBReads:
    """The warehouse as the store's update reads it, on DuckDB: the statements of sql/*.sql on a connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con

    def prepare(self) -> None:
        from cdp_assets.segments.assets import CHANGES_DDL, MEMBERSHIP_DDL

        self.con.execute("CREATE SCHEMA IF NOT EXISTS cdp")
        self.con.execute(MEMBERSHIP_DDL)
        self.con.execute(CHANGES_DDL)

    def run(self, name: str, params: dict | None = None) -> None:
        """A statement that keeps its result (the scope, the chunk) for the next ones."""
        self.con.execute(sql(name), params)

    def fetchone(self, name: str, params: dict | None = None) -> tuple:
        return self.con.execute(sql(name), params).fetchone()

    def fetchall(self, name: str, params: dict | None = None) -> list[tuple]:
        return self.con.execute(sql(name), params).fetchall()

    def rows(self, name: str, params: dict | None = None) -> list[dict]:
        cursor = self.con.execute(sql(name), params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def persons(self) -> int:
        return self.con.execute("SELECT count(*) FROM core.persons").fetchone()[0]

    def advance_watermark(self, batch) -> None:
        self.con.execute("INSERT OR REPLACE INTO core.watermarks VALUES (?, ?)", [CONSUMER, batch])


def apply_changes(reads, store: OnlineStore, now: datetime | None = None, full: bool = False) -> StoreUpdate:
    """Apply the warehouse's changes since the store's watermark (or everything) to the store; `reads`: the
    warehouse (`DuckDBReads`, `online.spark.SparkReads`)."""
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    reads.prepare()
    batch, segments_at = reads.fetchone("watermark")
    meta, digest = store.meta(), config_digest()
    reason = ("asked" if full else "empty store" if not meta else
              "configuration or format changed" if meta.get("digest") != digest else "")
    if reason:
        reads.run("scope_all")
    else:
        reads.run("scope_changed", {"batch": int(meta["batch"]),
                                    "segments_at": datetime.fromisoformat(meta["segments_at"])})
    written, deleted = _apply(reads, store, full=bool(reason), now=now, meta={
        "batch": str(batch), "segments_at": (segments_at or datetime(1970, 1, 1)).isoformat(), "digest": digest,
        "format": FORMAT, "updated_at": now.isoformat()})
    persons = reads.persons()
    if not reason and store.persons_count() != persons:
        # Someone else changed the store, or a change escaped the logs: start again from everything.
        reads.run("scope_all")
        reason = f"store held {store.persons_count()} persons, the warehouse {persons}"
        written, deleted = _apply(reads, store, full=True, now=now, meta=store.meta())
    reads.advance_watermark(batch)
    dropped = _drop_ingested_live(reads, store, now)
    return StoreUpdate("full" if reason else "incremental", written, deleted, dropped, store.persons_count(),
                       reason or "changes since batch " + meta["batch"])


def _apply(reads, store: OnlineStore, full: bool, now: datetime, meta: dict) -> tuple[int, int]:
    written = 0
    with store.writer(full=full) as writer:
        if not full:
            gone = [r[0] for r in reads.fetchall("gone")]
            writer.delete(gone)
        else:
            gone = []
        offset = 0
        while True:
            reads.run("chunk", {"size": CHUNK_PERSONS, "offset": offset})
            records = person_records(reads)
            if not records:
                break
            writer.put(records)
            written += len(records)
            offset += CHUNK_PERSONS
        writer.set_meta(meta)
    return written, len(gone)


def person_records(reads) -> list[PersonRecord]:
    """The persons of `_online_chunk` as the store holds them."""
    from cdp_assets.profiles.computed import RFM_COLUMNS, load_computed_traits

    declared = load_computed_traits(config_dir() / "traits.yaml")
    computed = [*declared["computed_traits"], *(RFM_COLUMNS if declared["rfm"] else ())]
    people: dict[str, PersonRecord] = {}
    for row in reads.rows("profiles"):
        traits = {k: _plain(v) for k, v in row.items() if k not in HIDDEN}
        people[row["person_id"]] = PersonRecord(row["person_id"], {
            "person_id": row["person_id"], "created_at": _plain(row.get("person_created_at")), "traits": traits,
            "trait_sources": {}, "computed_traits": [c for c in computed if c in traits], "segments": [],
            "relationships": []}, [], [])
    for row in reads.rows("trait_values"):
        if (person := people.get(row["person_id"])) is not None:
            person.document["trait_sources"][row["trait"]] = {
                "value": row["value"], "source": row["source"], "observed_at": _plain(row["observed_at"])}
    for row in reads.rows("segments"):
        if (person := people.get(row["person_id"])) is not None:
            person.document["segments"].append({"segment": row["segment"], "entered_at": _plain(row["entered_at"])})
    for row in reads.rows("relationships"):
        if (person := people.get(row["person_id"])) is not None:
            person.document["relationships"].append({k: _plain(v) for k, v in row.items() if k != "person_id"})
    for row in reads.rows("identifiers"):
        if (person := people.get(row["person_id"])) is not None:
            person.identifiers.append({"type": row["identifier_type"], "id": row["identifier_value"],
                                       "source_id": row["source"], "created_at": _plain(row["first_seen_at"])})
    for row in reads.rows("events", {"per_person": events_per_person()}):
        if (person := people.get(row["person_id"])) is not None:
            person.events.append((row["ts"], row["event_id"], warehouse_event_item(row)))
    for person in people.values():
        person.document["segments"].sort(key=lambda s: s["segment"])
        person.document["relationships"].sort(key=lambda r: (r["kind"], r["related_value"]))
    return list(people.values())


def warehouse_event_item(row: dict) -> dict:
    """A cdp.events row (sql/events.sql) as the Profile API's `events` shows it (the same shape as a live
    message's)."""
    item = {
        "event": row["event_name"], "type": row["event_type"], "timestamp": row["occurred_iso"],
        "properties": _json(row["properties"]) or {}, "message_id": row["event_id"], "source_id": row["source"],
        "received_at": row["received_iso"],
        "context": _json(row["context"]) or {},
    }
    if row["event_type"] == "identify":
        item["traits"] = _json(row["traits"]) or {}
    return item


def _drop_ingested_live(reads, store: OnlineStore, now: datetime) -> int:
    ids = store.live_message_ids()
    ingested = [r[0] for r in reads.fetchall("ingested", {"ids": ids})] if ids else []
    return store.drop_live(ingested, received_before=micros(now - LIVE_KEEP))


def _json(text):
    if text is None or isinstance(text, (dict, list)):
        return text
    try:
        return load_json(text)
    except ValueError:
        return text


def _plain(value):
    """A warehouse value as JSON holds it: times in ISO-8601, decimals as numbers."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
