"""The delivery ledger `cdp.deliveries` (an outbox) and the loop that empties it, in order per person.

1. `enqueue`: in one short transaction, every segment entry/exit and subscribed event not yet in the
   ledger becomes a pending item. Its idempotency key is derived from what it is (sha256 of destination,
   segment, person, change, time — or destination and event id), so re-running enqueues nothing twice.
   Items are delivered in the order the ledger learned of them (`enqueued_at`), by time within one
   enqueue (`ordered_at`, then key): a person's items keep that order.
2. `deliver`: without holding the warehouse, items are posted in that order, in batches. An item waits
   while an earlier item of the same person is undelivered (failed in this run, or dead), so a person's
   changes never overtake each other. Each batch's outcome is recorded in its own short transaction.
3. A batch's key (the item's key, or sha256 of the batch's item keys) is recorded in `cdp.delivery_batches`
   *before* it is posted and the batch is re-sent as it was on every later attempt, so a receiver that
   deduplicates by `Idempotency-Key`/`webhook-id` sees one key for one payload even when a timeout hid that
   it arrived. (A side table, not ledger columns: `cdp.deliveries` keeps the shape the privacy stage
   writes deletion notices into.)
4. Statuses: pending → sent, or failed (tried, will be retried next run) → sent | dead after
   `max_attempts` runs (or at once when the destination refuses the payload). `replay_dead_letters`
   makes dead items pending again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import requests

from cdp_assets.activation.config import Destination
from cdp_resources.warehouse import quote_ident, quote_literal
from cdp_resources.destinations import HttpDelivery, PostResult
from cdp_resources.warehouse import file_lock, table_exists

LEDGER_DDL = """CREATE TABLE IF NOT EXISTS cdp.deliveries (
    destination VARCHAR, idempotency_key VARCHAR, person_id VARCHAR, item_kind VARCHAR, payload VARCHAR,
    ordered_at TIMESTAMP, status VARCHAR, attempts INTEGER, last_error VARCHAR,
    enqueued_at TIMESTAMP, sent_at TIMESTAMP, PRIMARY KEY (destination, idempotency_key))"""
# Which open items were posted together, under which key. No personal data: keys are hashes.
BATCHES_DDL = """CREATE TABLE IF NOT EXISTS cdp.delivery_batches (
    destination VARCHAR, idempotency_key VARCHAR, batch_key VARCHAR, PRIMARY KEY (destination, idempotency_key))"""
DELIVERY_ORDER = "enqueued_at, ordered_at, idempotency_key"
IDENTIFIER_COLUMNS = ("email", "phone")
OPEN = ("pending", "failed")  # statuses that are still to be delivered
# Batches failing in a row after which the destination is taken to be down for this run: the rest waits
# for the next run without spending its attempts.
STOP_AFTER_FAILED_BATCHES = 3


@dataclass
class DeliveryReport:
    enqueued: int = 0
    sent: int = 0
    retried: int = 0  # HTTP requests repeated within this run
    failed: int = 0  # items whose batch failed this run (to be retried, or dead)
    dead_lettered: int = 0
    waiting: int = 0  # items held behind an undelivered earlier item of their person
    deferred: int = 0  # items not tried because the run stopped early (destination down or throttling)
    open_total: int = 0  # after the run: pending or failed items of this destination
    dead_total: int = 0  # after the run: dead items of this destination
    stopped: str = ""
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Item:
    key: str
    person_id: str
    payload: str
    batch_key: str | None


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _traits(destination: Destination) -> str:
    """json_object(...) of the mapped profile columns, identifiers hashed where asked."""
    parts = []
    for name, column in destination.fields.items():
        value = f"p.{quote_ident(column)}"
        if destination.hash_identifiers and column in IDENTIFIER_COLUMNS:
            value = f"sha256(lower(trim({value}::VARCHAR)))"
        parts += [quote_literal(name), value]
    return f"json_object({', '.join(parts)})" if parts else "json_object()"


def ensure_ledger(con) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS cdp")
    con.execute(LEDGER_DDL)
    con.execute(BATCHES_DDL)
    # Batches of items that were delivered, or deleted by an erasure, are of no more use.
    con.execute(
        f"""DELETE FROM cdp.delivery_batches b WHERE NOT EXISTS (
                SELECT 1 FROM cdp.deliveries d WHERE d.destination = b.destination
                AND d.idempotency_key = b.idempotency_key AND d.status IN {OPEN + ('dead',)})"""
    )


def enqueue(con, destination: Destination) -> int:
    """New segment changes and events of this destination into the ledger; how many were added."""
    ensure_ledger(con)
    profiles = "LEFT JOIN cdp.profiles p USING (person_id)" if table_exists(con, "cdp.profiles") else ""
    traits = _traits(destination) if profiles else "json_object()"
    name = quote_literal(destination.name)
    sources, params = [], {"now": _now()}
    if destination.segments and table_exists(con, "cdp.segment_changes"):
        sources.append(
            f"""SELECT sha256(concat_ws('|', {name}, c.segment, c.person_id, c.change, c.changed_at::VARCHAR)) AS key,
                       c.person_id, 'segment_change' AS item_kind,
                       json_object('type', 'segment_change', 'segment', c.segment, 'change', c.change,
                                   'person_id', c.person_id, 'changed_at', c.changed_at,
                                   'traits', {traits})::VARCHAR AS payload,
                       c.changed_at AS ordered_at
                FROM cdp.segment_changes c {profiles}
                WHERE list_contains($segments, c.segment)"""
        )
        params["segments"] = list(destination.segments)
    if destination.events and table_exists(con, "core.person_events"):
        sources.append(
            f"""SELECT sha256(concat_ws('|', {name}, e.event_id)) AS key, e.person_id, 'event' AS item_kind,
                       json_object('type', 'event', 'event', e.event_name, 'event_id', e.event_id,
                                   'person_id', e.person_id, 'occurred_at', e.occurred_at,
                                   'properties', e.properties, 'traits', {traits})::VARCHAR AS payload,
                       e.occurred_at AS ordered_at
                FROM core.person_events e {profiles}
                WHERE list_contains($events, e.event_name)"""
        )
        params["events"] = list(destination.events)
    if not sources:
        return 0
    con.execute("BEGIN")
    try:
        before = con.execute("SELECT count(*) FROM cdp.deliveries WHERE destination = $1", [destination.name]).fetchone()[0]
        con.execute(
            f"""INSERT INTO cdp.deliveries (destination, idempotency_key, person_id, item_kind, payload,
                                            ordered_at, status, attempts, enqueued_at)
                SELECT {name}, key, person_id, item_kind, payload, ordered_at, 'pending', 0, $now
                FROM ({' UNION ALL '.join(sources)}) new
                WHERE key NOT IN (SELECT idempotency_key FROM cdp.deliveries WHERE destination = {name})
                ON CONFLICT DO NOTHING""",
            params,
        )
        added = con.execute("SELECT count(*) FROM cdp.deliveries WHERE destination = $1", [destination.name]).fetchone()[0] - before
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return added


@contextmanager
def destination_lock(path: Path | None, timeout_s: float = 1800.0) -> Iterator[None]:
    """One delivery run per destination at a time, across processes: two runs reading the same pending
    items would both send them. Not the warehouse lock: this one is held during HTTP calls."""
    if path is None:
        yield
        return
    with file_lock(path, timeout_s, "another delivery run"):
        yield


def deliver(
    connect: Callable,
    destination: Destination,
    client: HttpDelivery,
    log: Callable[[str], None] = lambda message: None,
    lock_path: Path | None = None,
) -> DeliveryReport:
    """Enqueue and post the open items of `destination`; `connect()` opens a short warehouse connection."""
    report = DeliveryReport()
    with destination_lock(lock_path):
        with connect() as con:
            report.enqueued = enqueue(con, destination)
            pending = [Item(*row) for row in con.execute(
                f"""SELECT d.idempotency_key, d.person_id, d.payload, b.batch_key
                    FROM cdp.deliveries d LEFT JOIN cdp.delivery_batches b USING (destination, idempotency_key)
                    WHERE d.destination = ? AND d.status IN {OPEN} ORDER BY {DELIVERY_ORDER}""",
                [destination.name],
            ).fetchall()]
            held = {r[0] for r in con.execute(
                "SELECT DISTINCT person_id FROM cdp.deliveries WHERE destination = ? AND status = 'dead'",
                [destination.name],
            ).fetchall()}
        log(f"{destination.name}: {report.enqueued} new, {len(pending)} to deliver")
        tried = failed_in_a_row = 0
        with requests.Session() as session:
            for batch in _batches(pending, held, destination.batch_size, report):
                result = _send(connect, destination, client, session, batch, report)
                tried += len(batch)
                if result.ok:
                    failed_in_a_row = 0
                    continue
                held.update(item.person_id for item in batch)
                failed_in_a_row += 1
                if result.stop or failed_in_a_row >= STOP_AFTER_FAILED_BATCHES:
                    report.stopped = f"stopped after {failed_in_a_row} failed batch(es), last: {result.error}"
                    log(f"{destination.name}: {report.stopped}; the rest waits for the next run")
                    break
        report.deferred = len(pending) - tried - report.waiting
        with connect() as con:
            counts = dict(con.execute(
                "SELECT status, count(*) FROM cdp.deliveries WHERE destination = ? GROUP BY status", [destination.name]
            ).fetchall())
        report.open_total = sum(counts.get(status, 0) for status in OPEN)
        report.dead_total = counts.get("dead", 0)
    log(f"{destination.name}: {report.sent} sent, {report.failed} failed, {report.dead_lettered} dead-lettered, "
        f"{report.waiting} waiting, {report.deferred} deferred")
    return report


def _batches(pending: list[Item], held: set[str], size: int, report: DeliveryReport) -> Iterator[list[Item]]:
    """Batches to post, in delivery order. `held` is read as outcomes come in: an item of a held person
    waits and a stored batch with any held person waits whole (it must be re-sent as it was)."""
    stored: dict[str, list[Item]] = {}
    for item in pending:
        if item.batch_key:
            stored.setdefault(item.batch_key, []).append(item)
    # A stored batch that lost a member (an erasure deleted it) is no longer the payload its key named:
    # its items are batched afresh, under a new key.
    broken = {key for key, group in stored.items() if batch_key_of([item.key for item in group]) != key}
    if broken:
        pending = [Item(i.key, i.person_id, i.payload, None) if i.batch_key in broken else i for i in pending]
    seen_batches: set[str] = set()
    batch: list[Item] = []
    for item in pending:
        if item.batch_key:
            if item.batch_key in seen_batches:
                continue
            seen_batches.add(item.batch_key)
            if batch:
                yield batch
                batch = []
            group = stored[item.batch_key]
            if any(member.person_id in held for member in group):
                report.waiting += len(group)
                held.update(member.person_id for member in group)
                continue
            yield group
        elif item.person_id in held:
            report.waiting += 1
        else:
            batch.append(item)
            if len(batch) >= size:
                yield batch
                batch = []
    if batch:
        yield batch


def batch_key_of(keys: list[str]) -> str:
    return keys[0] if len(keys) == 1 else hashlib.sha256("|".join(keys).encode()).hexdigest()


def _send(connect, destination: Destination, client: HttpDelivery, session, batch: list[Item], report: DeliveryReport) -> PostResult:
    keys = [item.key for item in batch]
    batch_key = batch[0].batch_key
    if batch_key is None:
        batch_key = batch_key_of(keys)
        with connect() as con:  # before posting: a crash after the POST must not change the batch's key
            con.execute(
                "INSERT OR REPLACE INTO cdp.delivery_batches SELECT ?, unnest(?), ?",
                [destination.name, keys, batch_key],
            )
    items = [{**json.loads(item.payload), "idempotency_key": item.key} for item in batch]
    result = client.post(session, batch_key, json.dumps({"batch": items}, default=str).encode())
    report.retried += result.retries
    with connect() as con:
        con.execute("BEGIN")
        if result.ok:
            con.execute(
                """UPDATE cdp.deliveries SET status = 'sent', attempts = attempts + 1, sent_at = ?, last_error = NULL
                   WHERE destination = ? AND list_contains(?, idempotency_key)""",
                [_now(), destination.name, keys],
            )
            con.execute(
                "DELETE FROM cdp.delivery_batches WHERE destination = ? AND list_contains(?, idempotency_key)",
                [destination.name, keys],
            )
            # A delivered deletion notice keeps no trace of whom it was about.
            con.execute(
                """UPDATE cdp.deliveries SET person_id = NULL, payload = '{"type": "person_deleted"}'
                   WHERE destination = ? AND item_kind = 'person_deleted' AND list_contains(?, idempotency_key)""",
                [destination.name, keys],
            )
            report.sent += len(batch)
        else:
            con.execute(
                """UPDATE cdp.deliveries SET attempts = attempts + 1, last_error = ?,
                       status = CASE WHEN ? OR attempts + 1 >= ? THEN 'dead' ELSE 'failed' END
                   WHERE destination = ? AND list_contains(?, idempotency_key)""",
                [result.error, result.permanent, destination.max_attempts, destination.name, keys],
            )
            dead = con.execute(
                "SELECT count(*) FROM cdp.deliveries WHERE destination = ? AND status = 'dead' AND list_contains(?, idempotency_key)",
                [destination.name, keys],
            ).fetchone()[0]
            report.failed += len(batch)
            report.dead_lettered += dead
            report.errors.append(result.error or "")
        con.execute("COMMIT")
    return result


def replay_dead_letters(con, destination: str | None = None) -> int:
    """Dead items (of one destination, or all) back to pending with a fresh attempt count. They keep their
    batch key: if a timeout hid that a batch arrived, the receiver still recognises it."""
    if not table_exists(con, "cdp.deliveries"):
        return 0
    ensure_ledger(con)
    where = "status = 'dead'" + (" AND destination = ?" if destination else "")
    params = [destination] if destination else []
    count = con.execute(f"SELECT count(*) FROM cdp.deliveries WHERE {where}", params).fetchone()[0]
    con.execute(f"UPDATE cdp.deliveries SET status = 'pending', attempts = 0 WHERE {where}", params)
    return count
