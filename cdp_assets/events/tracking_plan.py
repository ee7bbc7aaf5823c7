"""The tracking plan (`config/tracking_plan.yaml`) and the part of the events suite it generates.

The suite in expectations/events.json is what validation reads; the plan is the friendlier way to write
that part of it. `sync_events_suite` rewrites the plan's part (property types and required properties in
`meta.typed_properties`, and under `strict` an `unknown_event` expectation) and keeps every other
expectation as it is.

A violation of the plan is flagged and the event kept (`on_violation: flag`, the default, as Segment
Protocols and RudderStack tracking plans do) or the event quarantined (`on_violation: quarantine`), plan-wide
or per event. The choice is written beside each rule in the suite (`on_violation`), so the suite stays the
one thing validation reads.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path


from cdp_assets.config import COLUMN_TYPES, ConfigError, read_config

UNKNOWN_EVENT = "unknown_event"
ON_VIOLATION = ("flag", "quarantine")


@dataclass(frozen=True)
class TrackingPlan:
    strict: bool
    events: dict[str, dict[str, dict]]  # event -> property -> {type, required}
    on_violation: str = "flag"  # plan-wide
    event_on_violation: dict[str, str] = field(default_factory=dict)  # event -> flag | quarantine, where set

    def blocking(self, event: str | None = None) -> str:
        return self.event_on_violation.get(event, self.on_violation) if event else self.on_violation


def _on_violation(where: str, value) -> str:
    if value not in ON_VIOLATION:
        raise ConfigError(f"{where}: on_violation {value!r} is not one of {list(ON_VIOLATION)}")
    return value


def load_tracking_plan(path: Path) -> TrackingPlan:
    document = read_config(path)
    events = document.get("events") or {}
    if not isinstance(events, dict):
        raise ConfigError(f"{path}: events: expected a mapping of event name -> properties")
    plan_wide = _on_violation(f"{path}: on_violation", document.get("on_violation", "flag"))
    per_event, plan_events = {}, {}
    for event, properties in events.items():
        properties = dict(properties or {})
        if "on_violation" in properties and not isinstance(properties["on_violation"], dict):
            per_event[event] = _on_violation(f"{path}: events.{event}.on_violation", properties.pop("on_violation"))
        for name, spec in properties.items():
            where = f"{path}: events.{event}.{name}"
            if not isinstance(spec, dict) or spec.get("type") not in COLUMN_TYPES:
                raise ConfigError(f"{where}: expected {{type: one of {sorted(COLUMN_TYPES)}, required: true|false}}")
            if set(spec) - {"type", "required"}:
                raise ConfigError(f"{where}: unknown field(s) {sorted(set(spec) - {'type', 'required'})}")
        plan_events[event] = properties
    return TrackingPlan(bool(document.get("strict", False)), plan_events, plan_wide, per_event)


def sync_events_suite(plan: TrackingPlan, suite: dict) -> dict:
    """The events suite with the plan's part regenerated."""
    suite = copy.deepcopy(suite)
    suite.setdefault("meta", {})["typed_properties"] = [
        {"event": event, "property": name, "type": spec["type"], **({"required": True} if spec.get("required") else {}),
         "on_violation": plan.blocking(event)}
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
                "meta": {"reason": UNKNOWN_EVENT, "source": "config/tracking_plan.yaml", "on_violation": plan.blocking()},
            }
        )
    return suite
