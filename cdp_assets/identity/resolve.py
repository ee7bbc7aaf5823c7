"""Persons (OneID) from the identity graph: which identifiers are one person, and each person's stable id.

Who is who is a pure function of this run's identifiers, edges and rules, never of earlier runs: an
incremental run equals a full rebuild, whatever order records arrived in or how runs were split. Earlier
runs only decide the names: a person keeps its id, a merge keeps the oldest id, a split part gets a new one.

The rules, each in one place:
- blocked values (`IdentityRules.blocked`, applied in `_nodes`) are no identifier at all: no person, no link;
- a shared identifier (`_without_shared`) keeps a person of its own but links nothing;
- limits (`_within_limits`, in the order of `_strongest_first`) refuse a union that would give a person
  more identifiers of a type than its limit; components within every limit skip that Python step;
- ids (`_person_ids`): survivorship across runs, and `_new_ids` for persons never seen before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import polars as pl
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

from cdp_assets.identity.rules import IdentityRules

TIME = pl.Datetime("us")
IDENTIFIERS_SCHEMA = {"identifier_type": pl.String, "identifier_value": pl.String, "first_seen_at": TIME}
EDGES_SCHEMA = {"left_type": pl.String, "left_value": pl.String, "right_type": pl.String, "right_value": pl.String,
                "first_seen_at": TIME, "last_seen_at": TIME}
ID_MAP_SCHEMA = {"identifier_type": pl.String, "identifier_value": pl.String, "person_id": pl.String}
PERSONS_SCHEMA = {"person_id": pl.String, "created_at": TIME}
MERGES_SCHEMA = {"from_person_id": pl.String, "to_person_id": pl.String, "reason": pl.String, "at": TIME}
_KEY = ["identifier_type", "identifier_value"]


@dataclass(frozen=True)
class PreviousIdentity:
    """The last run's result: `id_map` (identifier_type, identifier_value, person_id) and `persons`
    (person_id, created_at)."""

    id_map: pl.DataFrame
    persons: pl.DataFrame


@dataclass(frozen=True)
class Resolution:
    id_map: pl.DataFrame  # identifier_type, identifier_value, person_id: every unblocked identifier once
    persons: pl.DataFrame  # person_id, created_at
    merges: pl.DataFrame  # from_person_id, to_person_id, reason ("merge" | "split"), at


def resolve_persons(
    identifiers: pl.DataFrame,
    edges: pl.DataFrame,
    rules: IdentityRules,
    previous: PreviousIdentity | None = None,
    now: datetime | None = None,
) -> Resolution:
    """Resolve normalized `identifiers` (type, value, first_seen_at, last_seen_at) linked by `edges`
    (left_type, left_value, right_type, right_value, source, first_seen_at, last_seen_at) into persons.

    `now` (naive UTC; default: the current time) stamps merges and dates persons seen at no known time.
    """
    now = _utc_naive(now)
    identifiers, edges = identifiers.select(_shaped(IDENTIFIERS_SCHEMA)), edges.select(_shaped(EDGES_SCHEMA))
    nodes = _nodes(identifiers, edges, rules)
    links = _without_shared(_links(edges, nodes), nodes, rules)
    nodes = nodes.with_columns(component=pl.Series(_components(nodes, links), dtype=pl.Int64))
    ids, merges = _person_ids(nodes, previous, now)
    return Resolution(
        id_map=nodes.join(ids, on="component", maintain_order="left").select(_shaped(ID_MAP_SCHEMA)),
        persons=ids.select(_shaped(PERSONS_SCHEMA)).sort("person_id"),
        merges=merges,
    )


def _nodes(identifiers: pl.DataFrame, edges: pl.DataFrame, rules: IdentityRules) -> pl.DataFrame:
    """One row per unblocked identifier (also those only named by an edge), numbered `node` in (type, value)
    order, with its priority `rank`, its type's `limit`, and `anchor_order`: its position when sorted by
    first seen, then priority, then (type, value); a person's first identifier in that order is its anchor."""
    sightings = [identifiers.lazy().select(*_KEY, "first_seen_at")] + [
        edges.lazy().select(
            identifier_type=f"{end}_type", identifier_value=f"{end}_value", first_seen_at="first_seen_at"
        )
        for end in ("left", "right")
    ]
    # Collected before filtering, so that blocked values are looked up once per identifier, not per sighting.
    seen = pl.concat(sightings).group_by(_KEY).agg(pl.col("first_seen_at").min()).collect()
    usable = pl.col("identifier_value").is_not_null() & ~rules.blocked()
    nodes = seen.lazy().filter(usable).sort(_KEY).with_row_index("node").collect()
    types = nodes["identifier_type"].unique().to_list()
    per_type = pl.DataFrame(
        [(t, rules.priority(t), rules.limit(t)) for t in types],
        schema={"identifier_type": pl.String, "rank": pl.Int32, "limit": pl.Int64},
        orient="row",
    )
    nodes = nodes.join(per_type, on="identifier_type", maintain_order="left")
    return nodes.with_columns(anchor_order=_anchor_order(nodes))


