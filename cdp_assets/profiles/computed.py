"""Computed traits declared in `config/traits.yaml` (`computed:` and `rfm:`), checked here, compiled by dbt.

The check happens in Python so a mistake is a clear error naming the file and the field before dbt runs;
the checked declarations reach dbt as the `computed_traits` and `rfm` vars, and the `computed_aggregate` macro
turns each into SQL (models `person_computed_base` and `person_computed_traits`).
"""

from __future__ import annotations

import re
from pathlib import Path

from cdp_assets.config import ConfigError, read_config

# What a trait can aggregate over: the person's events or purchases (API orders and store purchases), with
# the columns each offers and their types. Any other `property` of events is read from `properties`.
OVER = {
    "events": {"event_name": "string", "event_type": "string", "source": "string", "occurred_at": "timestamp"},
    "purchases": {"purchase_id": "string", "channel": "string", "amount": "number", "purchased_at": "timestamp",
                  "items": "list"},
}
PROPERTY_TYPES = {"string", "number", "timestamp"}
# aggregate -> (needs a property, the result's type: "property" = the property's own type)
AGGREGATES = {
    "count": (False, "number"),
    "sum": (True, "number"),
    "min": (True, "property"),
    "max": (True, "property"),
    "first": (True, "property"),  # the value of the earliest row that has one
    "last": (True, "property"),  # the value of the latest row that has one
    "distinct_count": (True, "number"),
    "distinct_values": (True, "list"),  # sorted; a list property (purchase items) is flattened
    "most_frequent": (True, "property"),  # ties: the smallest value
    "days_since_first": (False, "number"),
    "days_since_last": (False, "number"),
}
NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
TEXT = re.compile(r"^[^'\"\\\n]+$")  # event and property names: anything but quotes, backslashes, newlines
KEYS = {"aggregate", "over", "event", "property", "type", "within_days"}
CONTRACT_TRAITS = ("event_count", "order_count", "total_revenue")  # profile columns the contract names
RESERVED = {"person_id", "email", "phone", "first_seen_at", "last_seen_at", "person_created_at"}  # profile columns
RFM_KEYS = ("recency", "frequency", "monetary")
RFM_COLUMNS = (*(f"rfm_{key}" for key in RFM_KEYS), "rfm_segment")  # what `rfm:` adds (person_computed_traits)


def load_computed_traits(path: Path) -> dict:
    """The dbt vars `computed_traits` and `rfm`: the file's `computed:` and `rfm:` as written, once checked."""
    document = read_config(path)
    entries = document.get("computed")
    if not isinstance(entries, dict) or not entries:
        raise ConfigError(f"{path}: expected a mapping `computed:` of trait name -> declaration")
    types = {str(name): _trait_type(path, str(name), spec) for name, spec in entries.items()}
    missing = [t for t in CONTRACT_TRAITS if t not in types]
    if missing:
        raise ConfigError(f"{path}: computed: profiles must have {', '.join(missing)} (the contract's columns)")
    clash = set(types) & (RESERVED | set(document.get("traits") or {}))
    if clash:
        raise ConfigError(f"{path}: computed.{sorted(clash)[0]}: already a profile column (or a trait under `traits:`)")
    return {"computed_traits": entries, "rfm": _rfm(path, document.get("rfm"), types)}


def _trait_type(path: Path, name: str, spec) -> str:
    """Check one declaration; the type of the trait it computes."""
    where = f"{path}: computed.{name}"
    if not NAME.match(name) or name.startswith("rfm_"):
        raise ConfigError(f"{where}: a trait name is lower_snake_case and does not start with rfm_")
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping like {{aggregate: count, over: events}}")
    unknown = sorted(set(spec) - KEYS)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key; expected {', '.join(sorted(KEYS))}")
    aggregate, over = spec.get("aggregate"), spec.get("over")
    if aggregate not in AGGREGATES:
        raise ConfigError(f"{where}.aggregate: {aggregate!r} is not one of {', '.join(AGGREGATES)}")
    if over not in OVER:
        raise ConfigError(f"{where}.over: {over!r} is not one of {', '.join(OVER)}")
    events = spec.get("event", [])
    events = [events] if isinstance(events, str) else events
    if not isinstance(events, list) or not all(isinstance(e, str) and TEXT.match(e) for e in events):
        raise ConfigError(f"{where}.event: expected an event name or a list of them (no quotes)")
    if events and over != "events":
        raise ConfigError(f"{where}.event: only traits over events filter by event name")
    needs_property, result = AGGREGATES[aggregate]
    prop = spec.get("property")
    if prop is None and needs_property:
        raise ConfigError(f"{where}.property: {aggregate} needs a property to aggregate")
    if prop is not None and not (isinstance(prop, str) and TEXT.match(prop)):
        raise ConfigError(f"{where}.property: expected a property name (no quotes)")
    column_type = OVER[over].get(prop) if prop else None
    if prop and column_type is None and over == "purchases":
        raise ConfigError(f"{where}.property: purchases have {', '.join(OVER['purchases'])}, not {prop!r}")
    declared = spec.get("type")
    if declared is not None and (declared not in PROPERTY_TYPES or column_type):
        raise ConfigError(f"{where}.type: set only for an event property, one of {', '.join(sorted(PROPERTY_TYPES))}")
    prop_type = (column_type or declared or ("number" if aggregate == "sum" else "string")) if prop else None
    if aggregate == "sum" and prop_type != "number":
        raise ConfigError(f"{where}.property: sum needs a number, {prop!r} is a {prop_type}")
    if prop_type == "list" and aggregate not in ("count", "distinct_values"):
        raise ConfigError(f"{where}.aggregate: {prop!r} is a list; use distinct_values or count")
    within = spec.get("within_days")
    if within is not None and (isinstance(within, bool) or not isinstance(within, int) or within <= 0):
        raise ConfigError(f"{where}.within_days: expected a whole number of days > 0, not {within!r}")
    return prop_type if result == "property" else result


def _rfm(path: Path, spec, types: dict[str, str]) -> dict | None:
    """RFM scores from three computed traits: the last purchase time, a count and an amount."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or sorted(spec) != sorted(RFM_KEYS):
        raise ConfigError(f"{path}: rfm: expected {{recency: <trait>, frequency: <trait>, monetary: <trait>}}")
    wanted = {"recency": "timestamp", "frequency": "number", "monetary": "number"}
    for key, kind in wanted.items():
        if types.get(spec[key]) != kind:
            raise ConfigError(f"{path}: rfm.{key}: expected the name of a computed trait of type {kind}")
    return dict(spec)
