"""What the Profile API answers, as plain functions of the store: one person found by any identifier, their
traits, events, external ids, links and segments in Segment's Profile API shapes.

A person is found through the store's identifier map (as of the last refresh). An identifier the map does not
hold but the recent-event log does is its own provisional person until the next refresh: its live messages,
and the traits its identify calls sent. Events merge the person's refreshed events with the live messages of
any of their identifiers, newest first, each message once.
"""

from __future__ import annotations

import base64
import binascii
import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from cdp_resources.online_store import OnlineStore

PAGE = 100  # rows fetched per source while merging event streams


class NotFound(LookupError):
    pass


class BadRequest(ValueError):
    pass


@dataclass
class Person:
    person_id: str | None  # None: provisional (only live messages know the identifier)
    document: dict
    _identifiers: list[dict] | None = None
    store: OnlineStore | None = None

    @property
    def identifiers(self) -> list[dict]:
        """Read when first needed: `traits` (the hot path) does not need them."""
        if self._identifiers is None:
            self._identifiers = self.store.identifiers(self.person_id)
        return self._identifiers

    @property
    def keys(self) -> list[tuple[str, str]]:
        return [(i["type"], i["id"]) for i in self.identifiers]


@lru_cache(maxsize=4096)
def normalized(identifier_type: str, value: str, region: str) -> str | None:
    from cdp_assets.identity.normalize import normalize_value

    return normalize_value(identifier_type, value, region)


def find_person(store: OnlineStore, external_id: str, region: str = "US") -> Person:
    identifier_type, sep, raw = external_id.partition(":")
    if not sep or not identifier_type or not raw.strip():
        raise BadRequest(f"expected <type>:<value>, e.g. user_id:u123 or email:ann@example.com, not {external_id!r}")
    value = normalized(identifier_type.strip(), raw, region)
    if value is None:
        raise NotFound("Profile was not found.")
    identifier_type = identifier_type.strip()
    person_id = store.person_of(identifier_type, value)
    if person_id is not None:
        document = store.person(person_id)
        if document is not None:
            return Person(person_id, document, store=store)
    live = store.live_events([(identifier_type, value)], None, 50)
    if not live:
        raise NotFound("Profile was not found.")
    traits: dict = {}
    for _, _, item in reversed(live):  # oldest first: the latest identify wins
        traits.update(item.get("traits") or {})
    document = {"person_id": None, "provisional": True, "traits": traits, "trait_sources": {}, "computed_traits": [],
                "segments": [], "relationships": []}
    return Person(None, document, [{"type": identifier_type, "id": value, "source_id": live[-1][2].get("source_id"),
                                    "created_at": live[-1][2].get("timestamp")}])


def _cursor(url: str, has_more: bool, next_token: str, limit: int | None = None) -> dict:
    cursor = {"url": url, "has_more": has_more, "next": next_token if has_more else ""}
    if limit is not None:
        cursor["limit"] = limit
    return cursor


def limit_of(params, default: int, most: int) -> int:
    text = params.get("limit")
    if text is None:
        return default
    if not text.isdigit() or not 1 <= int(text) <= most:
        raise BadRequest(f"limit must be a whole number from 1 to {most}")
    return int(text)


def _names(params, key: str) -> set[str] | None:
    text = params.get(key)
    return {part.strip() for part in text.split(",") if part.strip()} if text else None


def traits(person: Person, params, url: str) -> dict:
    """`{"traits": {...}, "cursor": {...}}`, by name; `include=a,b`, `class=computed_trait|audience`,
    `verbose=true` (value, winning source, when observed), `limit` (default 10, at most 200) and `next`."""
    document = person.document
    kind = params.get("class")
    if kind == "audience":
        values = {s["segment"]: True for s in document["segments"]}
    elif kind == "computed_trait":
        values = {name: document["traits"].get(name) for name in document["computed_traits"]}
    elif kind is None:
        values = dict(document["traits"])
    else:
        raise BadRequest("class must be audience or computed_trait")
    wanted = _names(params, "include")
    names = sorted(n for n in values if wanted is None or n in wanted)
    start = params.get("next") or ""
    names = [n for n in names if n >= start]
    limit = limit_of(params, 10, 200)
    page, more = names[:limit], len(names) > limit
    if params.get("verbose") == "true":
        sources = document["trait_sources"]
        computed = set(document["computed_traits"])
        shown = {n: {"value": values[n],
                     "source_id": sources.get(n, {}).get("source") or ("computed" if n in computed else None),
                     "updated_at": sources.get(n, {}).get("observed_at")} for n in page}
    else:
        shown = {n: values[n] for n in page}
    return {"traits": shown, "cursor": _cursor(url, more, names[limit] if more else "", limit)}