def _anchor_order(nodes: pl.DataFrame) -> np.ndarray:
    """Each node's position when sorted by first seen (never seen: last), priority, then node. numpy's
    lexsort of three integer columns is ten times faster here than a multi-column polars sort."""
    never = np.iinfo(np.int64).max
    first_seen = nodes["first_seen_at"].to_physical().fill_null(never).to_numpy()
    order = np.lexsort((nodes["node"].to_numpy(), nodes["rank"].to_numpy(), first_seen))
    position = np.empty_like(order)
    position[order] = np.arange(order.size)
    return position


def _links(edges: pl.DataFrame, nodes: pl.DataFrame) -> pl.DataFrame:
    """Distinct undirected links between two different unblocked nodes (a < b), last seen when."""
    index = nodes.lazy().select(*_KEY, "node")
    return (
        edges.lazy()
        .join(index, left_on=["left_type", "left_value"], right_on=_KEY)
        .join(index, left_on=["right_type", "right_value"], right_on=_KEY, suffix="_right")
        .filter(pl.col("node") != pl.col("node_right"))
        .group_by(a=pl.min_horizontal("node", "node_right"), b=pl.max_horizontal("node", "node_right"))
        .agg(pl.col("last_seen_at").max())
        .collect()
    )


def _without_shared(links: pl.DataFrame, nodes: pl.DataFrame, rules: IdentityRules) -> pl.DataFrame:
    """`links` minus every link of a shared identifier: one linked to more persons than the threshold.

    Persons are counted by the types a person holds at most one of (limit 1, e.g. user_id): an identifier
    linked to 11 distinct user ids (or 11 crm ids) is linked to at least 11 persons. A shared identifier
    is left as a person of its own."""
    threshold = rules.shared_identifier_threshold
    if threshold is None:
        return links
    singular = nodes.filter(pl.col("limit") == 1).select(other="node", other_type="identifier_type")
    neighbours = pl.concat([links.select(node="a", other="b"), links.select(node="b", other="a")])
    shared = (
        neighbours.join(singular, on="other")
        .group_by("node", "other_type")
        .len()
        .filter(pl.col("len") > threshold)["node"]
        .unique()
    )
    return links.filter(~pl.col("a").is_in(shared.implode()) & ~pl.col("b").is_in(shared.implode()))


def _components(nodes: pl.DataFrame, links: pl.DataFrame) -> np.ndarray:
    """A person label per node: connected components, except that components breaking a limit are
    resolved link by link (`_within_limits`). Only those pay for Python; the rest is vectorised."""
    a, b = links["a"].to_numpy(), links["b"].to_numpy()
    graph = coo_array((np.ones(links.height, np.int8), (a, b)), shape=(nodes.height, nodes.height))
    count, labels = connected_components(graph, directed=False)
    component = pl.Series("component", labels)
    over_limit = (
        nodes.select("identifier_type", "limit", component)
        .group_by("component", "identifier_type")
        .agg(pl.len(), pl.col("limit").first())
        .filter(pl.col("len") > pl.col("limit"))["component"]
        .unique()
    )
    if over_limit.is_empty():
        return labels
    inside = component.is_in(over_limit.implode())
    roots = _within_limits(nodes.filter(inside), _strongest_first(links.filter(inside.gather(links["a"])), nodes))
    labels[np.fromiter(roots.keys(), np.int64)] = count + np.fromiter(roots.values(), np.int64)
    return labels


def _strongest_first(links: pl.DataFrame, nodes: pl.DataFrame) -> list[tuple[int, int]]:
    """Links in the order limits let them unite: the priority of the weaker end first (user_id–email before
    anything–anonymous_id), then the most recently seen, then the (type, value) of both ends, so that the
    outcome does not depend on row order, and a family laptop's anonymous id joins the user it was most
    recently seen with."""
    rank = nodes["rank"].to_numpy()
    ordered = links.with_columns(weaker=np.maximum(rank[links["a"].to_numpy()], rank[links["b"].to_numpy()])).sort(
        ["weaker", "last_seen_at", "a", "b"], descending=[False, True, False, False], nulls_last=True
    )
    return list(zip(ordered["a"].to_list(), ordered["b"].to_list()))


def _within_limits(members: pl.DataFrame, ordered_links: Iterable[tuple[int, int]]) -> dict[int, int]:
    """Node → root node after uniting along `ordered_links` in turn, except where the union would give a
    person more identifiers of a type than its limit: that link stays only in the edges table."""
    nodes, types, limits = (members[c].to_list() for c in ("node", "identifier_type", "limit"))
    limit = dict(zip(types, limits))
    parent = dict(zip(nodes, nodes))
    size = dict.fromkeys(nodes, 1)
    held = {node: {t: 1} for node, t, n in zip(nodes, types, limits) if n is not None}  # limited types only

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = node = parent[parent[node]]
        return node

    def fits(ra: int, rb: int) -> bool:
        held_a, held_b = held.get(ra), held.get(rb)
        return not (held_a and held_b) or all(held_a.get(t, 0) + n <= limit[t] for t, n in held_b.items())

    for a, b in ordered_links:
        ra, rb = root(a), root(b)
        if ra == rb or not fits(ra, rb):
            continue
        if size[ra] < size[rb]:
            ra, rb = rb, ra
        parent[rb] = ra
        size[ra] += size.pop(rb)
        if joining := held.pop(rb, None):
            into = held.setdefault(ra, {})
            for t, n in joining.items():
                into[t] = into.get(t, 0) + n
    return {node: root(node) for node in nodes}


