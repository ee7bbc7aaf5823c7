"""Persons (OneID) from the identity graph: which identifiers are one person, and each person's stable id.

Who is who is a pure function of the identifiers, edges and rules, never of earlier runs or of row order:
an incremental run (`cdp_assets.identity.store`) equals a full rebuild. Earlier runs only decide the names:
a person keeps its id, a merge keeps the oldest id, a split part gets a new one.

The rules, each in one place:
- blocked values (`IdentityRules.blocked`, in `identity_graph`) are no identifier at all: no person, no link;
- a shared identifier (`_shared`) keeps a person of its own but links nothing;
- limits (`_within_limits`, in the order of `_strongest_first`) refuse a union that would give a person
  more identifiers of a type than its limit;
- ids (`_person_ids`): survivorship across runs, and `_new_ids` for persons never seen before.

Speed: identifiers are coded as integers once (one hash join of both edge ends at once), their types
(an Enum of the rules' types: the code is the rank), first sightings and blocked flags (one lookup per
value) read in one streaming pass, and everything after that is numpy on integer arrays:
scipy's connected components for the linked identifiers, one minimum per person for the anchors, and the
Python union-find of the limits only for the components that break a limit. No step sorts strings except
over those few components. Only new persons are hashed, all at once (polars-hash's SHA-256, in Rust).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import polars as pl
import polars_hash  # noqa: F401 (registers the `chash` expression namespace)
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

from cdp_assets.identity.rules import IdentityRules

TIME = pl.Datetime("us")
IDENTIFIERS_SCHEMA = {"identifier_type": pl.String, "identifier_value": pl.String, "first_seen_at": TIME}
EDGES_SCHEMA = {"left_type": pl.String, "left_value": pl.String, "right_type": pl.String, "right_value": pl.String,
                "first_seen_at": TIME, "last_seen_at": TIME}
PERSONS_SCHEMA = {"person_id": pl.String, "created_at": TIME}
MERGES_SCHEMA = {"from_person_id": pl.String, "to_person_id": pl.String, "reason": pl.String, "at": TIME}
_KEY = ["identifier_type", "identifier_value"]
_NEVER = np.iinfo(np.int64).max  # first seen at no known time: after every known time


@dataclass(frozen=True)
class PreviousIdentity:
    """The last run's result: `id_map` (identifier_type, identifier_value, person_id) and `persons`
    (person_id, created_at), for at least the identifiers being resolved.

    `ids_in_use(ids)` says which of some person ids earlier runs gave out; by default those in `persons`.
    An incremental run passes only the persons it touches and asks the warehouse about the others."""

    id_map: pl.DataFrame
    persons: pl.DataFrame
    ids_in_use: Callable[[list[str]], set[str]] | None = None


@dataclass(frozen=True)
class Resolution:
    id_map: pl.DataFrame  # identifier_type, identifier_value, person_id: every unblocked identifier once
    persons: pl.DataFrame  # person_id, created_at
    merges: pl.DataFrame  # from_person_id, to_person_id, reason ("merge" | "split"), at
    # identifier_type, identifier_value, component: the identifiers the kept links connect, before limits.
    # Persons never cross a component, which is what lets an incremental run re-resolve only some of them.
    components: pl.DataFrame


@dataclass(frozen=True)
class IdentityGraph:
    """Identifiers coded as integers: node i is row i of `nodes` (identifier_type, identifier_value).
    `a`/`b` are the links the rules keep (both ends usable, neither shared; one per edge
    row, so possibly repeated). A node is `usable` when it is not blocked and inside the scope."""

    nodes: pl.DataFrame
    kind: np.ndarray  # per node, its type: the rules' types in priority order, then other types present
    type_limits: np.ndarray  # per type (a `kind`), its limit (0: none)
    rank: np.ndarray  # per node, its type's priority (0: highest)
    first_seen: np.ndarray  # per node, int64 microseconds (_NEVER: unknown)
    usable: np.ndarray
    a: np.ndarray
    b: np.ndarray
    last_seen: np.ndarray  # per link, int64 microseconds (_NEVER: unknown)
    shared: np.ndarray
    reaches_outside: pl.DataFrame  # identifier_type, identifier_value: nodes outside the scope a kept link reaches


def resolve_persons(
    identifiers: pl.DataFrame,
    edges: pl.DataFrame,
    rules: IdentityRules,
    previous: PreviousIdentity | None = None,
    now: datetime | None = None,
) -> Resolution:
    """Resolve normalized `identifiers` (identifier_type, identifier_value, first_seen_at; one row per
    identifier) linked by `edges` (left_type, left_value, right_type, right_value, first_seen_at,
    last_seen_at) into persons. An identifier only named by an edge is resolved too.

    `now` (naive UTC; default: the current time) stamps merges and dates persons seen at no known time.
    """
    return resolve_graph(identity_graph(identifiers, edges, rules), previous, now)


def identity_graph(
    identifiers: pl.DataFrame, edges: pl.DataFrame, rules: IdentityRules, *, scope: bool = False
) -> IdentityGraph:
    """The coded graph. With `scope`, `identifiers` is the part being re-resolved and an edge end outside
    it only counts towards its neighbour being shared (it is resolved elsewhere); `reaches_outside` then
    lists the outside identifiers a kept link reaches, whose components belong in the scope too."""
    identifiers = identifiers.select(_shaped(IDENTIFIERS_SCHEMA))
    if identifiers["identifier_value"].has_nulls():
        identifiers = identifiers.filter(pl.col("identifier_value").is_not_null())
    edges = edges.select(_shaped(EDGES_SCHEMA))
    nodes, named, a, b, edge_first, edge_last, degree = _coded(identifiers, edges)
    ranked = [rule.type for rule in rules.identifiers]
    described = nodes.lazy().select(  # one pass over the nodes, in parallel (a lazy query streams)
        first_seen=pl.col("first_seen_at").to_physical().fill_null(_NEVER),
        blocked=rules.blocked(),
        type_code=pl.col("identifier_type").cast(pl.Enum(ranked), strict=False).to_physical(),  # null: no rule
    ).collect()
    n = nodes.height
    every = not a.size or min(a.min(), b.min()) >= 0  # every edge end names a node (the common case: no masks)
    known = None if every else (a >= 0) & (b >= 0)

    first_seen = described["first_seen"].to_numpy(writable=True)
    for ends in (a, b):  # an identifier was first seen at its earliest sighting, on a record or in an edge
        if every:
            np.minimum.at(first_seen, ends, edge_first)
        else:
            np.minimum.at(first_seen, ends[ends >= 0], edge_first[ends >= 0])

    kind, types = _kinds(nodes["identifier_type"], described["type_code"], ranked)
    type_limits = np.array([rules.limit(t) or 0 for t in types], np.int64)
    rank = kind if len(types) == len(ranked) else np.minimum(kind, len(ranked))  # types without a rule rank last
    usable = ~described["blocked"].to_numpy()

    # One mask, one gather: links with both ends known and usable, not to themselves.
    keep = a != b if every else known & (a != b)
    if n and not usable.all():
        keep &= usable[a] & usable[b]  # (where an end is -1 this reads the last node; `keep` is False there)
    if not keep.all():
        a, b, degree = a[keep], b[keep], None
    shared = _shared(a, b, kind, type_limits, n, rules.shared_identifier_threshold, degree)
    if shared.any():
        unshared = ~shared[a] & ~shared[b]
        keep[keep] = unshared
        a, b = a[unshared], b[unshared]
    last_seen = edge_last if keep.all() else edge_last[keep]

    reached = np.zeros(0, np.int64)
    if scope and named < n:
        # A kept link across the scope's border: the other component belongs in the scope. (An outside end
        # counted as shared here is shared: it has at least this many links.)
        inside = np.arange(n) < named
        crossing = inside[a] != inside[b]
        reached = np.unique(np.where(inside[a], b, a)[crossing])
        keep = inside[a] & inside[b]
        a, b, last_seen = a[keep], b[keep], last_seen[keep]
        usable = usable & inside
    return IdentityGraph(
        nodes=nodes.select(_KEY), kind=kind, type_limits=type_limits, rank=rank,
        first_seen=first_seen, usable=usable, a=a, b=b, last_seen=last_seen,
        shared=shared, reaches_outside=nodes[reached].select(_KEY),
    )


def resolve_graph(graph: IdentityGraph, previous: PreviousIdentity | None = None, now: datetime | None = None) -> Resolution:
    now = _utc_naive(now)
    n = graph.nodes.height
    count, component = _components(n, graph.a, graph.b)
    person = _within_limits_where_needed(graph, count, component)
    everyone = bool(graph.usable.all())
    nodes = np.arange(n) if everyone else np.flatnonzero(graph.usable)
    if not everyone:
        person, component = person[nodes], component[nodes]
    anchors = _anchors(graph, nodes, person)
    ids, merges = _person_ids(graph, nodes, person, anchors, previous, now)
    label = np.zeros(int(person.max(initial=-1)) + 1, np.uint32)  # polars' own index type: no conversion
    label[ids["person"].to_numpy()] = np.arange(ids.height, dtype=np.uint32)
    resolved = graph.nodes if everyone else graph.nodes[nodes]
    person_id = pl.lit(ids["person_id"].rechunk()).gather(pl.Series(label[person]))  # one chunk: a fast gather
    return Resolution(
        id_map=resolved.lazy().with_columns(person_id=person_id).collect(),  # streams: gathers on every core
        persons=ids.select(_shaped(PERSONS_SCHEMA)),
        merges=merges,
        components=resolved.with_columns(component=pl.Series(component, dtype=pl.Int64)),
    )


def _coded(identifiers: pl.DataFrame, edges: pl.DataFrame):
    """(nodes, named, a, b, first_seen, last_seen, degree): the `named` identifiers, then those only edges
    name, as rows (identifier_type, identifier_value, first_seen_at); each edge's end nodes (-1: no
    identifier) and times in microseconds (_NEVER where unknown), in edge row order; per node, the edge ends
    naming it (None when some end names no identifier row)."""
    nodes, ends = identifiers, _code_ends(identifiers, edges)
    degree = None if ends is None else _degree(ends, nodes.height)
    if degree is None or _listed_twice(identifiers, degree > 0):  # take each identifier's earliest sighting
        nodes = identifiers.group_by(_KEY, maintain_order=True).agg(pl.col("first_seen_at").min())
        ends = _code_ends(nodes, edges)
        degree = _degree(ends, nodes.height)
    named = nodes.height
    if ends.size and ends.min() < 0:  # ends no identifier row names: new nodes after the others, in edge order (left ends first)
        degree = None
        missing = np.flatnonzero(ends < 0)
        keys = _stacked_ends(edges.lazy()).collect()[missing]
        new = keys.drop_nulls().unique(maintain_order=True)
        nodes = pl.concat([nodes, new.with_columns(first_seen_at=pl.lit(None, TIME))])
        filled = (
            keys.lazy().with_columns(end=pl.Series(missing))
            .join(new.lazy().with_row_index("node", offset=named), on=_KEY, how="left")
            .select("end", "node")
            .collect()
        )
        ends[filled["end"].to_numpy()] = filled["node"].fill_null(-1).to_numpy()
    m = edges.height
    return (
        nodes,
        named,
        ends[:m],
        ends[m:],
        edges["first_seen_at"].to_physical().fill_null(_NEVER).to_numpy(),
        edges["last_seen_at"].to_physical().fill_null(_NEVER).to_numpy(),
        degree,
    )


def _stacked_ends(edges: pl.LazyFrame) -> pl.LazyFrame:
    """(identifier_type, identifier_value) of every edge's left end, then of every right end."""
    return pl.concat([
        edges.select(identifier_type="left_type", identifier_value="left_value"),
        edges.select(identifier_type="right_type", identifier_value="right_value"),
    ])


