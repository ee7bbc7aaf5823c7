"""The Spark engine on a real standalone cluster (tests/spark_cluster.py): identity resolution on Spark gives the
in-process resolver's persons, ids, creation times and merge log, identifier for identifier.

Every Spark job costs seconds, so the generated graphs are resolved together: many small random graphs on
disjoint identifiers (a person never crosses a graph) in one resolution, checked against the in-process
resolver on the same union. Marked `spark`: `-m 'not spark'` skips them locally; CI runs them.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from spark_cluster import spark_cluster, spark_engine  # noqa: F401 (fixtures)

from cdp_assets.identity.resolve import PreviousIdentity, resolve_persons
from cdp_assets.identity.rules import IdentifierRule, IdentityRules, load_identity_rules

pytestmark = pytest.mark.spark

REPO = Path(__file__).resolve().parents[1]
RULES = load_identity_rules(REPO / "config" / "identity.yaml")
# Small limits and threshold: over-merges and shared identifiers in small graphs.
TIGHT = IdentityRules(
    identifiers=(IdentifierRule("user_id", 1), IdentifierRule("crm_id", 1), IdentifierRule("email", 2),
                 IdentifierRule("phone", 1), IdentifierRule("anonymous_id"), IdentifierRule("device_id")),
    blocked_any=frozenset({"unknown", "null", ""}),
    blocked_by_type={"email": frozenset({"test@test.com"})},
    shared_identifier_threshold=2,
)
TYPES = ["user_id", "crm_id", "email", "phone", "anonymous_id", "device_id", "loyalty_id"]
START = datetime(2026, 1, 1)
NOW = datetime(2026, 6, 1)
KEY = ["identifier_type", "identifier_value"]
EDGE_SCHEMA = {"left_type": pl.String, "left_value": pl.String, "right_type": pl.String, "right_value": pl.String,
               "source": pl.String, "first_seen_at": pl.Datetime("us"), "last_seen_at": pl.Datetime("us")}
IDENTIFIER_SCHEMA = {"identifier_type": pl.String, "identifier_value": pl.String, "first_seen_at": pl.Datetime("us")}


def shop(seed: int, graphs: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(identifiers, edges) of `graphs` small random identity graphs on disjoint values: random links among
    few values per type (so limits break), family laptops, a device shared by many users, blocked values,
    self-links, identifiers only an edge names, identifiers listed twice, unknown times, and a long chain
    (many rounds of the components algorithm)."""
    rnd = random.Random(seed)
    edges, identifiers = [], []

    def when() -> datetime | None:
        return None if rnd.random() < 0.05 else START + timedelta(days=rnd.randint(0, 5), hours=rnd.randint(0, 2))

    def name(g: int) -> tuple[str, str]:
        type_ = rnd.choice(TYPES)
        if rnd.random() < 0.04:
            return type_, rnd.choice(["unknown", "NULL", "", "test@test.com"])
        return type_, f"g{g}-{type_[0]}{rnd.randint(0, 3)}"

    for g in range(graphs):
        for _ in range(rnd.randint(0, 14)):
            left, right = name(g), name(g)
            first = when()
            last = None if first is None or rnd.random() < 0.1 else first + timedelta(days=rnd.randint(0, 3))
            edges.append((*left, *right, "gen", first, last))
        if rnd.random() < 0.2:  # a device many users share
            for u in range(rnd.randint(2, 13)):
                at = START + timedelta(days=u % 4)
                edges.append(("device_id", f"g{g}-shared", "user_id", f"g{g}-su{u}", "gen", at, at))
        for _ in range(rnd.randint(0, 3)):  # sightings on records, sometimes twice, sometimes no time
            type_, value = name(g)
            identifiers.append((type_, value, when()))
            if rnd.random() < 0.2:
                identifiers.append((type_, value, when()))
    for i in range(60):  # one long chain of anonymous ids
        at = START + timedelta(minutes=i)
        edges.append(("anonymous_id", f"chain{i}", "anonymous_id", f"chain{i + 1}", "gen", at, at))
    # Sightings of the linked identifiers too (most, not all: some exist only on an edge).
    for left_type, left_value, right_type, right_value, _, first, _ in edges:
        for type_, value in ((left_type, left_value), (right_type, right_value)):
            if rnd.random() < 0.7:
                identifiers.append((type_, value, first))
    rnd.shuffle(edges)
    return (pl.DataFrame(identifiers, schema=IDENTIFIER_SCHEMA, orient="row"),
            pl.DataFrame(edges, schema=EDGE_SCHEMA, orient="row"))


