"""The tracking plan (`config/tracking_plan.yaml`) and the part of the events suite it generates.

The suite in expectations/events.json is what validation reads; the plan is the friendlier way to write
that part of it. `sync_events_suite` rewrites the plan's part (property types and required properties in
`meta.typed_properties`, and under `strict` an `unknown_event` expectation) and keeps every other
expectation as it is.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path


from cdp_assets.config import COLUMN_TYPES, ConfigError, read_config

UNKNOWN_EVENT = "unknown_event"


@dataclass(frozen=True)
class TrackingPlan:
    strict: bool
    events: dict[str, dict[str, dict]]  # event -> property -> {type, required}


def load_tracking_plan(path: Path) -> TrackingPlan:
    document = read_config(path)
    events = document.get("events") or {}
    if not isinstance(events, dict):
        raise ConfigError(f"{path}: events: expected a mapping of event name -> properties")
    for event, properties in events.items():
        for name, spec in (properties or {}).items():
            where = f"{path}: events.{event}.{name}"
            if not isinstance(spec, dict) or spec.get("type") not in COLUMN_TYPES:
                raise ConfigError(f"{where}: expected {{type: one of {sorted(COLUMN_TYPES)}, required: true|false}}")
            if set(spec) - {"type", "required"}:
                raise ConfigError(f"{where}: unknown field(s) {sorted(set(spec) - {'type', 'required'})}")
    return TrackingPlan(bool(document.get("strict", False)), {e: dict(p or {}) for e, p in events.items()})


def sync_events_suite(plan: TrackingPlan, suite: dict) -> dict:
    """The events suite with the plan's part regenerated."""
    suite = copy.deepcopy(suite)
    suite.setdefault("meta", {})["typed_properties"] = [
        {"event": event, "property": name, "type": spec["type"], **({"required": True} if spec.get("required") else {})}
        for event, properties in plan.events.items()
        for name, spec in properties.items()
    ]
    suite["expectations"] = [e for e in suite["expectations"] if e.get("meta", {}).get("reason") != UNKNOWN_EVENT]
    if plan.strict:
        suite["expectations"].append(
            {
                "type": "expect_column_values_to_be_in_set",
                "kwargs": {"column": "event_name", "value_set": sorted(plan.events),
                           "row_condition": 'event_type=="track"', "condition_parser": "pandas"},
                "meta": {"reason": UNKNOWN_EVENT, "source": "config/tracking_plan.yaml"},
            }
        )
    return suite
