"""The online store in Redis, for production (several API processes, one store), as RudderStack serves
profiles.

Everything a refresh writes lives under one generation, in four hashes (`ids`: "type\\x1fvalue" -> person,
`persons`: person -> document, `identifiers` and `events`: person -> JSON list), so a full load writes a new
generation beside the one being read and switches `<prefix>:gen` in one command: readers never see a
half-loaded store. Incremental writes go to the current generation in MULTI/EXEC transactions. The
recent-event log is outside generations: `live:msg` (sequence -> message) and one set of sequences per
identifier.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import redis

from cdp_resources.online_store.base import LiveEvent, OnlineStore, PersonRecord, StoreWriter, dump_json, load_json

SEP = "\x1f"
GENERATION_TTL_S = 1.0  # readers re-read the current generation at most this often
OLD_GENERATION_TTL_S = 60  # a replaced generation stays readable this long




class RedisStore(OnlineStore):
    kind = "redis"

    def __init__(self, url: str, prefix: str = "cdp"):
        self.url = url
        self.prefix = prefix
        self.client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=30, health_check_interval=30)
        self._gen: tuple[float, int] | None = None

    def describe(self) -> str:
        return f"redis {self.url} prefix {self.prefix}"

    def _generation(self, fresh: bool = False) -> int:
        now = time.monotonic()
        if fresh or self._gen is None or now - self._gen[0] > GENERATION_TTL_S:
            self._gen = (now, int(self.client.get(f"{self.prefix}:gen") or 0))
        return self._gen[1]

    def _key(self, name: str, gen: int | None = None) -> str:
        return f"{self.prefix}:{self._generation() if gen is None else gen}:{name}"

    # --- reads ---
    def person_of(self, identifier_type: str, value: str) -> str | None:
        return self.client.hget(self._key("ids"), f"{identifier_type}{SEP}{value}")

    def person(self, person_id: str) -> dict | None:
        text = self.client.hget(self._key("persons"), person_id)
        return load_json(text) if text else None

    def identifiers(self, person_id: str) -> list[dict]:
        text = self.client.hget(self._key("identifiers"), person_id)
        return load_json(text) if text else []

    def events(self, person_id: str, before: tuple[int, str] | None, limit: int) -> list[tuple[int, str, dict]]:
        text = self.client.hget(self._key("events"), person_id)
        rows = [tuple(e) for e in load_json(text)] if text else []  # newest first, as written
        if before is not None:
            rows = [e for e in rows if (e[0], e[1]) < before]
        return rows[:limit]

    def live_events(self, identifiers: list[tuple[str, str]], before: tuple[int, str] | None, limit: int) -> list[tuple[int, str, dict]]:
        if not identifiers:
            return []
        pipe = self.client.pipeline(transaction=False)
        for t, v in identifiers:
            pipe.smembers(f"{self.prefix}:live:idx:{t}{SEP}{v}")
        seqs = sorted(set().union(*pipe.execute()))
        if not seqs:
            return []
        found = {}
        for text in self.client.hmget(f"{self.prefix}:live:msg", seqs):
            if text:
                record = load_json(text)
                key = (record["ts"], record["message_id"])
                if before is None or key < before:
                    found[record["message_id"]] = (record["ts"], record["message_id"], record["item"])
        return sorted(found.values(), key=lambda e: (e[0], e[1]), reverse=True)[:limit]

    # --- writes ---
    @contextmanager
    def writer(self, full: bool = False) -> Iterator[StoreWriter]:
        current = self._generation(fresh=True)
        gen = current + 1 if full else current
        if full:  # a leftover of a load that failed half-way
            self.client.unlink(*(self._key(n, gen) for n in _HASHES))
        writer = _RedisWriter(self, gen)
        yield writer
        if full:
            self.client.set(f"{self.prefix}:gen", gen)
            # Readers that read the generation less than GENERATION_TTL_S ago still read the old one: it
            # expires a minute later instead of going now.
            pipe = self.client.pipeline(transaction=False)
            for name in _HASHES:
                pipe.expire(self._key(name, current), OLD_GENERATION_TTL_S)
            pipe.execute()
            self._generation(fresh=True)

    def meta(self) -> dict[str, str]:
        return self.client.hgetall(self._key("meta", self._generation(fresh=True)))

    def persons_count(self) -> int:
        return self.client.hlen(self._key("persons", self._generation(fresh=True)))

    def append_live(self, events: list[LiveEvent]) -> None:
        if not events:
            return
        first = self.client.incrby(f"{self.prefix}:live:seq", len(events)) - len(events) + 1
        pipe = self.client.pipeline(transaction=True)
        for seq, event in enumerate(events, start=first):
            record = {"message_id": event.message_id, "ts": event.ts, "received_at": event.received_at,
                      "item": event.item, "identifiers": [list(i) for i in event.identifiers]}
            pipe.hset(f"{self.prefix}:live:msg", seq, dump_json(record))
            for t, v in event.identifiers:
                pipe.sadd(f"{self.prefix}:live:idx:{t}{SEP}{v}", seq)
        pipe.execute()

    def _live_records(self) -> dict[str, dict]:
        return {seq: load_json(text) for seq, text in self.client.hgetall(f"{self.prefix}:live:msg").items()}

    def live_message_ids(self) -> list[str]:
        return sorted({r["message_id"] for r in self._live_records().values()})

    def drop_live(self, message_ids: Iterable[str], received_before: int | None = None) -> int:
        drop = set(message_ids)
        doomed = {seq: r for seq, r in self._live_records().items()
                  if r["message_id"] in drop or (received_before is not None and r["received_at"] < received_before)}
        self._forget_live(doomed)
        return len(doomed)

    def _forget_live(self, doomed: dict[str, dict]) -> None:
        if not doomed:
            return
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(f"{self.prefix}:live:msg", *doomed)
        for seq, record in doomed.items():
            for t, v in record["identifiers"]:
                pipe.srem(f"{self.prefix}:live:idx:{t}{SEP}{v}", seq)
        pipe.execute()

    # --- erasure ---
    def erase(self, person_ids: set[str], identifiers: set[tuple[str, str]], needles: list[str]) -> dict[str, int]:
        needles = sorted({n.lower() for n in needles if n})
        gen = self._generation(fresh=True)
        if gen > 0:  # the generation a full load replaced, still readable for a minute: gone now
            self.client.unlink(*(self._key(n, gen - 1) for n in _HASHES))
        counts = {"persons": 0, "identifiers": 0, "events": 0, "live_events": 0}
        ids_key = self._key("ids", gen)
        for person_id in sorted(person_ids):
            for ident in load_json(self.client.hget(self._key("identifiers", gen), person_id) or "[]"):
                identifiers = identifiers | {(ident["type"], ident["id"])}
        fields = [f"{t}{SEP}{v}" for t, v in sorted(identifiers)]
        if fields:
            counts["identifiers"] += self.client.hdel(ids_key, *fields)
        mentioned = lambda text: any(n in text.lower() for n in needles)  # noqa: E731
        for name in ("persons", "events", "identifiers"):
            key = self._key(name, gen)
            doomed = set(person_ids) | {p for p, text in self.client.hscan_iter(key, count=1000) if mentioned(text)}
            removed = self.client.hdel(key, *doomed) if doomed else 0
            if name != "identifiers":
                counts[name] += removed
        stale = [f for f, p in self.client.hscan_iter(ids_key) if p in person_ids or mentioned(f)]
        if stale:
            counts["identifiers"] += self.client.hdel(ids_key, *stale)
        held = set(map(tuple, identifiers))
        doomed = {seq: r for seq, r in self._live_records().items()
                  if held & {tuple(i) for i in r["identifiers"]} or mentioned(dump_json(r))}
        self._forget_live(doomed)
        counts["live_events"] = len(doomed)
        self.client.delete(self._key("meta", gen))
        return {k: v for k, v in counts.items() if v}

    def suppress(self, hashes: Iterable[str]) -> None:
        hashes = list(hashes)
        if hashes:
            self.client.sadd(f"{self.prefix}:suppressed", *hashes)

    def suppressed(self) -> set[str]:
        return set(self.client.smembers(f"{self.prefix}:suppressed"))

    def close(self) -> None:
        self.client.close()

    def drop_everything(self) -> None:
        """Every key under the prefix (tests and benchmarks)."""
        for key in self.client.scan_iter(f"{self.prefix}:*", count=1000):
            self.client.unlink(key)


_HASHES = ("ids", "persons", "identifiers", "events", "meta")


class _RedisWriter(StoreWriter):
    def __init__(self, store: RedisStore, gen: int):
        self.store, self.gen = store, gen

    def _key(self, name: str) -> str:
        return self.store._key(name, self.gen)

    def put(self, persons: Iterable[PersonRecord]) -> None:
        persons = list(persons)
        if not persons:
            return
        old = self.store.client.hmget(self._key("identifiers"), [p.person_id for p in persons])
        pipe = self.store.client.pipeline(transaction=True)
        stale = [f"{i['type']}{SEP}{i['id']}" for text in old if text for i in load_json(text)]
        owners = self.store.client.hmget(self._key("ids"), stale) if stale else []
        mine = {p.person_id for p in persons}
        # An identifier that moved to a person written earlier in this refresh keeps its new owner.
        stale = [f for f, owner in zip(stale, owners) if owner in mine]
        if stale:
            pipe.hdel(self._key("ids"), *stale)
        pipe.hset(self._key("persons"), mapping={p.person_id: dump_json(p.document) for p in persons})
        pipe.hset(self._key("identifiers"), mapping={
            p.person_id: dump_json(sorted(p.identifiers, key=lambda i: (i["type"], i["id"]))) for p in persons})
        pipe.hset(self._key("events"), mapping={
            p.person_id: dump_json(sorted(p.events, key=lambda e: (e[0], e[1]), reverse=True)) for p in persons})
        ids = {f"{i['type']}{SEP}{i['id']}": p.person_id for p in persons for i in p.identifiers}
        if ids:
            pipe.hset(self._key("ids"), mapping=ids)
        pipe.execute()

    def delete(self, person_ids: Iterable[str]) -> None:
        person_ids = list(person_ids)
        if not person_ids:
            return
        old = self.store.client.hmget(self._key("identifiers"), person_ids)
        pipe = self.store.client.pipeline(transaction=True)
        stale = [f"{i['type']}{SEP}{i['id']}" for text in old if text for i in load_json(text)]
        owners = self.store.client.hmget(self._key("ids"), stale) if stale else []
        stale = [f for f, owner in zip(stale, owners) if owner in set(person_ids)]
        if stale:
            pipe.hdel(self._key("ids"), *stale)
        for name in ("persons", "identifiers", "events"):
            pipe.hdel(self._key(name), *person_ids)
        pipe.execute()

    def set_meta(self, values: dict[str, str]) -> None:
        if values:
            self.store.client.hset(self._key("meta"), mapping=values)