def _code_ends(identifiers: pl.DataFrame, edges: pl.DataFrame) -> np.ndarray | None:
    """The node numbers of the edges' left ends, then of their right ends (-1 where no identifier row names
    one): one hash join of both ends at once, so the identifiers are hashed only once. None when some
    identifier has two rows (an end then matches twice)."""
    index = identifiers.lazy().select(_KEY).with_row_index("node")
    coded = (
        _stacked_ends(edges.lazy()).with_row_index("end")
        .join(index, on=_KEY, how="left")
        .select("end", node=pl.col("node").cast(pl.Int64).fill_null(-1))
        .collect()
    )
    if coded.height != 2 * edges.height:
        return None
    ends = np.empty(coded.height, np.int64)
    ends[coded["end"].to_numpy()] = coded["node"].to_numpy()
    return ends


def _degree(ends: np.ndarray, n: int) -> np.ndarray:
    """Per node, the edge ends naming it (an end of -1 names none)."""
    return np.bincount(ends if ends.min(initial=0) >= 0 else ends[ends >= 0], minlength=n)


def _listed_twice(identifiers: pl.DataFrame, named: np.ndarray) -> bool:
    """Whether some identifier has two rows, given which are `named` by an edge. One an edge names shows as
    an end coded twice (`_code_ends`); otherwise both rows are named by no edge, so only those few are
    compared (a full uniqueness check would cost as much as coding)."""
    if named.all():
        return False
    lone = identifiers.filter(~named)
    return lone.height > 1 and bool(lone.select(_KEY).is_duplicated().any())


