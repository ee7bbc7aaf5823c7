"""Which persons a segment's membership can have changed for since its last evaluation (the candidates).

A segment's rule reads a person's profile, their events and the members of the segments it reuses, and the
clock through its time windows. So between two evaluations (at t0, then at t) a person's membership can only
change when:
- their profile row changed (cdp.profiles stamps changed rows with the batch that changed them: traits,
  computed traits, clock-driven ones such as days-since and RFM ranks included), or they vanished;
- their events or identifiers changed (core.affected_persons, per batch);
- an event a windowed condition counts crossed a window's edge: `within: W` counts events in [now - W, now],
  so events with occurred_at in [t0 - W, t - W] left and those in [t0, t] (dated ahead) entered; a
  `not_followed_by` waits until `now - W` for the follow-up, so events in [t0 - W, t - W] became decidable;
- a profile datetime compared with `within_last` / `not_within_last` crossed the same kind of edge;
- their membership of a reused segment changed after t0.
Evaluating the rule for these persons only and diffing their membership gives exactly what a full evaluation
gives (property-tested in tests/test_segments_incremental.py). What the candidates cannot track (a relative
time test on an event property) makes the evaluation full.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cdp_assets.segments.compiler import (
    AllOf,
    AnyOf,
    EventCondition,
    Not,
    PropertyCondition,
    SegmentDefinition,
    SegmentRef,
    TraitCondition,
    parse_duration,
)

RELATIVE = ("within_last", "not_within_last")


@dataclass
class ClockWindows:
    """What moves with the clock in one rule."""

    events: set[tuple[str, timedelta]] = field(default_factory=set)  # (event name, window)
    traits: set[tuple[str, timedelta]] = field(default_factory=set)  # (profile column, window)
    segments: set[str] = field(default_factory=set)  # reused segments
    exact: bool = True  # False: something moves that the candidates do not follow


def clock_windows(node, found: ClockWindows | None = None) -> ClockWindows:
    found = found if found is not None else ClockWindows()
    if isinstance(node, (AllOf, AnyOf)):
        for child in node.conditions:
            clock_windows(child, found)
    elif isinstance(node, Not):
        clock_windows(node.condition, found)
    elif isinstance(node, SegmentRef):
        found.segments.add(node.name)
    elif isinstance(node, TraitCondition):
        if node.test.op in RELATIVE:
            found.traits.add((node.column, parse_duration(node.test.values[0].value)))
    elif isinstance(node, EventCondition):
        if node.within is not None:
            found.events.add((node.event, node.within.delta))
        if node.not_followed_by is not None:
            found.events.add((node.event, node.not_followed_by.within.delta))
            found.exact &= not _relative_property_test(node.not_followed_by.where)
        found.exact &= not _relative_property_test(node.where)
    return found


def _relative_property_test(tree) -> bool:
    if tree is None:
        return False
    if isinstance(tree, (AllOf, AnyOf)):
        return any(_relative_property_test(child) for child in tree.conditions)
    if isinstance(tree, Not):
        return _relative_property_test(tree.condition)
    return isinstance(tree, PropertyCondition) and tree.test.op in RELATIVE


def definition_digest(definition: SegmentDefinition) -> str:
    """What a stored membership was evaluated under: the rule as parsed."""
    return hashlib.sha256(repr((definition.name, definition.where)).encode()).hexdigest()[:16]


def candidates_sql(name: str, windows: ClockWindows, since_batch: int, t0: datetime, t: datetime) -> tuple[str, list]:
    """SELECT person_id of every candidate (see the module docstring), with its parameters."""
    parts = [
        "SELECT person_id FROM cdp.profiles WHERE _batch_id > ?",
        "SELECT person_id FROM core.affected_persons WHERE _batch_id > ?",
        "SELECT person_id FROM cdp.segment_membership WHERE segment = ? "
        "AND person_id NOT IN (SELECT person_id FROM cdp.profiles)",
    ]
    params: list = [since_batch, since_batch, name]
    for event, window in sorted(windows.events):
        parts.append("SELECT person_id FROM core.person_events WHERE event_name = ? "
                     "AND (occurred_at BETWEEN ? AND ? OR occurred_at BETWEEN ? AND ?)")
        params += [event, t0 - window, t - window, t0, t]
    for column, window in sorted(windows.traits):
        quoted = '"' + column.replace('"', '""') + '"'
        parts.append(f"SELECT person_id FROM cdp.profiles WHERE {quoted} BETWEEN ? AND ? OR {quoted} BETWEEN ? AND ?")
        params += [t0 - window, t - window, t0, t]
    if windows.segments:
        parts.append("SELECT person_id FROM cdp.segment_changes WHERE segment IN (SELECT unnest(?::VARCHAR[])) AND changed_at >= ?")
        params += [sorted(windows.segments), t0]
    return " UNION ".join(parts), params
