"""Seconds-fresh events: messages the collector acknowledged, appended to the store's recent-event log.

The collector hands every acknowledged landing line to a `LiveFeed` (protocol.land()); one thread takes
everything pending, turns each Segment message into a `LiveEvent` (its Profile API item, event time as
Segment decides it, and its identifiers normalized as identity normalizes them, blocked values left out) and
appends them in one write. The request never waits for it: the landing file is the record, the store a view.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from datetime import datetime, timezone

import polars as pl

from cdp_resources.online_store.base import LiveEvent, OnlineStore

log = logging.getLogger("cdp_resources.online_store")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
SUPPRESSED_TTL_S = 2.0  # an erasure's suppressions reach a running collector within this
# (identifier type, where it is in a Segment message): what identity reads from a message too.
MESSAGE_IDENTIFIERS = (
    ("user_id", ("userId",)), ("anonymous_id", ("anonymousId",)), ("device_id", ("context", "device", "id")),
    ("email", ("traits", "email")), ("email", ("context", "traits", "email")),
    ("phone", ("traits", "phone")), ("phone", ("context", "traits", "phone")),
)


def micros(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def iso(ts: int) -> str:
    """µs since the epoch as ISO-8601 UTC with milliseconds, like Segment's timestamps."""
    moment = datetime.fromtimestamp(ts / 1_000_000, tz=timezone.utc)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def _time(value) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def event_time(message: dict, received: datetime) -> datetime:
    """Segment's event time: `timestamp`, else `originalTimestamp` corrected for the device's clock skew."""
    stamped = _time(message.get("timestamp"))
    if stamped is not None:
        return stamped
    original, sent = _time(message.get("originalTimestamp")), _time(message.get("sentAt"))
    if original is not None and sent is not None:
        return received - (sent - original)
    return original or received


def _dig(message: dict, path: tuple[str, ...]):
    node = message
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node if isinstance(node, (str, int)) and not isinstance(node, bool) else None


def event_item(message: dict, ts: int) -> dict:
    """A message as the Profile API's `events` shows it (Segment's item: event, type, timestamp, properties...)."""
    kind = message.get("type")
    item = {
        "event": message.get("event") or message.get("name") or None,
        "type": kind,
        "timestamp": iso(ts),
        "properties": message.get("properties") if isinstance(message.get("properties"), dict) else {},
        "message_id": message.get("messageId"),
        "source_id": message.get("source"),
        "received_at": message.get("receivedAt"),
        "context": message.get("context") if isinstance(message.get("context"), dict) else {},
    }
    if kind == "identify" and isinstance(message.get("traits"), dict):
        item["traits"] = message["traits"]
    return item


def live_events(messages: list[dict], region: str = "US", rules=None) -> list[LiveEvent]:
    """The recent-event log entries of Segment messages (landing lines), identifiers normalized in one pass."""
    from cdp_assets.identity.normalize import normalize_identifiers

    events, raw = [], []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or "type" not in message or not isinstance(message.get("messageId"), str):
            continue  # webhook lines and what validation will quarantine anyway
        received = _time(message.get("receivedAt")) or datetime.now(timezone.utc)
        ts = micros(event_time(message, received))
        events.append(LiveEvent(message["messageId"], ts, micros(received), event_item(message, ts)))
        raw += [(len(events) - 1, kind, str(value)) for kind, path in MESSAGE_IDENTIFIERS
                if (value := _dig(message, path)) is not None]
    if raw:
        frame = normalize_identifiers(
            pl.DataFrame(raw, schema={"n": pl.Int64, "identifier_type": pl.String, "identifier_value": pl.String}, orient="row"),
            "identifier_type", "identifier_value", region)
        frame = frame.filter(pl.col("identifier_value").is_not_null())
        if rules is not None:
            frame = frame.filter(~rules.blocked())
        for n, kind, value in frame.unique().iter_rows():
            events[n].identifiers.append((kind, value))
    return [e for e in events if e.identifiers]


class LiveFeed:
    """Appends acknowledged lines to the store's recent-event log on a thread of its own."""

    def __init__(self, store: OnlineStore, region: str = "US", rules=None, salt=lambda: None):
        """`salt()`: the instance's privacy salt, or None while no erasure has made one."""
        self.store, self.region, self.rules, self._salt = store, region, rules, salt
        self._suppressed: tuple[float, str | None, set[str]] = (0.0, None, set())
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="live-feed", daemon=True)
        self._thread.start()

    def offer(self, datas: list[bytes]) -> None:
        """Hand over landed lines; never blocks, never fails the request."""
        if datas:
            self._queue.put(datas)

    def close(self, timeout: float = 10) -> None:
        self._queue.put(None)
        self._thread.join(timeout)
        self.store.close()

    def _erased(self, event: LiveEvent) -> bool:
        """True when the message carries an identifier an erasure suppressed (re-read every few seconds)."""
        now = time.monotonic()
        if now - self._suppressed[0] > SUPPRESSED_TTL_S:
            salt = self._salt()
            self._suppressed = (now, salt, self.store.suppressed() if salt is not None else set())
        _, salt, hashes = self._suppressed
        return bool(hashes) and any(hashlib.sha256(f"{salt}{v}".encode()).hexdigest() in hashes
                                    for _, v in event.identifiers)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get())
            stop = None in batch
            lines = [data for datas in batch if datas for data in datas]
            try:
                events = live_events([json.loads(d) for d in lines], self.region, self.rules)
                self.store.append_live([e for e in events if not self._erased(e)])
            except Exception as exc:  # noqa: BLE001 (the log is a view: the landing file holds the message)
                log.warning("could not append %d message(s) to the recent-event log: %s", len(lines), exc)
            if stop:
                return