def _kinds(types: pl.Series, codes: pl.Series, ranked: list[str]) -> tuple[np.ndarray, list[str]]:
    """(per node, its type as an index into the list of types; that list): the `ranked` types of the rules,
    whose index `codes` holds (the types cast to an Enum of them), then the other types present, sorted."""
    if not codes.has_nulls():
        return codes.to_numpy(), list(ranked)
    other = codes.is_null().to_numpy()
    unranked = types.filter(other)
    if unranked.has_nulls():
        raise ValueError("an identifier or edge end has a value but no identifier_type")
    names = sorted(unranked.unique().to_list())
    kind = codes.fill_null(0).to_numpy().astype(np.int32)
    kind[other] = unranked.replace_strict(names, range(len(ranked), len(ranked) + len(names))).to_numpy()
    return kind, [*ranked, *names]


def _shared(
    a: np.ndarray, b: np.ndarray, kind: np.ndarray, type_limits: np.ndarray, n: int, threshold: int | None,
    degree: np.ndarray | None = None,
) -> np.ndarray:
    """True for a shared identifier: one linked to more persons than the threshold. Persons are counted
    by the types a person holds at most one of (limit 1, e.g. user_id): an identifier linked to 11
    distinct user ids (or 11 crm ids) is linked to at least 11 persons. Only identifiers with more links
    than the threshold can be shared, so only their links are counted exactly."""
    shared = np.zeros(n, bool)
    if threshold is None or a.size == 0:
        return shared
    if degree is None:  # (given: the links per node of exactly these `a` and `b`)
        degree = np.bincount(a, minlength=n)
        degree += np.bincount(b, minlength=n)
    candidates = degree > threshold
    if not candidates.any():
        return shared
    around = candidates[a] | candidates[b]
    node, other = np.concatenate([a[around], b[around]]), np.concatenate([b[around], a[around]])
    pick = candidates[node] & (type_limits[kind[other]] == 1)
    ends = pl.DataFrame({"node": node[pick], "other": other[pick], "other_kind": kind[other[pick]]}).unique()
    counted = ends.group_by("node", "other_kind").len()
    shared[counted.filter(pl.col("len") > threshold)["node"].to_numpy()] = True
    return shared


