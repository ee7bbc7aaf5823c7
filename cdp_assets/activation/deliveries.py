"""The delivery ledger `cdp.deliveries` (an outbox) and the loop that empties it, in order per person.

1. `enqueue`: in one short transaction, every segment entry/exit and subscribed event not yet in the
   ledger becomes a pending item. Its idempotency key is derived from what it is (sha256 of destination,
   segment, person, change, time — or destination and event id), so re-running enqueues nothing twice.
   Items are delivered in the order the ledger learned of them (`enqueued_at`), by time within one
   enqueue (`ordered_at`, then key).
2. `deliver`: without holding the warehouse, items are posted in that order, in batches. An item waits
   while an earlier open item of the same person failed in this run, so a person's changes never
   overtake each other while they are being retried. A dead item holds nothing: the person's later items
   flow, and the dead one, if replayed, arrives after them. Each batch's outcome is recorded in its own
   short transaction.
3. A batch's key (the item's key, or sha256 of the batch's item keys) is recorded in `cdp.delivery_batches`
   *before* it is posted and the batch is re-sent as it was on every later attempt, so a receiver that
   deduplicates by `Idempotency-Key`/`webhook-id` sees one key for one payload even when a timeout hid that
   it arrived. A batch the destination refused as a whole (a 400 for one bad item among fifty) did not
   arrive: it is split in halves, each under a new key, until the refused items are alone, so only they
   are judged. (Side tables, not ledger columns: `cdp.deliveries` keeps the shape the privacy stage
   writes deletion notices into.)
4. Statuses: pending → sent; waiting (the destination was away: unreachable, timing out, 5xx, 429,
   refusing us; no attempt spent) → sent; failed (the destination refused this item: an attempt spent)
   → sent | dead after `max_attempts`, or at once for a refusal that cannot change (400, 413, 422).
   `replay_dead_letters` makes dead items pending again.
5. An outage: when a run stops because the destination is away, `cdp.destination_outages` records it and
   when to try again (`retry_at`: `outage_backoff_s`, doubling per consecutive outage, at most 30
   minutes); runs before then only enqueue. The first run that delivers clears it.
6. Engines: the posting above is one piece of code over a ledger's steps (`deliver_with`); `DuckDBLedger`
   keeps them in the DuckDB file, activation/spark.py's `SparkLedger` in Parquet tables (`deliver_in` picks).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
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
OPEN = ("pending", "waiting", "failed")  # statuses that are still to be delivered
# A destination that is away, and when to try it again. No personal data.
OUTAGES_DDL = """CREATE TABLE IF NOT EXISTS cdp.destination_outages (
    destination VARCHAR PRIMARY KEY, since TIMESTAMP, outages INTEGER, retry_at TIMESTAMP, last_error VARCHAR)"""
OUTAGE_BACKOFF_MAX_S = 1800.0  # under the hourly schedule's period: the backstop run always tries
# Batches failing in a row after which the destination is taken to be down for this run: the rest waits
# for the next run without spending its attempts.
STOP_AFTER_FAILED_BATCHES = 3


@dataclass
class DeliveryReport:
    enqueued: int = 0
    sent: int = 0
    retried: int = 0  # HTTP requests repeated within this run
    waited: int = 0  # items tried while the destination was away: they wait, no attempt spent
    failed: int = 0  # items the destination refused this run: an attempt spent (retried next run, or dead)
    dead_lettered: int = 0
    held: int = 0  # items held behind an earlier item of their person that failed this run
    deferred: int = 0  # items not tried because the run stopped early or waits for `retry_at`
    open_total: int = 0  # after the run: pending, waiting or failed items of this destination
    dead_total: int = 0  # after the run: dead items of this destination
    stopped: str = ""
    retry_at: datetime | None = None  # the destination is away: runs before this only enqueue
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
    con.execute(OUTAGES_DDL)
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
    return deliver_with(DuckDBLedger(connect), destination, client, log, lock_path)


def deliver_in(engine, destination: Destination, client: HttpDelivery, log: Callable[[str], None] = lambda message: None,
               lock_path: Path | None = None) -> DeliveryReport:
    """`deliver` on the warehouse's engine (`WarehouseResource.engine()`): the one place the ledger differs by
    engine. The posting (batches, order, retries, splits, outages) is the same code on both."""
    if engine.name == "spark":
        from cdp_assets.activation.spark import SparkLedger

        return deliver_with(SparkLedger(engine), destination, client, log, lock_path)
    return deliver(engine.connect, destination, client, log, lock_path)


def deliver_with(ledger, destination: Destination, client: HttpDelivery, log: Callable[[str], None] = lambda message: None,
                 lock_path: Path | None = None) -> DeliveryReport:
    """`deliver` over a ledger (DuckDBLedger, or activation/spark.py's SparkLedger)."""
    report = DeliveryReport()
    with destination_lock(lock_path):
        report.enqueued, pending, outage = ledger.start(destination)
        if outage and outage[0] > _now():
            report.retry_at, report.deferred = outage[0], len(pending)
            report.stopped = f"the destination is away ({outage[1]}); next try at {outage[0]:%Y-%m-%d %H:%M:%S} UTC"
            log(f"{destination.name}: {report.enqueued} new, {len(pending)} open; {report.stopped}")
        else:
            log(f"{destination.name}: {report.enqueued} new, {len(pending)} to deliver")
            _deliver_open(ledger, destination, client, pending, report, log)
        counts = ledger.status_counts(destination)
        report.open_total = sum(counts.get(status, 0) for status in OPEN)
        report.dead_total = counts.get("dead", 0)
    log(f"{destination.name}: {report.sent} sent, {report.waited} waiting, {report.failed} failed, "
        f"{report.dead_lettered} dead-lettered, {report.held} held, {report.deferred} deferred")
    return report


class DuckDBLedger:
    """The ledger in the DuckDB warehouse, each step in its own short connection (and transaction)."""

    def __init__(self, connect: Callable):
        self.connect = connect

    def start(self, destination: Destination) -> tuple[int, list[Item], tuple | None]:
        """Enqueue; then the open items in delivery order and the destination's outage (retry_at, last_error)."""
        with self.connect() as con:
            enqueued = enqueue(con, destination)
            pending = [Item(*row) for row in con.execute(
                f"""SELECT d.idempotency_key, d.person_id, d.payload, b.batch_key
                    FROM cdp.deliveries d LEFT JOIN cdp.delivery_batches b USING (destination, idempotency_key)
                    WHERE d.destination = ? AND d.status IN {OPEN} ORDER BY {DELIVERY_ORDER}""",
                [destination.name],
            ).fetchall()]
            outage = con.execute(
                "SELECT retry_at, last_error FROM cdp.destination_outages WHERE destination = ?", [destination.name]
            ).fetchone()
        return enqueued, pending, outage

    def record_batch(self, destination: Destination, keys: list[str], batch_key: str) -> None:
        with self.connect() as con:
            con.execute(
                "INSERT OR REPLACE INTO cdp.delivery_batches SELECT ?, unnest(?), ?",
                [destination.name, keys, batch_key],
            )

    def record_outcome(self, destination: Destination, keys: list[str], result: PostResult) -> str:
        """Record a posted batch's outcome; returns sent | split | dead | failed | waiting (see _send)."""
        where = "destination = ? AND list_contains(?, idempotency_key)"
        with self.connect() as con:
            con.execute("BEGIN")
            if result.ok:
                status = "sent"
                con.execute(
                    f"UPDATE cdp.deliveries SET status = 'sent', attempts = attempts + 1, sent_at = ?, last_error = NULL WHERE {where}",
                    [_now(), destination.name, keys],
                )
                con.execute(f"DELETE FROM cdp.delivery_batches WHERE {where}", [destination.name, keys])
                # A delivered deletion notice keeps no trace of whom it was about.
                con.execute(
                    f"""UPDATE cdp.deliveries SET person_id = NULL, payload = '{{"type": "person_deleted"}}'
                        WHERE item_kind = 'person_deleted' AND {where}""",
                    [destination.name, keys],
                )
            elif result.judged and len(keys) > 1:
                status = "split"  # refused as a whole, so it did not arrive: its key is of no more use
                con.execute(f"DELETE FROM cdp.delivery_batches WHERE {where}", [destination.name, keys])
            elif result.judged:
                dead = result.permanent or con.execute(
                    f"SELECT attempts + 1 >= ? FROM cdp.deliveries WHERE {where}", [destination.max_attempts, destination.name, keys]
                ).fetchone()[0]
                status = "dead" if dead else "failed"
                con.execute(
                    f"UPDATE cdp.deliveries SET attempts = attempts + 1, last_error = ?, status = ? WHERE {where}",
                    [result.error, status, destination.name, keys],
                )
            else:  # the destination is away: the items wait, their attempts untouched
                status = "waiting"
                con.execute(
                    f"UPDATE cdp.deliveries SET last_error = ?, status = 'waiting' WHERE {where}",
                    [result.error, destination.name, keys],
                )
            con.execute("COMMIT")
        return status

    def finish(self, destination: Destination, stopped: str, posted: bool) -> datetime | None:
        """After posting: record the outage when the run stopped (returns retry_at), clear it when it delivered."""
        with self.connect() as con:
            if stopped:
                return _record_outage(con, destination, stopped)
            if posted:
                con.execute("DELETE FROM cdp.destination_outages WHERE destination = ?", [destination.name])
        return None

    def status_counts(self, destination: Destination) -> dict[str, int]:
        with self.connect() as con:
            return dict(con.execute(
                "SELECT status, count(*) FROM cdp.deliveries WHERE destination = ? GROUP BY status", [destination.name]
            ).fetchall())


def _deliver_open(ledger, destination: Destination, client: HttpDelivery, pending: list[Item],
                  report: DeliveryReport, log: Callable[[str], None]) -> None:
    """Post the open items in order; stop when the destination is away, and record the outage."""
    held: set[str] = set()  # persons with an item left open this run: their later items wait
    posted: set[str] = set()  # items whose outcome was recorded this run
    away_in_a_row = 0
    with requests.Session() as session:
        for batch in _batches(pending, held, destination.batch_size, report):
            result = _post(ledger, destination, client, session, batch, held, posted, report)
            if result.ok or result.judged:  # the destination answered about the payload: it is there
                away_in_a_row = 0
                continue
            away_in_a_row += 1
            if result.stop or away_in_a_row >= STOP_AFTER_FAILED_BATCHES:
                report.stopped = f"stopped after {away_in_a_row} failed batch(es), last: {result.error}"
                log(f"{destination.name}: {report.stopped}; the rest waits for the next run")
                break
    report.deferred = len(pending) - len(posted) - report.held
    report.retry_at = ledger.finish(destination, report.stopped, bool(posted))


def outage_retry_at(destination: Destination, outages: int, now: datetime) -> datetime:
    """When to try again after one more outage: `outage_backoff_s` doubled per consecutive outage (capped)."""
    wait = min(destination.outage_backoff_s * 2**min(outages, 30), max(OUTAGE_BACKOFF_MAX_S, destination.outage_backoff_s))
    return now + timedelta(seconds=wait)


def _record_outage(con, destination: Destination, error: str) -> datetime:
    """One more consecutive outage; the next run waits `outage_backoff_s` doubled per outage (capped)."""
    row = con.execute(
        "SELECT since, outages FROM cdp.destination_outages WHERE destination = ?", [destination.name]
    ).fetchone()
    since, outages = row if row else (_now(), 0)
    retry_at = outage_retry_at(destination, outages, _now())
    con.execute("INSERT OR REPLACE INTO cdp.destination_outages VALUES (?, ?, ?, ?, ?)",
                [destination.name, since, outages + 1, retry_at, error[:300]])
    return retry_at


def _post(ledger, destination: Destination, client: HttpDelivery, session, batch: list[Item], held: set[str],
          posted: set[str], report: DeliveryReport) -> PostResult:
    """Post a batch. One the destination refused as a whole is split in halves, each under a new key, until
    the refused items are alone: only they are judged, the others are delivered. Persons left with an
    open item join `held`; a dead item holds nothing."""
    result, status = _send(ledger, destination, client, session, batch, report)
    if status in ("waiting", "failed"):
        held.update(item.person_id for item in batch)
    if status != "split":
        posted.update(item.key for item in batch)
        return result
    middle = len(batch) // 2
    for part in (batch[:middle], batch[middle:]):
        kept = [Item(i.key, i.person_id, i.payload, None) for i in part if i.person_id not in held]
        report.held += len(part) - len(kept)
        if kept:
            outcome = _post(ledger, destination, client, session, kept, held, posted, report)
            if not (outcome.ok or outcome.judged):
                return outcome  # the destination went away meanwhile
    return result


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
                report.held += len(group)
                held.update(member.person_id for member in group)
                continue
            yield group
        elif item.person_id in held:
            report.held += 1
        else:
            batch.append(item)
            if len(batch) >= size:
                yield batch
                batch = []
    if batch:
        yield batch


def batch_key_of(keys: list[str]) -> str:
    return keys[0] if len(keys) == 1 else hashlib.sha256("|".join(keys).encode()).hexdigest()


def _send(ledger, destination: Destination, client: HttpDelivery, session, batch: list[Item],
          report: DeliveryReport) -> tuple[PostResult, str]:
    """Post one batch and record its outcome: (result, sent | waiting | failed | dead | split)."""
    keys = [item.key for item in batch]
    batch_key = batch[0].batch_key
    if batch_key is None:
        batch_key = batch_key_of(keys)
        ledger.record_batch(destination, keys, batch_key)  # before posting: a crash after the POST must not change the batch's key
    items = [{**json.loads(item.payload), "idempotency_key": item.key} for item in batch]
    result = client.post(session, batch_key, json.dumps({"batch": items}, default=str).encode())
    report.retried += result.retries
    status = ledger.record_outcome(destination, keys, result)
    if status == "sent":
        report.sent += len(batch)
    elif status in ("failed", "dead"):
        report.failed += 1
        report.dead_lettered += status == "dead"
    elif status == "waiting":
        report.waited += len(batch)
    if not result.ok:
        report.errors.append(result.error or "")
    return result, status


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


def replay_dead_letters_in(engine, destination: str | None = None) -> int:
    """`replay_dead_letters` on the warehouse's engine (`WarehouseResource.engine()`)."""
    if engine.name == "spark":
        from cdp_assets.activation.spark import replay_dead_letters_on_spark

        return replay_dead_letters_on_spark(engine, destination)
    with engine.connect() as con:
        return replay_dead_letters(con, destination)
