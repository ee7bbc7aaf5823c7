"""What every online store backend offers: the one interface the Profile API, the refresh asset, the collector
and the erasure use, whatever holds the data.

The store keeps, per person, what the 360 view needs without touching the warehouse (which a running pipeline
locks): a document (traits, their winning sources, computed traits, segments, relationships), the identifiers
that find the person (normalized, as in cdp.id_map) and their most recent events. Beside it, the recent-event
log: every message the collector acknowledged, indexed by its normalized identifiers, until a refresh has
brought it into the warehouse. An identifier the store does not know yet is its own provisional person, made
of its live events only.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import orjson


def dump_json(value) -> str:
    """Compact JSON with non-ASCII kept as is (the bytes on disk are the text an erasure looks for), times as
    `str()` writes them. orjson (a dependency of dagster-dbt) writes a full load's documents and events several
    times faster than `json`; what it refuses (integers over 64 bits, keys that are not text) goes to `json`."""
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_PASSTHROUGH_DATETIME).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))


def load_json(text: str):
    """`json.loads`, by orjson where it can (not NaN or Infinity, integers over 64 bits)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


# Bumped when what the store holds changes shape: a store written by another version is loaded again, whole.
FORMAT = "2"


@dataclass
class PersonRecord:
    """One person as the refresh writes them."""

    person_id: str
    document: dict  # traits, trait_sources, computed_traits, segments, relationships
    identifiers: list[dict]  # {"type", "id", "source_id", "created_at"}
    events: list[tuple[int, str, dict]]  # (occurred_at in µs since the epoch, event id, item), any order


@dataclass
class LiveEvent:
    """One acknowledged message in the recent-event log."""

    message_id: str
    ts: int  # event time, µs since the epoch
    received_at: int  # µs since the epoch
    item: dict  # the Profile API's event item
    identifiers: list[tuple[str, str]] = field(default_factory=list)  # normalized (type, value)


@dataclass
class EventPage:
    items: list[dict]
    last: tuple[int, str] | None  # the key of the last item, for the next page


class StoreWriter(ABC):
    """The writes of one refresh: applied together (SQLite: one transaction)."""

    @abstractmethod
    def put(self, persons: Iterable[PersonRecord]) -> None:
        """Replace these persons whole (document, identifiers, events)."""

    @abstractmethod
    def delete(self, person_ids: Iterable[str]) -> None:
        """Forget these persons (merged away, gone)."""

    @abstractmethod
    def set_meta(self, values: dict[str, str]) -> None: ...


class OnlineStore(ABC):
    """The online store: reads for the API, writes for the refresh, appends for the collector."""

    kind: str = ""

    # --- reads (the Profile API) ---
    @abstractmethod
    def person_of(self, identifier_type: str, value: str) -> str | None:
        """The person holding a normalized identifier, as of the last refresh."""

    @abstractmethod
    def person(self, person_id: str) -> dict | None:
        """The person's document."""

    @abstractmethod
    def identifiers(self, person_id: str) -> list[dict]:
        """The person's identifiers, sorted by type then value."""

    @abstractmethod
    def events(self, person_id: str, before: tuple[int, str] | None, limit: int) -> list[tuple[int, str, dict]]:
        """Refreshed events of a person, newest first, strictly before `before` (time, id) when given."""

    @abstractmethod
    def live_events(self, identifiers: list[tuple[str, str]], before: tuple[int, str] | None, limit: int) -> list[tuple[int, str, dict]]:
        """Messages of the recent-event log carrying any of `identifiers`, newest first, each once."""

    # --- writes ---
    @abstractmethod
    @contextmanager
    def writer(self, full: bool = False) -> Iterator[StoreWriter]:
        """Writes of one refresh; `full` starts from an empty store (readers keep the old content until done)."""

    @abstractmethod
    def meta(self) -> dict[str, str]:
        """Bookkeeping: the warehouse batch and segment time read up to, the configuration digest, the format."""

    @abstractmethod
    def persons_count(self) -> int: ...

    @abstractmethod
    def append_live(self, events: list[LiveEvent]) -> None:
        """Add acknowledged messages to the recent-event log (the collector)."""

    @abstractmethod
    def live_message_ids(self) -> list[str]:
        """Message ids in the recent-event log."""

    @abstractmethod
    def drop_live(self, message_ids: Iterable[str], received_before: int | None = None) -> int:
        """Remove messages the warehouse now holds, and any received before `received_before` (µs)."""

    # --- erasure ---
    @abstractmethod
    def erase(self, person_ids: set[str], identifiers: set[tuple[str, str]], needles: list[str]) -> dict[str, int]:
        """Delete the persons, their identifiers and events, every live message carrying one of `identifiers`,
        and every document, event or live message whose text holds one of `needles` (lower-case: spellings
        long enough to be mentions, and shorter ones as whole JSON strings); leave no byte of them in the
        store's files, and forget the bookkeeping so the next refresh loads the store whole. Counts per part."""

    @abstractmethod
    def suppress(self, hashes: Iterable[str]) -> None:
        """Remember erased identifiers (salted hashes, as cdp.suppressions holds them): the collector's feed
        keeps their messages out of the recent-event log from then on."""

    @abstractmethod
    def suppressed(self) -> set[str]: ...

    @abstractmethod
    def close(self) -> None: ...

    def describe(self) -> str:
        return self.kind