def _components(n: int, a: np.ndarray, b: np.ndarray) -> tuple[int, np.ndarray]:
    if n == 0:
        return 0, np.zeros(0, np.int64)
    index = np.int32 if n < 2**31 else np.int64  # csgraph's own index type: no conversions, half the memory
    graph = coo_array((np.ones(a.size), (a.astype(index), b.astype(index))), shape=(n, n))  # float64, as csgraph wants
    count, labels = connected_components(graph, directed=False)
    return count, labels.astype(np.int64)


def _within_limits_where_needed(graph: IdentityGraph, count: int, component: np.ndarray) -> np.ndarray:
    """A person label per node: its component, except in components holding more identifiers of a type
    than its limit, which are resolved link by link (`_within_limits`): only those pay for Python."""
    limits = graph.type_limits
    limited = np.flatnonzero(limits)
    if count == 0 or limited.size == 0:
        return component
    # Identifiers per (component, type) in one count: the types without a limit count towards a column
    # never compared.
    slot = np.full(len(limits), limited.size, np.int64)
    slot[limited] = np.arange(limited.size)
    width = limited.size + 1
    rows = graph.usable if not graph.usable.all() else slice(None)
    held = np.bincount(component[rows] * width + slot[graph.kind[rows]], minlength=count * width)
    beyond = np.flatnonzero(held.reshape(count, width)[:, :-1] > limits[limited])  # component * types + slot
    if beyond.size == 0:
        return component
    over = np.zeros(count, bool)
    over[beyond // limited.size] = True
    members = np.flatnonzero(over[component] & graph.usable)
    links = np.flatnonzero(over[component[graph.a]])
    roots = _within_limits(graph, members, _strongest_first(graph, members, links))
    person = component.copy()
    person[members] = count + roots  # a root is a node number, so labels stay distinct
    return person


def _strongest_first(graph: IdentityGraph, members: np.ndarray, links: np.ndarray) -> list[tuple[int, int]]:
    """Links in the order limits let them unite: the priority of the weaker end first (user_id–email before
    anything–anonymous_id), then the most recently seen, then the (type, value) of both ends, so that the
    outcome does not depend on row order, and a family laptop's anonymous id joins the user it was most
    recently seen with."""
    order = graph.nodes[members].select(_KEY).with_columns(node=pl.Series(members)).sort(_KEY)["node"].to_numpy()
    position = np.empty(graph.nodes.height, np.int64)
    position[order] = np.arange(order.size)
    a, b = graph.a[links], graph.b[links]
    pa, pb = position[a], position[b]
    ordered = (
        pl.DataFrame({
            "first": np.minimum(pa, pb), "second": np.maximum(pa, pb),
            "weaker": np.maximum(graph.rank[a], graph.rank[b]),
            "last_seen": graph.last_seen[links],
        })
        .with_columns(last_seen=pl.when(pl.col("last_seen") != _NEVER).then("last_seen"))
        .group_by("first", "second")
        .agg(pl.col("weaker").first(), pl.col("last_seen").max())
        .sort(["weaker", "last_seen", "first", "second"], descending=[False, True, False, False], nulls_last=True)
    )
    return list(zip(order[ordered["first"].to_numpy()].tolist(), order[ordered["second"].to_numpy()].tolist()))


def _within_limits(graph: IdentityGraph, members: np.ndarray, ordered_links: Iterable[tuple[int, int]]) -> np.ndarray:
    """Per member, its root node after uniting along `ordered_links` in turn, except where the union would
    give a person more identifiers of a type than its limit: that link stays only in the edges table."""
    nodes = members.tolist()
    kind = graph.kind[members]
    kinds, limits = kind.tolist(), graph.type_limits[kind].tolist()
    limit = dict(zip(kinds, limits))
    parent = dict(zip(nodes, nodes))
    size = dict.fromkeys(nodes, 1)
    held = {node: {k: 1} for node, k, n in zip(nodes, kinds, limits) if n}  # limited types only

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = node = parent[parent[node]]
        return node

    def fits(ra: int, rb: int) -> bool:
        held_a, held_b = held.get(ra), held.get(rb)
        return not (held_a and held_b) or all(held_a.get(k, 0) + n <= limit[k] for k, n in held_b.items())

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
            for k, n in joining.items():
                into[k] = into.get(k, 0) + n
    return np.array([root(node) for node in nodes], np.int64)


def _anchors(graph: IdentityGraph, nodes: np.ndarray, person: np.ndarray) -> pl.DataFrame:
    """(person, node) of each person's anchor: its identifier first seen (never seen: last), then of the
    highest priority, then the smallest (type, value)."""
    if nodes.size == 0:
        return pl.DataFrame(schema={"person": pl.Int64, "node": pl.Int64})
    size = int(person.max()) + 1
    everyone = nodes.size == graph.nodes.height  # then `nodes` is every node, in order
    first_seen = graph.first_seen if everyone else graph.first_seen[nodes]
    rank = graph.rank if everyone else graph.rank[nodes]
    order = _first_seen_then_rank(first_seen, rank)
    if order is not None:  # one minimum per person over one key
        best = np.full(size, np.iinfo(np.int64).max, np.int64)
        np.minimum.at(best, person, order)
        candidate = order == best[person]
    else:
        earliest = np.full(size, _NEVER, np.int64)
        np.minimum.at(earliest, person, first_seen)
        candidate = first_seen == earliest[person]
        best = np.full(size, _NEVER, np.int64)
        np.minimum.at(best, person[candidate], rank[candidate])
        candidate &= rank == best[person]
    tied = np.bincount(person[candidate], minlength=size) > 1
    if not tied.any():
        return pl.DataFrame({"person": person[candidate], "node": nodes[candidate]})
    single = candidate & ~tied[person]
    anchors = pl.DataFrame({"person": person[single], "node": nodes[single]})
    # same time and priority: the smallest (type, value)
    several = candidate & tied[person]
    ties = graph.nodes[nodes[several]].select(_KEY).with_columns(person=person[several], node=nodes[several])
    return pl.concat([anchors, ties.sort(_KEY).unique("person", keep="first").select("person", "node")])


def _first_seen_then_rank(first_seen: np.ndarray, rank: np.ndarray) -> np.ndarray | None:
    """One int64 per node ordered as (first_seen, rank), _NEVER after every known time; None where the
    times span too much for that."""
    low, high = int(first_seen.min()), int(first_seen.max())
    if low == _NEVER:  # no time known
        return rank
    known = None
    if high == _NEVER:  # some unknown
        known = first_seen != _NEVER
        high = int(first_seen[known].max())
    ranks = int(rank.max()) + 1
    if (high - low + 2) * ranks >= 2**62:
        return None
    order = first_seen - low
    if known is not None:
        order[~known] = high - low + 1
    order *= ranks
    order += rank
    return order


def _person_ids(
    graph: IdentityGraph,
    nodes: np.ndarray,
    person: np.ndarray,
    anchors: pl.DataFrame,
    previous: PreviousIdentity | None,
    now: datetime,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(person, person_id, created_at) per person, and the merge and split rows against `previous`.

    Each previous person survives in one person: the one holding most of its identifiers (tie: the one
    holding the earliest of them in anchor order). Where several survive, the oldest (created_at, then id)
    keeps its id and each other one is a "merge" into it; where none survives, the person is new. Every
    other person holding identifiers of a previous person is a "split" from it (also when that part
    joins another existing person). A previous person none of whose identifiers remain simply ends."""
    held = _held(graph, nodes, person, previous)
    if held.is_empty():  # no earlier person holds any of these identifiers: all are new, nothing merges
        return _new_persons(graph, anchors, previous, set(), now), pl.DataFrame(schema=MERGES_SCHEMA)
    survivors = _survivors(graph, held)
    created = previous.persons.select(_shaped(PERSONS_SCHEMA))
    kept = (
        survivors.join(created, on="person_id", how="left")
        .with_columns(pl.col("created_at").fill_null(now))  # a previous person without a persons row
        .sort("created_at", "person_id")
        .unique("person", keep="first", maintain_order=True)
        .select("person", *PERSONS_SCHEMA)
    )
    fresh = anchors.join(kept, on="person", how="anti") if kept.height else anchors  # only new persons are hashed
    new = _new_persons(graph, fresh, previous, set(survivors["person_id"].to_list()), now)
    ids = pl.concat([kept, new])
    merges = survivors.join(kept, on="person", suffix="_to").filter(pl.col("person_id") != pl.col("person_id_to"))
    splits = (
        held.select("person_id", "person").unique()
        .join(survivors, on=["person_id", "person"], how="anti")
        .join(ids, on="person", suffix="_to")
    )
    log = pl.concat([
        merges.select(from_person_id="person_id", to_person_id="person_id_to", reason=pl.lit("merge")),
        splits.select(from_person_id="person_id", to_person_id="person_id_to", reason=pl.lit("split")),
    ]).with_columns(at=pl.lit(now, TIME))
    return ids, log.select(_shaped(MERGES_SCHEMA)).sort("reason", "from_person_id", "to_person_id")


def _new_persons(
    graph: IdentityGraph, anchors: pl.DataFrame, previous: PreviousIdentity | None, taken: set[str], now: datetime
) -> pl.DataFrame:
    """(person, person_id, created_at) of new persons, from their `anchors` (person, node): ids by `_new_ids`
    avoiding `taken` and the ids earlier runs gave out; created when their anchor was first seen."""
    if previous and previous.ids_in_use:
        in_use = previous.ids_in_use
    elif previous and previous.persons.height:
        in_use = _in(set(previous.persons["person_id"].to_list()))
    else:
        in_use = None
    node = anchors["node"].to_numpy()
    first_seen = graph.first_seen[node]
    return pl.DataFrame({
        "person": anchors["person"],
        "person_id": _new_ids(graph.nodes[node], in_use, taken),
        "created_at": pl.Series(first_seen).cast(TIME).set(pl.Series(first_seen == _NEVER), now),
    })


def _held(graph: IdentityGraph, nodes: np.ndarray, person: np.ndarray, previous: PreviousIdentity | None) -> pl.DataFrame:
    """(person_id, person, node): which previous person held each identifier resolved now."""
    if previous is None or previous.id_map.is_empty():
        return pl.DataFrame(schema={"person_id": pl.String, "person": pl.Int64, "node": pl.Int64})
    resolved = graph.nodes[nodes].select(_KEY).with_columns(person=person, node=nodes)
    return resolved.join(previous.id_map.select(*_KEY, "person_id"), on=_KEY).select("person_id", "person", "node")


def _survivors(graph: IdentityGraph, held: pl.DataFrame) -> pl.DataFrame:
    """(person_id, person): where each previous person survives. Ties on the count (rare) are broken by
    the anchor order of the identifiers held, which needs the (type, value) of those only."""
    counted = held.group_by("person_id", "person").agg(n=pl.len())
    best = counted.filter(pl.col("n") == pl.col("n").max().over("person_id"))
    tie = pl.len().over("person_id") > 1
    if best.is_empty() or not best.select(tie.any()).item():
        return best.select("person_id", "person")
    tied = best.filter(tie).select("person_id", "person")
    candidates = held.join(tied, on=["person_id", "person"])
    node = candidates["node"].to_numpy()
    first = (
        candidates.hstack(graph.nodes[node]).with_columns(first_seen=graph.first_seen[node], rank=graph.rank[node])
        .sort("first_seen", "rank", *_KEY)
        .unique("person_id", keep="first")
        .select("person_id", "person")
    )
    return pl.concat([best.filter(~tie).select("person_id", "person"), first])


def _in(ids: set[str]) -> Callable[[list[str]], set[str]]:
    return lambda candidates: ids.intersection(candidates)


def _new_ids(anchors: pl.DataFrame, in_use: Callable[[list[str]], set[str]] | None, taken: set[str]) -> pl.Series:
    """"p_" + sha256("type:value")[:16] of each new person's anchor (identifier_type, identifier_value), so a
    full rebuild names persons the same way every time; where that id is taken (an earlier person's), "#1",
    "#2", ... is appended to the key. `in_use` (None: no earlier ids) is asked once for all ids, then once
    per retried id (rare)."""
    keys = pl.concat_str(_KEY, separator=":")
    hashed = "p_" + keys.chash.sha2_256().str.slice(0, 16)  # polars-hash's namespace on every expression
    ids = anchors.lazy().select(person_id=hashed).collect().to_series()  # streams: on every core
    listed, clash = [], set()
    if in_use or taken:
        listed = ids.to_list()
        clash = taken.intersection(listed) | (in_use(listed) if in_use else set())
    if not clash and ids.hash().n_unique() == ids.len():  # distinct hashes: distinct ids (else look closer)
        return ids
    listed = listed or ids.to_list()
    names = anchors.select(keys).to_series().to_list()
    retry = {index for index, person_id in enumerate(listed) if person_id in clash}
    owner: dict[str, int] = {}
    for index in sorted(range(len(listed)), key=names.__getitem__):  # two anchors hashed alike: the smaller keeps it
        if owner.setdefault(listed[index], index) != index:
            retry.add(index)
    used = taken | clash | set(listed)
    for index in sorted(retry, key=names.__getitem__):
        attempt = 1
        while (person_id := _hashed(f"{names[index]}#{attempt}")) in used or (in_use and in_use([person_id])):
            attempt += 1
        listed[index] = person_id
        used.add(person_id)
    return pl.Series("person_id", listed, dtype=pl.String)


def _hashed(key: str) -> str:
    return "p_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _shaped(schema: dict[str, pl.DataType]) -> list[pl.Expr]:
    return [pl.col(name).cast(dtype) for name, dtype in schema.items()]


def _utc_naive(moment: datetime | None) -> datetime:
    moment = moment or datetime.now(timezone.utc)
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment
