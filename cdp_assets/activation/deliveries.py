"""The delivery ledger `cdp.deliveries` (an outbox) and the loop that empties it, in order per person.

1. `enqueue`: in one short transaction, every segment entry/exit and subscribed event not yet in the
   ledger becomes a pending item whose idempotency key is derived from what it is (destination, segment,
   person, change, time / event id): re-running enqueues nothing twice.
2. `deliver`: without holding the warehouse, pending items are posted in (time, key) order in batches. An
   item waits while an earlier item of the same person is undelivered (failed in this run, or dead), so a
   person's changes never arrive out of order. Each batch's outcome is recorded in its own transaction.
3. After `max_attempts` failed runs an item is dead-lettered; `replay_dead_letters` makes it pending again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import requests

from cdp_assets.activation.config import Destination
from cdp_assets.events.parse import quote_ident, quote_literal
from cdp_resources.destinations import HttpDelivery, PostResult
from cdp_resources.warehouse import table_exists

LEDGER_DDL = """CREATE TABLE IF NOT EXISTS cdp.deliveries (
    destination VARCHAR, idempotency_key VARCHAR, person_id VARCHAR, item_kind VARCHAR, payload VARCHAR,
    ordered_at TIMESTAMP, status VARCHAR, attempts INTEGER, last_error VARCHAR,
    enqueued_at TIMESTAMP, sent_at TIMESTAMP, PRIMARY KEY (destination, idempotency_key))"""
IDENTIFIER_COLUMNS = ("email", "phone")


@dataclass
class DeliveryReport:
    enqueued: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    dead_lettered: int = 0
    waiting: int = 0
    errors: list[str] = field(default_factory=list)


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


def enqueue(con, destination: Destination) -> int:
    """New segment changes and events of this destination into the ledger; how many were added."""
    con.execute(LEDGER_DDL)
    before = con.execute("SELECT count(*) FROM cdp.deliveries WHERE destination = ?", [destination.name]).fetchone()[0]
    profiles = "LEFT JOIN cdp.profiles p USING (person_id)" if table_exists(con, "cdp.profiles") else ""
    traits = _traits(destination) if profiles else "json_object()"
    name = quote_literal(destination.name)
    con.execute("BEGIN")
    if destination.segments and table_exists(con, "cdp.segment_changes"):
        con.execute(
            f"""INSERT INTO cdp.deliveries
                SELECT {name}, sha256(concat_ws('|', {name}, c.segment, c.person_id, c.change, c.changed_at::VARCHAR)),
                       c.person_id, 'segment_change',
                       json_object('type', 'segment_change', 'segment', c.segment, 'change', c.change,
                                   'person_id', c.person_id, 'changed_at', c.changed_at, 'traits', {traits})::VARCHAR,
                       c.changed_at, 'pending', 0, NULL, ?, NULL
                FROM cdp.segment_changes c {profiles}
                WHERE list_contains(?, c.segment)
                ON CONFLICT DO NOTHING""",
            [_now(), list(destination.segments)],
        )
    if destination.events and table_exists(con, "core.person_events"):
        con.execute(
            f"""INSERT INTO cdp.deliveries
                SELECT {name}, sha256(concat_ws('|', {name}, e.event_id)), e.person_id, 'event',
                       json_object('type', 'event', 'event', e.event_name, 'event_id', e.event_id,
                                   'person_id', e.person_id, 'occurred_at', e.occurred_at,
                                   'properties', e.properties, 'traits', {traits})::VARCHAR,
                       e.occurred_at, 'pending', 0, NULL, ?, NULL
                FROM core.person_events e {profiles}
                WHERE list_contains(?, e.event_name)
                ON CONFLICT DO NOTHING""",
            [_now(), list(destination.events)],
        )
    con.execute("COMMIT")
    return con.execute("SELECT count(*) FROM cdp.deliveries WHERE destination = ?", [destination.name]).fetchone()[0] - before


def deliver(connect: Callable, destination: Destination, client: HttpDelivery, log=lambda message: None) -> DeliveryReport:
    """Post the pending items of `destination`; `connect()` opens a short warehouse connection."""
    report = DeliveryReport()
    with connect() as con:
        report.enqueued = enqueue(con, destination)
        pending = con.execute(
            """SELECT idempotency_key, person_id, payload, attempts FROM cdp.deliveries
               WHERE destination = ? AND status = 'pending' ORDER BY ordered_at, idempotency_key""",
            [destination.name],
        ).fetchall()
        held = {r[0] for r in con.execute(
            "SELECT DISTINCT person_id FROM cdp.deliveries WHERE destination = ? AND status = 'dead'", [destination.name]
        ).fetchall()}
    log(f"{destination.name}: {report.enqueued} new, {len(pending)} pending")
    with requests.Session() as session:
        batch: list[tuple] = []
        for item in pending + [None]:  # None flushes the last batch
            if item is not None and item[1] in held:
                report.waiting += 1  # an earlier item of this person is not delivered: keep the order
                continue
            if item is not None:
                batch.append(item)
            if batch and (item is None or len(batch) >= destination.batch_size):
                _send(connect, destination, client, session, batch, held, report)
                log(f"{destination.name}: {report.sent} sent, {report.failed} failed, {report.dead_lettered} dead")
                batch = []
    return report


def _send(connect, destination, client, session, batch, held, report) -> None:
    keys = [key for key, *_ in batch]
    items = [{**json.loads(payload), "idempotency_key": key} for key, _, payload, _ in batch]
    batch_key = keys[0] if len(keys) == 1 else hashlib.sha256("|".join(keys).encode()).hexdigest()
    result: PostResult = client.post(session, batch_key, json.dumps({"batch": items}, default=str).encode())
    report.retried += result.retries
    with connect() as con:
        con.execute("BEGIN")
        if result.ok:
            con.execute(
                """UPDATE cdp.deliveries SET status = 'sent', attempts = attempts + 1, sent_at = ?, last_error = NULL
                   WHERE destination = ? AND list_contains(?, idempotency_key)""",
                [_now(), destination.name, keys],
            )
            report.sent += len(batch)
        else:
            con.execute(
                """UPDATE cdp.deliveries SET attempts = attempts + 1, last_error = ?,
                       status = CASE WHEN ? OR attempts + 1 >= ? THEN 'dead' ELSE 'pending' END
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
            held.update(person for _, person, _, _ in batch)
        con.execute("COMMIT")


def replay_dead_letters(con, destination: str | None = None) -> int:
    """Dead items (of one destination, or all) back to pending with a fresh attempt count."""
    if not table_exists(con, "cdp.deliveries"):
        return 0
    where = "status = 'dead'" + (" AND destination = ?" if destination else "")
    params = [destination] if destination else []
    count = con.execute(f"SELECT count(*) FROM cdp.deliveries WHERE {where}", params).fetchone()[0]
    con.execute(f"UPDATE cdp.deliveries SET status = 'pending', attempts = 0 WHERE {where}", params)
    return count
