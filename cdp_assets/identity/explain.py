"""Why two identifiers are (or are not) one person: the chain of edges between them, and for a link the
resolution skipped, which rule skipped it. Read from the warehouse, so it explains what was decided."""

from __future__ import annotations

from collections import deque

import duckdb

from cdp_assets.identity.normalize import normalize_identifier
from cdp_assets.identity.rules import IdentityRules

MAX_HOPS = 12

Identifier = tuple[str, str]


def explain_link(con: duckdb.DuckDBPyConnection, a: Identifier, b: Identifier, rules: IdentityRules) -> list[str]:
    """Readable lines: the persons of `a` and `b`, the shortest chain of recorded edges joining them
    (each edge with its source), and for a link between two different persons the rule that kept it out."""
    a, b = (_normalized(node, rules) for node in (a, b))
    persons = {node: _person(con, node) for node in (a, b)}
    lines = [f"{_name(n)} → {persons[n] or 'no person (blocked, or never seen)'}" for n in (a, b)]
    path = _shortest_path(con, a, b)
    if path is None:
        lines.append(f"not joined: no chain of at most {MAX_HOPS} recorded edges connects them")
        return lines
    verdict = "one person" if persons[a] and persons[a] == persons[b] else "not joined"
    lines.append(f"{verdict}: chain of {len(path)} edge(s)")
    for left, right, source in path:
        held = _person(con, left), _person(con, right)
        note = "" if held[0] and held[0] == held[1] else f"   ✗ not applied: {_skipped_because(con, left, right, held, rules)}"
        lines.append(f"  {_name(left)} — {_name(right)}   (seen in {source}){note}")
    return lines


def _name(node: Identifier) -> str:
    return f"{node[0]}:{node[1]}"


def _normalized(node: Identifier, rules: IdentityRules) -> Identifier:
    """The identifier as the identity stage stores it (email lower-cased, phone in E.164...)."""
    return node[0], normalize_identifier(node[0], node[1], rules.default_phone_region) or node[1]


def _person(con, node: Identifier) -> str | None:
    row = con.execute(
        "SELECT person_id FROM cdp.id_map WHERE identifier_type = ? AND identifier_value = ?", list(node)
    ).fetchone()
    return row[0] if row else None


def _neighbours(con, frontier: list[Identifier]) -> list[tuple[Identifier, Identifier, str]]:
    con.execute("CREATE OR REPLACE TEMP TABLE _frontier (t VARCHAR, v VARCHAR)")
    con.executemany("INSERT INTO _frontier VALUES (?, ?)", frontier)
    rows = con.execute(
        """SELECT left_type, left_value, right_type, right_value, string_agg(DISTINCT source, ', ')
           FROM cdp.identity_edges e JOIN _frontier f
             ON (f.t, f.v) = (e.left_type, e.left_value) OR (f.t, f.v) = (e.right_type, e.right_value)
           GROUP BY ALL"""
    ).fetchall()
    return [((lt, lv), (rt, rv), source) for lt, lv, rt, rv, source in rows]


def _shortest_path(con, a: Identifier, b: Identifier) -> list[tuple[Identifier, Identifier, str]] | None:
    """Breadth-first over cdp.identity_edges (applied or not), one SQL query per hop."""
    came_from: dict[Identifier, tuple[Identifier, str] | None] = {a: None}
    frontier = deque([a])
    for _ in range(MAX_HOPS):
        if b in came_from or not frontier:
            break
        step = list(frontier)
        frontier.clear()
        for left, right, source in _neighbours(con, step):
            for here, there in ((left, right), (right, left)):
                if here in came_from and there not in came_from:
                    came_from[there] = (here, source)
                    frontier.append(there)
    if b not in came_from:
        return None
    path, node = [], b
    while came_from[node] is not None:
        previous, source = came_from[node]
        path.append((previous, node, source))
        node = previous
    return list(reversed(path))


def _skipped_because(con, left: Identifier, right: Identifier, persons, rules: IdentityRules) -> str:
    for node, person in ((left, persons[0]), (right, persons[1])):
        if person is None:
            return f"{_name(node)} is blocked or has no person"
    threshold = rules.shared_identifier_threshold
    limited = [rule.type for rule in rules.identifiers if rule.limit == 1]
    for node in (left, right):
        linked = con.execute(
            """SELECT count(DISTINCT (other_type, other_value)) FROM (
                   SELECT right_type AS other_type, right_value AS other_value FROM cdp.identity_edges
                   WHERE left_type = ? AND left_value = ?
                   UNION ALL
                   SELECT left_type, left_value FROM cdp.identity_edges WHERE right_type = ? AND right_value = ?)
               WHERE list_contains(?, other_type)""",
            [*node, *node, limited],
        ).fetchone()[0]
        if threshold is not None and linked > threshold:
            return f"{_name(node)} is shared: linked to {linked} identifiers of a limit-1 type (threshold {threshold})"
    counts = con.execute(
        "SELECT identifier_type, count(*) FROM cdp.id_map WHERE person_id IN (?, ?) GROUP BY 1", list(persons)
    ).fetchall()
    for identifier_type, count in sorted(counts, key=lambda row: rules.priority(row[0])):
        limit = rules.limit(identifier_type)
        if limit is not None and count > limit:
            return f"joining {persons[0]} and {persons[1]} would give one person {count} {identifier_type}s (limit {limit})"
    return "a stronger or more recent link of the same identifier won under the limits (see README: Limits)"
