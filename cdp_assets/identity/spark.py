"""Identity resolution on Spark (`CDP_ENGINE=spark`): the persons and ids of `resolve.resolve_persons`, computed
on a cluster.

The same rules, in the same order, each still in one place:
- blocked values (`IdentityRules.blocked_any` / `blocked_by_type`) are no identifier: no person, no link;
- a shared identifier (linked to more distinct identifiers of one limit-1 type than the threshold) keeps a
  person of its own and links nothing;
- connected components of the kept links, distributed: the alternating large-star / small-star algorithm of
  Kiveris et al., "Connected Components in MapReduce and Beyond" (SoCC 2014), O(log n) rounds of joins and
  group-bys on (node, node) pairs, the algorithm GraphFrames uses (whose JVM package we cannot install);
- components that hold more identifiers of a type than its limit (few, and small) are resolved link by link
  by the in-process code itself (`resolve._within_limits_where_needed`, `_anchors`) in `applyInPandas`, one
  component per call, in parallel; every other component is one person, its anchor one minimum per group;
- ids: survivorship against the previous id map (the person holding most of an earlier person's
  identifiers keeps its id; the oldest wins a merge) as joins and window functions, new persons named
  "p_" + sha256("type:value")[:16] of their anchor; the rare clash (an id an earlier person holds) is
  retried on the driver exactly as `resolve._new_ids` does.

tests/test_spark.py checks on a real standalone cluster that the result equals the in-process resolver's,
person for person and id for id, on generated graphs with shared devices and over-merges.

`SparkGraph` is what `cdp profile --explain` reads here (explain.py's rules, over these tables).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import polars as pl
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from cdp_assets.identity.resolve import (
    _NEVER,
    IdentityGraph,
    _anchors,
    _hashed,
    _utc_naive,
    _within_limits_where_needed,
)
from cdp_assets.identity.rules import IdentityRules

KEY = ["identifier_type", "identifier_value"]
_EPOCH = datetime(1970, 1, 1)
_RETRY_ROUND = 8  # candidate ids tried per clashing anchor per round trip to the cluster


@dataclass(frozen=True)
class SparkResolution:
    """As `resolve.Resolution`, as Spark DataFrames."""

    id_map: DataFrame  # identifier_type, identifier_value, person_id
    persons: DataFrame  # person_id, created_at
    merges: DataFrame  # from_person_id, to_person_id, reason, at
    components: DataFrame  # identifier_type, identifier_value, component


def resolve_persons_spark(
    identifiers: DataFrame,
    edges: DataFrame,
    rules: IdentityRules,
    previous_id_map: DataFrame | None = None,
    previous_persons: DataFrame | None = None,
    now: datetime | None = None,
) -> SparkResolution:
    """`resolve.resolve_persons` on Spark: the same inputs (as DataFrames with the same columns), the same
    result. `previous_id_map` (identifier_type, identifier_value, person_id) and `previous_persons`
    (person_id, created_at) are the last run's, as `PreviousIdentity`."""
    spark = identifiers.sparkSession
    now = _utc_naive(now)
    now_us = (now - _EPOCH) // timedelta(microseconds=1)
    nodes, types = _nodes(identifiers, edges, rules)
    links = _links(nodes, edges)
    links = _unshared(nodes, links, types, rules.shared_identifier_threshold).localCheckpoint()
    usable = nodes.where(~F.col("blocked")).drop("blocked")
    labels = connected_components(links.select("a", "b"))
    usable = (
        usable.join(labels, "node", "left")
        .withColumn("component", F.coalesce("component", "node"))
    )
    type_limits = [rules.limit(t) or 0 for t in types]
    resolved = _persons_within_limits(usable, links, type_limits).localCheckpoint()
    anchors = resolved.where(F.col("node") == F.col("person")).select(
        "person", *KEY, "first_seen")
    ids, merges = _person_ids(spark, resolved, anchors, previous_id_map, previous_persons, now_us)
    ids = ids.localCheckpoint()
    id_map = resolved.join(ids.select("person", "person_id"), "person").select(*KEY, "person_id")
    return SparkResolution(
        id_map=id_map,
        persons=ids.select("person_id", "created_at"),
        merges=merges,
        components=resolved.select(*KEY, "component"),
    )


# The graph ------------------------------------------------------------------------------------------


def _nodes(identifiers: DataFrame, edges: DataFrame, rules: IdentityRules) -> tuple[DataFrame, list[str]]:
    """(node, identifier_type, identifier_value, first_seen, blocked, kind, rank, limit) per identifier, on a
    record or only on an edge, and the list of types (the rules', then the others present, sorted): `kind`
    indexes it, as in `resolve._kinds`. Node numbers are arbitrary but fixed (checkpointed)."""
    spark = identifiers.sparkSession
    sightings = identifiers.select(*KEY, F.unix_micros(F.col("first_seen_at").cast("timestamp")).alias("seen"))
    for side in ("left", "right"):
        sightings = sightings.unionByName(edges.select(
            F.col(f"{side}_type").alias("identifier_type"), F.col(f"{side}_value").alias("identifier_value"),
            F.unix_micros(F.col("first_seen_at").cast("timestamp")).alias("seen")))
    nodes = (
        sightings.where(F.col("identifier_value").isNotNull())
        .groupBy(*KEY).agg(F.coalesce(F.min("seen"), F.lit(_NEVER)).alias("first_seen"))
    )
    ranked = [rule.type for rule in rules.identifiers]
    present = [row[0] for row in nodes.select("identifier_type").distinct().collect()]
    if None in present:
        raise ValueError("an identifier or edge end has a value but no identifier_type")
    types = [*ranked, *sorted(set(present) - set(ranked))]
    described = spark.createDataFrame(
        [(t, k, min(k, len(ranked)), rules.limit(t) or 0) for k, t in enumerate(types)],
        "identifier_type string, kind int, rank int, limit int",
    )
    nodes = (
        nodes.join(F.broadcast(described), "identifier_type")
        .withColumn("blocked", _blocked(rules))
        .withColumn("node", F.monotonically_increasing_id())
    )
    return nodes.localCheckpoint(), types


def _blocked(rules: IdentityRules):
    value = F.col("identifier_value")
    blocked = F.lower(value).isin(sorted(rules.blocked_any)) if rules.blocked_any else F.lit(False)
    for type_, values in rules.blocked_by_type.items():
        blocked = blocked | ((F.col("identifier_type") == type_) & value.isin(sorted(values)))
    return F.coalesce(blocked, F.lit(False))


def _links(nodes: DataFrame, edges: DataFrame) -> DataFrame:
    """(a, b, last_seen) per edge row whose ends are two different usable identifiers."""
    usable = nodes.where(~F.col("blocked")).select("node", *KEY)
    left = usable.select(F.col("node").alias("a"), F.col("identifier_type").alias("left_type"),
                         F.col("identifier_value").alias("left_value"))
    right = usable.select(F.col("node").alias("b"), F.col("identifier_type").alias("right_type"),
                          F.col("identifier_value").alias("right_value"))
    return (
        edges.join(left, ["left_type", "left_value"]).join(right, ["right_type", "right_value"])
        .where(F.col("a") != F.col("b"))
        .select("a", "b", F.coalesce(F.unix_micros(F.col("last_seen_at").cast("timestamp")), F.lit(_NEVER)).alias("last_seen"))
    )


def _unshared(nodes: DataFrame, links: DataFrame, types: list[str], threshold: int | None) -> DataFrame:
    """The links with neither end shared: linked to more distinct identifiers of one limit-1 type (each a
    distinct person) than `threshold` (as `resolve._shared`)."""
    if threshold is None:
        return links
    pairs = links.select(F.col("a").alias("node"), F.col("b").alias("other")).unionByName(
        links.select(F.col("b").alias("node"), F.col("a").alias("other"))).distinct()
    single = nodes.where(F.col("limit") == 1).select(F.col("node").alias("other"), F.col("kind").alias("other_kind"))
    shared = (
        pairs.join(single, "other").groupBy("node", "other_kind").count()
        .where(F.col("count") > threshold).select("node").distinct()
    )
    return (
        links.join(shared.withColumnRenamed("node", "a"), "a", "left_anti")
        .join(shared.withColumnRenamed("node", "b"), "b", "left_anti")
    )


# Connected components: large-star / small-star --------------------------------------------------------


def connected_components(links: DataFrame) -> DataFrame:
    """(node, component) for every node on a link (a, b): the component's smallest node number.

    Kiveris et al. 2014: edges kept as (src, dst) with src > dst. Large-star links every neighbour above a
    node to the smallest of its neighbourhood; small-star links a node and every neighbour below it to the
    smallest of those. Alternated, they turn each component into a star around its minimum in O(log n)
    rounds; done when every edge points at a node that points nowhere, and each node at one."""
    edges = (
        links.select(F.greatest("a", "b").alias("src"), F.least("a", "b").alias("dst"))
        .where(F.col("src") != F.col("dst")).distinct().localCheckpoint()
    )
    while True:
        edges = _small_star(_large_star(edges)).localCheckpoint()
        if _stars(edges):
            break
    roots = edges.select(F.col("dst").alias("node")).distinct().withColumn("component", F.col("node"))
    return edges.select(F.col("src").alias("node"), F.col("dst").alias("component")).unionByName(roots)


def _large_star(edges: DataFrame) -> DataFrame:
    both = edges.select(F.col("src").alias("u"), F.col("dst").alias("v")).unionByName(
        edges.select(F.col("dst").alias("u"), F.col("src").alias("v")))
    smallest = both.groupBy("u").agg(F.least(F.min("v"), F.col("u")).alias("m"))
    return (
        both.where(F.col("v") > F.col("u")).join(smallest, "u")
        .select(F.col("v").alias("src"), F.col("m").alias("dst")).distinct()
    )


def _small_star(edges: DataFrame) -> DataFrame:
    smallest = edges.groupBy("src").agg(F.min("dst").alias("m"))  # every dst is below its src
    leaves = (
        edges.join(smallest, "src").where(F.col("dst") != F.col("m"))
        .select(F.col("dst").alias("src"), F.col("m").alias("dst"))
    )
    return leaves.unionByName(smallest.select("src", F.col("m").alias("dst"))).distinct()


def _stars(edges: DataFrame) -> bool:
    """Whether no edge points at a node that points somewhere, and no node points at two: one job."""
    ends = edges.select(F.col("src").alias("node"), F.lit(1).alias("out"), F.lit(0).alias("into")).unionByName(
        edges.select(F.col("dst").alias("node"), F.lit(0).alias("out"), F.lit(1).alias("into")))
    per_node = ends.groupBy("node").agg(F.sum("out").alias("out"), F.max("into").alias("into"))
    return per_node.where((F.col("out") > 1) | ((F.col("out") > 0) & (F.col("into") > 0))).isEmpty()


# Persons within limits, anchors ----------------------------------------------------------------------


def _persons_within_limits(usable: DataFrame, links: DataFrame, type_limits: list[int]) -> DataFrame:
    """Every usable node with its person (the node number of the person's anchor): a component is one
    person unless it holds more identifiers of a type than the type's limit; those components go through
    the in-process rule code, one per `applyInPandas` call."""
    counted = (
        usable.where(F.col("limit") > 0).groupBy("component", "kind")
        .agg(F.count("*").alias("n"), F.first("limit").alias("limit"))
    )
    over = counted.where(F.col("n") > F.col("limit")).select("component").distinct().localCheckpoint()
    within = usable.join(over, "component", "left_anti")
    anchor = F.min(F.struct("first_seen", "rank", *KEY, "node"))  # first seen, highest priority, smallest key
    anchors = within.groupBy("component").agg(anchor.getField("node").alias("person"))
    columns = ["node", *KEY, "first_seen", "rank", "component", "person"]
    persons = within.join(anchors, "component").select(*columns)
    if over.isEmpty():
        return persons
    members = usable.join(over, "component", "left_semi")
    inner = (  # (the component renamed: a new column, so the cogroup below is no ambiguous self-join)
        links.join(members.select(F.col("node").alias("a"), F.col("component").alias("of_a")), "a")
        .join(members.select(F.col("node").alias("b")), "b")
        .select(F.col("of_a").alias("component"), "a", "b", "last_seen")
    )
    resolved = (
        members.select("component", "node", *KEY, "kind", "rank", "first_seen")
        .groupBy("component").cogroup(inner.groupBy("component"))
        .applyInPandas(functools.partial(_limited_component, type_limits),
                       "node long, identifier_type string, identifier_value string, first_seen long, rank int, "
                       "component long, person long")
    )
    return persons.unionByName(resolved.select(*columns))


def _limited_component(type_limits: list[int], nodes: pd.DataFrame, links: pd.DataFrame) -> pd.DataFrame:
    """The component's nodes with their person (the anchor's node number), by `resolve`'s own union-find
    and anchor rules."""
    nodes = nodes.sort_values("node", kind="stable")
    number = nodes["node"].to_numpy(np.int64)
    n = number.size
    graph = IdentityGraph(
        nodes=pl.DataFrame({"identifier_type": nodes["identifier_type"].tolist(),
                            "identifier_value": nodes["identifier_value"].tolist()},
                           schema={"identifier_type": pl.String, "identifier_value": pl.String}),
        kind=nodes["kind"].to_numpy(np.int64),
        type_limits=np.asarray(type_limits, np.int64),
        rank=nodes["rank"].to_numpy(np.int64),
        first_seen=nodes["first_seen"].to_numpy(np.int64).copy(),
        usable=np.ones(n, bool),
        a=np.searchsorted(number, links["a"].to_numpy(np.int64)),
        b=np.searchsorted(number, links["b"].to_numpy(np.int64)),
        last_seen=links["last_seen"].to_numpy(np.int64),
        shared=np.zeros(n, bool),
        reaches_outside=pl.DataFrame(schema={"identifier_type": pl.String, "identifier_value": pl.String}),
    )
    person = _within_limits_where_needed(graph, 1, np.zeros(n, np.int64))
    anchors = _anchors(graph, np.arange(n), person)
    anchor_of = np.zeros(int(person.max()) + 1, np.int64)
    anchor_of[anchors["person"].to_numpy()] = number[anchors["node"].to_numpy()]
    return nodes.assign(person=anchor_of[person])[
        ["node", "identifier_type", "identifier_value", "first_seen", "rank", "component", "person"]]


# Stable ids ----------------------------------------------------------------------------------------------


def _person_ids(
    spark: SparkSession,
    resolved: DataFrame,
    anchors: DataFrame,
    previous_id_map: DataFrame | None,
    previous_persons: DataFrame | None,
    now_us: int,
) -> tuple[DataFrame, DataFrame]:
    """(person, person_id, created_at) per person and the merge/split log, as `resolve._person_ids`."""
    now = F.timestamp_micros(F.lit(now_us))
    merges_schema = "from_person_id string, to_person_id string, reason string, at timestamp"
    if previous_id_map is None:
        new = _new_persons(spark, anchors, None, None, now)
        return new, spark.createDataFrame([], merges_schema)
    held = resolved.join(previous_id_map.select(*KEY, "person_id"), KEY).select(
        "person_id", "person", "node", "first_seen", "rank", *KEY).localCheckpoint()
    counted = held.groupBy("person_id", "person").agg(F.count("*").alias("n"))
    by_previous = Window.partitionBy("person_id")
    best = (
        counted.withColumn("most", F.max("n").over(by_previous)).where(F.col("n") == F.col("most"))
        .withColumn("tied", F.count("*").over(by_previous))
    )
    first_held = Window.partitionBy("person_id").orderBy("first_seen", "rank", *KEY)
    broken = (
        held.join(best.where(F.col("tied") > 1).select("person_id", "person"), ["person_id", "person"])
        .withColumn("i", F.row_number().over(first_held)).where(F.col("i") == 1)
    )
    survivors = best.where(F.col("tied") == 1).select("person_id", "person").unionByName(
        broken.select("person_id", "person")).localCheckpoint()
    created = previous_persons.select("person_id", F.col("created_at").cast("timestamp"))
    oldest = Window.partitionBy("person").orderBy("created_at", "person_id")
    kept = (
        survivors.join(created, "person_id", "left").withColumn("created_at", F.coalesce("created_at", now))
        .withColumn("i", F.row_number().over(oldest)).where(F.col("i") == 1)
        .select("person", "person_id", "created_at")
    )
    fresh = anchors.join(kept, "person", "left_anti")
    new = _new_persons(spark, fresh, survivors.select("person_id"), created.select("person_id"), now)
    ids = kept.unionByName(new).localCheckpoint()
    into = ids.select("person", F.col("person_id").alias("to_person_id"))
    merges = (
        survivors.join(kept.select("person", F.col("person_id").alias("to_person_id")), "person")
        .where(F.col("person_id") != F.col("to_person_id"))
        .select(F.col("person_id").alias("from_person_id"), "to_person_id", F.lit("merge").alias("reason"))
    )
    splits = (
        held.select("person_id", "person").distinct()
        .join(survivors, ["person_id", "person"], "left_anti").join(into, "person")
        .select(F.col("person_id").alias("from_person_id"), "to_person_id", F.lit("split").alias("reason"))
    )
    return ids, merges.unionByName(splits).withColumn("at", now)


def _new_persons(spark: SparkSession, anchors: DataFrame, taken: DataFrame | None, in_use: DataFrame | None, now):
    """(person, person_id, created_at) of new persons from their anchors (person, type, value, first_seen):
    "p_" + sha256("type:value")[:16]; an id that survivors keep (`taken`) or earlier runs gave out
    (`in_use`), or that two anchors hash to (the smaller key keeps it), gets "#1", "#2", ... as in
    `resolve._new_ids`."""
    name = F.concat_ws(":", *KEY)
    named = anchors.select(
        "person", name.alias("name"),
        F.concat(F.lit("p_"), F.substring(F.sha2(name, 256), 1, 16)).alias("person_id"),
        F.when(F.col("first_seen") == _NEVER, now).otherwise(F.timestamp_micros("first_seen")).alias("created_at"),
    ).localCheckpoint()
    elsewhere = None
    if taken is not None:
        elsewhere = taken.unionByName(in_use).distinct() if in_use is not None else taken.distinct()
    clash = named.join(elsewhere, "person_id", "left_semi") if elsewhere is not None else named.limit(0)
    later = Window.partitionBy("person_id").orderBy("name")
    doubled = named.withColumn("i", F.row_number().over(later)).where(F.col("i") > 1).drop("i")
    rows = clash.withColumn("clash", F.lit(True)).unionByName(doubled.withColumn("clash", F.lit(False))).collect()
    retry = sorted({(row["name"], row["person"]) for row in rows})
    if not retry:
        return named.drop("name")
    used = {row["person_id"] for row in rows if row["clash"]}
    assigned: dict[int, str] = {}
    attempts = {person: 1 for _, person in retry}
    while len(assigned) < len(retry):
        candidates = {(name, person, attempt, _hashed(f"{name}#{attempt}"))
                      for name, person in retry if person not in assigned
                      for attempt in range(attempts[person], attempts[person] + _RETRY_ROUND)}
        asked = spark.createDataFrame([(c[3],) for c in candidates], "person_id string")
        known = named.select("person_id")
        if elsewhere is not None:
            known = known.unionByName(elsewhere)
        taken_ids = {row[0] for row in asked.join(known, "person_id", "left_semi").collect()}
        for name, person in retry:  # in key order, each choice taken before the next
            if person in assigned:
                continue
            for attempt in range(attempts[person], attempts[person] + _RETRY_ROUND):
                person_id = _hashed(f"{name}#{attempt}")
                if person_id not in used and person_id not in taken_ids:
                    assigned[person] = person_id
                    used.add(person_id)
                    break
            else:
                attempts[person] += _RETRY_ROUND
                break  # keep key order: ask the cluster about more candidates before the next anchor
    fixes = spark.createDataFrame(list(assigned.items()), "person long, retried string")
    return (
        named.join(F.broadcast(fixes), "person", "left")
        .select("person", F.coalesce("retried", "person_id").alias("person_id"), "created_at")
    )


# The warehouse's tables on Spark ---------------------------------------------------------------------------

_IDENTIFIERS_DDL = "identifier_type string, identifier_value string, first_seen_at timestamp"
_EDGES_DDL = ("left_type string, left_value string, right_type string, right_value string, source string, "
              "first_seen_at timestamp, last_seen_at timestamp")


def update_persons_on_spark(engine, rules: IdentityRules, now: datetime, full_rebuild: bool = False):
    """`store.update_persons` on the Spark engine's tables: cdp.id_map, core.persons and
    core.identity_components replaced from cdp.identity_edges and core.identifiers, merges and splits
    appended to cdp.identity_merges, and, as on DuckDB, each identifier whose person changed appended to
    core.id_map_changes under a new batch (what the per-person profile models read: core.affected_persons).
    Always a full resolution (the incremental scope is DuckDB's so far). Returns (PersonsUpdate, identifiers
    per type)."""
    from cdp_assets.identity.store import CONSUMER, PersonsUpdate

    spark = engine.session()

    def table(name: str, ddl: str) -> DataFrame:
        columns = [part.split()[0] for part in ddl.split(", ")]
        if engine.table_exists(name):
            return engine.table(name).select(*columns)
        return spark.createDataFrame([], ddl)

    with engine.lock():  # read the id map and the logs, then replace and append to them
        identifiers = table("core.identifiers", _IDENTIFIERS_DDL)
        edges = table("cdp.identity_edges", _EDGES_DDL)
        previous = None, None
        if engine.table_exists("cdp.id_map") and engine.table_exists("core.persons"):
            previous = engine.table("cdp.id_map"), engine.table("core.persons")
        result = resolve_persons_spark(identifiers, edges, rules, *previous, now=now)
        # Read before the swap below retires the previous id map they are computed from.
        merges = pl.from_pandas(result.merges.toPandas()) if previous[0] is not None else pl.DataFrame(
            schema={"from_person_id": pl.String, "to_person_id": pl.String, "reason": pl.String, "at": pl.Datetime("us")})
        changed = _log_changes(engine, previous[0], result.id_map, now)
        counts = engine.replace_tables({
            "cdp.id_map": result.id_map, "core.persons": result.persons, "core.identity_components": result.components,
            # everything touched up to now has been read (`store._log_changes`)
            "core.watermarks": engine.watermarks_with(CONSUMER, changed[1]),
        })
        if merges.height:
            engine.append("cdp.identity_merges", spark.createDataFrame(merges.to_pandas()))
        elif not engine.table_exists("cdp.identity_merges"):  # the log exists from the first resolution on, as on DuckDB
            engine.append("cdp.identity_merges", spark.createDataFrame([], _MERGES_DDL))
    by_type = {row[0]: row[1] for row in engine.table("cdp.id_map").groupBy("identifier_type").count().collect()}
    update = PersonsUpdate("full", counts["cdp.id_map"], edges.count(), counts["core.persons"], merges, changed[0])
    return update, dict(sorted(by_type.items()))


_MERGES_DDL = "from_person_id string, to_person_id string, reason string, at timestamp"
_CHANGES_DDL = "identifier_type string, identifier_value string, person_before string, person_after string, _batch_id bigint"


def _log_changes(engine, before: DataFrame | None, after: DataFrame, now: datetime) -> tuple[int, int]:
    """Append to core.id_map_changes every identifier whose person differs between the id maps `before` (None:
    no earlier resolution) and `after`, under a new batch (`store._log_changes`); (rows appended, batch)."""
    spark = engine.session()
    old = (before if before is not None else spark.createDataFrame([], "identifier_type string, identifier_value string, "
                                                                       "person_id string"))
    changes = (
        old.select(*KEY, F.col("person_id").alias("person_before"))
        .join(after.select(*KEY, F.col("person_id").alias("person_after")), KEY, "full")
        .where(~F.col("person_before").eqNullSafe(F.col("person_after")))
    )
    batch = engine.new_batch("identity", _utc_naive(now))
    logged = changes.withColumn("_batch_id", F.lit(batch).cast("bigint")).localCheckpoint()
    rows = logged.count()
    if rows or not engine.table_exists("core.id_map_changes"):
        engine.append("core.id_map_changes", logged if rows else spark.createDataFrame([], _CHANGES_DDL))
    return rows, batch


def id_map_problems(engine) -> tuple[int, int]:
    """(identifiers with several rows or persons, identifiers without a person) in the Spark cdp.id_map, as
    checks.id_map_problems counts them on DuckDB."""
    id_map = engine.table("cdp.id_map")
    row = (
        id_map.groupBy(*KEY).agg(F.count_distinct("person_id").alias("persons"), F.count("*").alias("rows"),
                                 F.count_if(F.col("person_id").isNull()).alias("unmapped"))
        .agg(F.count_if((F.col("persons") > 1) | (F.col("rows") > 1)), F.sum("unmapped"))
        .first()
    )
    return int(row[0] or 0), int(row[1] or 0)


class SparkGraph:
    """The recorded graph as `explain.explain_with` reads it (`explain.RecordedGraph`), in the Spark tables: the
    reads of `explain.DuckDBGraph` as DataFrame queries; the rules stay in explain.py."""

    def __init__(self, engine):
        self.engine = engine

    def person(self, node: tuple[str, str]) -> str | None:
        found = self._holding(node).select("person_id").limit(1).collect()
        return found[0][0] if found else None

    def neighbours(self, frontier: list[tuple[str, str]], within: str | None) -> list:
        nodes = self.engine.session().createDataFrame(frontier, "t string, v string")
        edges = self.engine.table("cdp.identity_edges")
        # one equality join per end, as on DuckDB (an OR would compare every edge with every frontier node)
        touching = functools.reduce(DataFrame.unionByName, [
            edges.join(nodes.toDF(f"{end}_type", f"{end}_value"), [f"{end}_type", f"{end}_value"], "left_semi")
            for end in ("left", "right")])
        if within:
            held = self.engine.table("cdp.id_map").where(F.col("person_id") == within).select(*KEY)
            for end in ("left", "right"):
                touching = touching.join(held.toDF(f"{end}_type", f"{end}_value"), [f"{end}_type", f"{end}_value"], "left_semi")
        sources = F.array_sort(F.collect_set("source"))
        rows = touching.groupBy("left_type", "left_value", "right_type", "right_value").agg(
            F.when(F.size(sources) > 0, F.array_join(sources, ", ")).alias("sources")).collect()
        return [((lt, lv), (rt, rv), source) for lt, lv, rt, rv, source in rows]

    def edges_touching(self, node: tuple[str, str]) -> pl.DataFrame:
        edges = self.engine.table("cdp.identity_edges")
        end = lambda side: (F.col(f"{side}_type") == node[0]) & (F.col(f"{side}_value") == node[1])  # noqa: E731
        frame = pl.from_arrow(edges.where(end("left") | end("right")).select(
            "left_type", "left_value", "right_type", "right_value", "first_seen_at", "last_seen_at").toArrow())
        return frame.with_columns(  # instants as the warehouse's naive UTC times, as DuckDB gives them
            pl.col(c).dt.convert_time_zone("UTC").dt.replace_time_zone(None)
            for c in ("first_seen_at", "last_seen_at") if getattr(frame.schema[c], "time_zone", None))

    def type_counts(self, persons: tuple[str, str]) -> list[tuple[str, int]]:
        counts = self.engine.table("cdp.id_map").where(F.col("person_id").isin(*persons)).groupBy("identifier_type").count()
        return [(r[0], r[1]) for r in counts.collect()]

    def _holding(self, node: tuple[str, str]) -> DataFrame:
        return self.engine.table("cdp.id_map").where(
            (F.col("identifier_type") == node[0]) & (F.col("identifier_value") == node[1]))
