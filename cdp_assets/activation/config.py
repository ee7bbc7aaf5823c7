"""`config/destinations.yaml`: where segment changes and events are delivered."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


from cdp_assets.config import ConfigError, read_config

KINDS = ("http", "file", "postgres")


@dataclass(frozen=True)
class Destination:
    name: str
    kind: str
    segments: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    fields: dict[str, str] = field(default_factory=dict)  # payload field -> profile column
    hash_identifiers: bool = False
    url_env: str = ""
    secret_env: str = ""
    batch_size: int = 50       # items per POST ({"batch": [...]}); 1 for destinations that take one at a time
    max_attempts: int = 8      # refusals of an item (a 4xx about it) before it is dead-lettered
    timeout_s: float = 10.0    # per request
    outage_backoff_s: float = 60.0  # after a run finds the destination away: wait, doubling per outage (max 30 min)
    format: str = "csv"
    dsn_env: str = ""
    table: str = ""


def load_destinations(path: Path) -> dict[str, Destination]:
    if not path.exists():
        return {}
    document = read_config(path)
    destinations = {}
    known = set(Destination.__dataclass_fields__) - {"name"}
    for name, entry in (document.get("destinations") or {}).items():
        where = f"{path}: destinations.{name}"
        entry = dict(entry or {})
        if set(entry) - known:
            raise ConfigError(f"{where}: unknown field(s) {sorted(set(entry) - known)}")
        if entry.get("kind") not in KINDS:
            raise ConfigError(f"{where}.kind: {entry.get('kind')!r} is not one of {list(KINDS)}")
        required = {"http": ("url_env",), "file": ("segments",), "postgres": ("dsn_env", "table", "segments")}[entry["kind"]]
        for needed in required:
            if not entry.get(needed):
                raise ConfigError(f"{where}.{needed}: a {entry['kind']} destination needs it")
        for number, minimum in (("batch_size", 1), ("max_attempts", 1), ("timeout_s", 0.001), ("outage_backoff_s", 0)):
            value = entry.get(number, minimum)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
                raise ConfigError(f"{where}.{number}: {value!r} is not a number >= {minimum}")
        if entry.get("format", "csv") not in ("csv", "parquet"):
            raise ConfigError(f"{where}.format: {entry['format']!r} is not csv or parquet")
        for key in ("segments", "events"):
            entry[key] = tuple(entry.get(key) or ())
        entry["fields"] = dict(entry.get("fields") or {})
        destinations[name] = Destination(name=name, **entry)
    return destinations


def unknown_segments(destination: Destination, known: set[str]) -> list[str]:
    """Segments a destination names that no `config/segments/*.yaml` defines (a typo would otherwise
    quietly deliver nothing)."""
    return [segment for segment in destination.segments if segment not in known]