def changed(edges: pl.DataFrame, seed: int) -> pl.DataFrame:
    """The next day's edges: some links gone (splits), some new ones across graphs' persons (merges)."""
    rnd = random.Random(seed)
    kept = edges.filter(pl.Series([rnd.random() > 0.15 for _ in range(edges.height)]))
    ends = edges.select("right_type", "right_value").rows()
    later = START + timedelta(days=9)
    extra = [(*rnd.choice(ends), *rnd.choice(ends), "gen", later, later) for _ in range(edges.height // 10)]
    return pl.concat([kept, pl.DataFrame(extra, schema=EDGE_SCHEMA, orient="row")])


def on_spark(engine, frame: pl.DataFrame):
    return engine.session().createDataFrame(frame.to_pandas())


def back(frame) -> pl.DataFrame:
    return pl.from_pandas(frame.toPandas())


def resolved_on_spark(engine, identifiers, edges, rules, previous=None):
    from cdp_assets.identity.spark import resolve_persons_spark

    result = resolve_persons_spark(
        on_spark(engine, identifiers), on_spark(engine, edges), rules,
        on_spark(engine, previous.id_map) if previous else None,
        on_spark(engine, previous.persons) if previous else None,
        now=NOW,
    )
    return back(result.id_map), back(result.persons), back(result.merges)


def assert_same(spark_result, expected) -> None:
    id_map, persons, merges = spark_result
    assert id_map.height == expected.id_map.height
    assert id_map.sort(KEY).equals(expected.id_map.sort(KEY)), "person per identifier differs"
    assert persons.sort("person_id").equals(
        expected.persons.sort("person_id").with_columns(pl.col("created_at").cast(pl.Datetime("us"))))
    order = ["reason", "from_person_id", "to_person_id"]
    assert merges.select(order).sort(order).rows() == expected.merges.select(order).sort(order).rows()


@pytest.mark.parametrize("rules", [RULES, TIGHT], ids=["shipped_rules", "tight_limits"])
def test_spark_resolves_the_persons_of_the_in_process_resolver(spark_engine, rules):
    identifiers, edges = shop(seed=7, graphs=120)
    expected = resolve_persons(identifiers, edges, rules, now=NOW)
    assert expected.merges.is_empty() and expected.persons.height > 100
    limited = expected.id_map.group_by("person_id", "identifier_type").len()
    assert_same(resolved_on_spark(engine := spark_engine, identifiers, edges, rules), expected)

    # The next run: splits and merges against the last result, ids kept, the log the same.
    later = changed(edges, seed=8)
    previous = PreviousIdentity(expected.id_map, expected.persons)
    again = resolve_persons(identifiers, later, rules, previous=previous, now=NOW)
    assert set(again.merges["reason"]) == {"merge", "split"}
    assert_same(resolved_on_spark(engine, identifiers, later, rules, previous), again)
    assert limited.height  # (the case is not trivial: several types per person)


def test_a_split_part_whose_anchor_names_an_earlier_person_gets_the_next_id(spark_engine):
    """The person anchored at a1 splits off from the three identifiers that keep its id: its own hashed id
    is taken, so it is "a1#1"'s, as in-process."""
    day = [START + timedelta(days=d) for d in range(4)]
    links = [("anonymous_id", "a1", "user_id", "u1", day[1]), ("user_id", "u1", "email", "e1@x.com", day[2]),
             ("user_id", "u1", "phone", "+15550001", day[3])]
    edges = pl.DataFrame([(*link[:4], "gen", link[4], link[4]) for link in links], schema=EDGE_SCHEMA, orient="row")
    identifiers = pl.DataFrame([("anonymous_id", "a1", day[0])], schema=IDENTIFIER_SCHEMA, orient="row")
    first = resolve_persons(identifiers, edges, RULES, now=NOW)
    split = edges.filter(pl.col("left_type") != "anonymous_id")
    expected = resolve_persons(identifiers, split, RULES, previous=PreviousIdentity(first.id_map, first.persons), now=NOW)
    assert "#" not in first.persons["person_id"][0]
    result = resolved_on_spark(spark_engine, identifiers, split, RULES, PreviousIdentity(first.id_map, first.persons))
    assert_same(result, expected)
    from cdp_assets.identity.resolve import _hashed

    assert result[0].filter(identifier_value="a1")["person_id"][0] == _hashed("anonymous_id:a1#1")