def external_ids(person: Person, params, url: str) -> dict:
    wanted = _names(params, "include")
    rows = [i for i in person.identifiers if wanted is None or i["type"] in wanted]
    offset = _offset(params)
    limit = limit_of(params, 25, 100)
    page = rows[offset:offset + limit]
    data = [{"id": i["id"], "type": i["type"], "source_id": i.get("source_id"), "collection": "users",
             "created_at": i.get("created_at"), "encoding": "none"} for i in page]
    more = len(rows) > offset + limit
    return {"data": data, "cursor": _cursor(url, more, str(offset + limit))}


def links(person: Person, params, url: str) -> dict:
    """Relationships as Segment's links: an account (group) a person belongs to is `accounts`/`group_id`;
    other kinds (a household, a parent account) keep their kind as the collection and the id type."""
    limit = limit_of(params, 20, 100)
    data = []
    for r in person.document["relationships"][:limit]:
        group = r["kind"] == "group_member"
        collection, id_type = ("accounts", "group_id") if group else (r["kind"], r["kind"])
        data.append({"to_collection": collection, "kind": r["kind"], "external_ids": [{
            "id": r["related_value"], "type": id_type, "source_id": r.get("source"), "collection": collection,
            "created_at": r.get("first_seen_at"), "encoding": "none"}]})
    return {"data": data}


def segments(person: Person, params, url: str) -> dict:
    data = [{"segment": s["segment"], "entered_at": s["entered_at"]} for s in person.document["segments"]]
    return {"data": data, "cursor": _cursor(url, False, "")}


def _offset(params) -> int:
    text = params.get("next") or "0"
    if not text.isdigit():
        raise BadRequest("next must be the cursor a previous page returned")
    return int(text)


def encode_key(key: tuple[int, str]) -> str:
    return base64.urlsafe_b64encode(f"{key[0]}:{key[1]}".encode()).decode().rstrip("=")


def decode_key(token: str) -> tuple[int, str]:
    try:
        ts, _, event_id = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode().partition(":")
        return int(ts), event_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadRequest("next must be the cursor a previous page returned") from None


def _stream(fetch, before) -> Iterator[tuple[int, str, dict]]:
    """One source of events, newest first, fetched a page at a time."""
    while True:
        rows = fetch(before, PAGE)
        yield from rows
        if len(rows) < PAGE:
            return
        before = (rows[-1][0], rows[-1][1])


def events(store: OnlineStore, person: Person, params, url: str) -> dict:
    """`{"data": [...], "cursor": {...}}`: refreshed and live events merged, newest first, each message once;
    `limit` (default 10, at most 100), `next`, `include`/`exclude` (event names), `start`/`end` (ISO-8601)."""
    from cdp_resources.online_store.live import _time, micros

    limit = limit_of(params, 10, 100)
    before = decode_key(params["next"]) if params.get("next") else None
    include, exclude = _names(params, "include"), _names(params, "exclude")
    start, end = (_time(params.get(k)) if params.get(k) else None for k in ("start", "end"))
    if (params.get("start") and start is None) or (params.get("end") and end is None):
        raise BadRequest("start and end must be ISO-8601 times")
    if params.get("sort", "desc") != "desc":
        raise BadRequest("sort: only desc (newest first) is served")
    if end is not None:
        bound = (micros(end), "")
        before = bound if before is None or bound < before else before
    streams = [_stream(lambda b, n: store.live_events(person.keys, b, n), before)]
    if person.person_id is not None:
        streams.append(_stream(lambda b, n: store.events(person.person_id, b, n), before))
    merged = heapq.merge(*streams, key=lambda e: (e[0], e[1]), reverse=True)
    floor = micros(start) if start is not None else None
    page, seen, more = [], set(), False
    for ts, event_id, item in merged:
        if floor is not None and ts < floor:
            break
        if event_id in seen:
            continue
        seen.add(event_id)
        name = item.get("event")
        if (include is not None and name not in include) or (exclude is not None and name in exclude):
            continue
        if len(page) == limit:
            more = True
            break
        page.append((ts, event_id, item))
    token = encode_key((page[-1][0], page[-1][1])) if more else ""
    return {"data": [item for _, _, item in page], "cursor": _cursor(url, more, token, limit)}