def _person_ids(
    nodes: pl.DataFrame, previous: PreviousIdentity | None, now: datetime
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(component, person_id, created_at) per component, and the merge and split rows against `previous`.

    Each previous person survives in one component: the one holding most of its identifiers (tie: the one
    holding the earliest of them in anchor order). Where several survive, the oldest (created_at, then id)
    keeps its id and each other one is a "merge" into it; where none survives, the person is new. Every
    other component holding identifiers of a previous person is a "split" from it (also when that part
    joins another existing person). A previous person none of whose identifiers remain simply ends."""
    held = _held(nodes, previous)
    survivors = held.sort("person_id", "n", "first", descending=[False, True, False]).unique(
        "person_id", keep="first", maintain_order=True
    )
    created = previous.persons.select(_shaped(PERSONS_SCHEMA)) if previous else pl.DataFrame(schema=PERSONS_SCHEMA)
    kept = (
        survivors.join(created, on="person_id", how="left")
        .with_columns(pl.col("created_at").fill_null(now))  # a previous person without a persons row
        .sort("created_at", "person_id")
        .unique("component", keep="first", maintain_order=True)
        .select("component", *PERSONS_SCHEMA)
    )
    taken = set(created["person_id"].to_list()) | set(survivors["person_id"].to_list())
    ids = _with_new_ids(_anchors(nodes), kept, taken, now)
    merges = survivors.join(kept, on="component", suffix="_to").filter(pl.col("person_id") != pl.col("person_id_to"))
    splits = held.join(survivors, on=["person_id", "component"], how="anti").join(ids, on="component", suffix="_to")
    log = pl.concat([
        merges.select(from_person_id="person_id", to_person_id="person_id_to", reason=pl.lit("merge")),
        splits.select(from_person_id="person_id", to_person_id="person_id_to", reason=pl.lit("split")),
    ]).with_columns(at=pl.lit(now, TIME))
    return ids, log.select(_shaped(MERGES_SCHEMA)).sort("reason", "from_person_id", "to_person_id")


def _anchors(nodes: pl.DataFrame) -> pl.DataFrame:
    """Each component's anchor (its first identifier in anchor order), whose first_seen_at is the component's."""
    first = pl.col("anchor_order") == pl.col("anchor_order").min().over("component")
    return nodes.filter(first).select("component", "anchor_order", *_KEY, "first_seen_at")


def _with_new_ids(anchors: pl.DataFrame, kept: pl.DataFrame, taken: set[str], now: datetime) -> pl.DataFrame:
    """`kept` plus a new person for every other component, dated from its first sighting."""
    fresh = anchors.join(kept, on="component", how="anti").sort("anchor_order")
    keys = fresh.select(pl.concat_str(_KEY, separator=":")).to_series().to_list()
    new = fresh.select(
        "component",
        person_id=pl.Series(_new_ids(keys, taken), dtype=pl.String),
        created_at=pl.coalesce("first_seen_at", pl.lit(now, TIME)),
    )
    return pl.concat([kept, new])


def _held(nodes: pl.DataFrame, previous: PreviousIdentity | None) -> pl.DataFrame:
    """(person_id, component, n, first): how many identifiers of each previous person a component holds,
    and the earliest of them in anchor order."""
    if previous is None:
        return pl.DataFrame(schema={"person_id": pl.String, "component": pl.Int64, "n": pl.UInt32, "first": pl.Int64})
    return (
        nodes.lazy()
        .join(previous.id_map.lazy().select(*_KEY, "person_id"), on=_KEY)
        .group_by("person_id", "component")
        .agg(n=pl.len(), first=pl.col("anchor_order").min())
        .collect()
    )


def _new_ids(keys: list[str], taken: set[str]) -> list[str]:
    """"p_" + sha256("type:value")[:16] of each new person's anchor, so a full rebuild names persons the same
    way every time; where that id is taken (an earlier person's), "#1", "#2", ... is appended to the key."""
    ids = [_hashed(key) for key in keys]
    collided = [index for index, person_id in enumerate(ids) if person_id in taken]
    taken.update(ids)
    for index in collided:
        attempt = 1
        while (person_id := _hashed(f"{keys[index]}#{attempt}")) in taken:
            attempt += 1
        ids[index] = person_id
        taken.add(person_id)
    return ids


def _hashed(key: str) -> str:
    return "p_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _shaped(schema: dict[str, pl.DataType]) -> list[pl.Expr]:
    return [pl.col(name).cast(dtype) for name, dtype in schema.items()]


def _utc_naive(moment: datetime | None) -> datetime:
    moment = moment or datetime.now(timezone.utc)
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment
