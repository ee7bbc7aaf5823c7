"""Identity resolution (contract §7): one hand-written case per rule, then properties on random graphs."""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import networkx as nx
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdp_assets.identity.normalize import normalize_identifiers
from cdp_assets.identity.resolve import PreviousIdentity, Resolution, resolve_persons
from cdp_assets.identity.rules import IdentifierRule, IdentityRules, load_identity_rules

REPO = Path(__file__).resolve().parents[1]
RULES = load_identity_rules(REPO / "config" / "identity.yaml")
START = datetime(2026, 1, 1)
EDGE_COLUMNS = ["left_type", "left_value", "right_type", "right_value", "source", "first_seen_at", "last_seen_at"]


def day(n: int) -> datetime:
    return START + timedelta(days=n)


def graph(links, alone=()) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(identifiers, edges) from links ("type:value", "type:value", day) and lone sightings ("type:value", day)."""
    sightings = [(end, d) for left, right, d in links for end in (left, right)] + list(alone)
    first, last = {}, {}
    for name, d in sightings:
        first[name], last[name] = min(first.get(name, d), d), max(last.get(name, d), d)
    identifiers = pl.DataFrame(
        [(*name.split(":", 1), day(first[name]), day(last[name])) for name in first],
        schema=["identifier_type", "identifier_value", "first_seen_at", "last_seen_at"],
        orient="row",
    )
    edges = pl.DataFrame(
        [(*left.split(":", 1), *right.split(":", 1), "test", day(d), day(d)) for left, right, d in links],
        schema=EDGE_COLUMNS,
        orient="row",
    )
    return identifiers, edges


def resolve(links, alone=(), rules=RULES, previous: Resolution | None = None) -> Resolution:
    identifiers, edges = graph(links, alone)
    state = PreviousIdentity(previous.id_map, previous.persons) if previous else None
    return resolve_persons(identifiers, edges, rules, previous=state, now=day(100))


def persons(resolution: Resolution) -> set[frozenset[str]]:
    name = pl.concat_str("identifier_type", "identifier_value", separator=":")
    named = resolution.id_map.select("person_id", name=name)
    return {frozenset(group) for group in named.group_by("person_id").agg("name")["name"]}


def person_of(resolution: Resolution, name: str) -> str:
    type_, value = name.split(":", 1)
    found = resolution.id_map.filter(identifier_type=type_, identifier_value=value)["person_id"]
    assert len(found) == 1, f"{name} maps to {found.to_list()}"
    return found[0]


def hashed(key: str) -> str:
    return "p_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def same(first: Resolution, other: Resolution, merges: bool = True) -> bool:
    """Equal results (rows come in no particular order)."""
    return (
        first.id_map.sort("identifier_type", "identifier_value").equals(other.id_map.sort("identifier_type", "identifier_value"))
        and first.persons.sort("person_id").equals(other.persons.sort("person_id"))
        and (not merges or first.merges.equals(other.merges))
    )


def merge_log(resolution: Resolution) -> list[tuple[str, str, str]]:
    return resolution.merges.select("from_person_id", "to_person_id", "reason").rows()


# --- one case per rule -----------------------------------------------------------------------------------


def test_anonymous_browsing_then_sign_up_is_one_person_named_after_its_first_identifier():
    resolution = resolve(
        [("user_id:u1", "anonymous_id:a1", 3), ("user_id:u1", "email:ann@x.com", 3)],
        alone=[("anonymous_id:a1", 1)],
    )
    assert persons(resolution) == {frozenset({"anonymous_id:a1", "user_id:u1", "email:ann@x.com"})}
    assert resolution.persons.rows() == [(hashed("anonymous_id:a1"), day(1))]
    assert resolution.merges.is_empty()


def test_alias_merges_previous_id_into_user_id():
    resolution = resolve(
        [("user_id:u1", "anonymous_id:a1", 2), ("user_id:u1", "anonymous_id:a0", 5)],  # alias: previousId a0
        alone=[("anonymous_id:a0", 1), ("anonymous_id:other", 1)],
    )
    assert persons(resolution) == {
        frozenset({"user_id:u1", "anonymous_id:a1", "anonymous_id:a0"}),
        frozenset({"anonymous_id:other"}),
    }


def test_identifiers_are_compared_after_normalization():
    raw = pl.DataFrame(
        [("email", "  Ann@X.com ", "user_id", "u1"), ("email", "ann@x.com", "crm_id", " 7 ")],
        schema=["left_type", "left_value", "right_type", "right_value"],
        orient="row",
    ).with_columns(source=pl.lit("test"), first_seen_at=pl.lit(day(1)), last_seen_at=pl.lit(day(1)))
    edges = normalize_identifiers(normalize_identifiers(raw, "left_type", "left_value"), "right_type", "right_value")
    identifiers = pl.concat([
        edges.select(identifier_type=f"{end}_type", identifier_value=f"{end}_value", first_seen_at="first_seen_at",
                     last_seen_at="last_seen_at")
        for end in ("left", "right")
    ]).unique(["identifier_type", "identifier_value"])
    resolution = resolve_persons(identifiers, edges, RULES, now=day(100))
    assert persons(resolution) == {frozenset({"email:ann@x.com", "user_id:u1", "crm_id:7"})}


def test_blocked_values_link_nothing_and_get_no_person():
    resolution = resolve([
        ("user_id:u1", "anonymous_id:undefined", 1),
        ("user_id:u2", "anonymous_id:undefined", 1),
        ("user_id:u2", "device_id:NULL", 1),  # `any` values match whatever their case
        ("user_id:u3", "device_id:NULL", 1),
        ("user_id:u3", "email:test@test.com", 1),
        ("user_id:u1", "email:test@test.com", 1),
        ("user_id:null", "email:ann@x.com", 1),
    ])
    assert persons(resolution) == {frozenset({"user_id:u1"}), frozenset({"user_id:u2"}), frozenset({"user_id:u3"}),
                                   frozenset({"email:ann@x.com"})}


@pytest.mark.parametrize("users", [10, 11])
def test_shared_identifier_links_none(users):
    """Threshold 10: a device seen with 11 users links none of them; with 10 it is one user's laptop."""
    resolution = resolve([(f"user_id:u{n:02}", "device_id:kiosk", n) for n in range(1, users + 1)])
    if users > RULES.shared_identifier_threshold:
        assert len(persons(resolution)) == users + 1
        assert frozenset({"device_id:kiosk"}) in persons(resolution)
    else:
        assert len(persons(resolution)) == users
        assert person_of(resolution, "device_id:kiosk") == person_of(resolution, f"user_id:u{users:02}")


def test_family_laptop_stays_two_persons_and_goes_to_the_most_recently_seen():
    household = [("user_id:u1", "email:ann@x.com", 1), ("user_id:u2", "email:bob@x.com", 1)]
    laptop = "anonymous_id:laptop"
    bob_later = resolve(household + [("user_id:u1", laptop, 3), ("user_id:u2", laptop, 5)])
    assert persons(bob_later) == {
        frozenset({"user_id:u1", "email:ann@x.com"}),
        frozenset({"user_id:u2", "email:bob@x.com", "anonymous_id:laptop"}),
    }
    ann_later = resolve(household + [("user_id:u1", laptop, 6), ("user_id:u2", laptop, 5)])
    assert person_of(ann_later, laptop) == person_of(ann_later, "user_id:u1")
    same_time = [("user_id:u2", laptop, 5), (laptop, "user_id:u1", 5)]
    for links in (household + same_time, same_time[::-1] + household):  # a tie goes to the smaller value
        tie = resolve(links)
        assert person_of(tie, laptop) == person_of(tie, "user_id:u1") != person_of(tie, "user_id:u2")


def test_email_limit_keeps_the_five_most_recently_seen():
    resolution = resolve([("user_id:u1", f"email:e{n}@x.com", n) for n in range(1, 7)])
    assert persons(resolution) == {
        frozenset({"user_id:u1", *(f"email:e{n}@x.com" for n in range(2, 7))}),
        frozenset({"email:e1@x.com"}),
    }


def test_strong_links_win_over_anonymous_ones():
    """The crm record's email belongs to u1 although the laptop also saw u2 later."""
    resolution = resolve([
        ("crm_id:c1", "email:ann@x.com", 1),
        ("user_id:u1", "email:ann@x.com", 2),
        ("anonymous_id:laptop", "email:ann@x.com", 3),
        ("anonymous_id:laptop", "user_id:u2", 9),
    ])
    assert persons(resolution) == {
        frozenset({"crm_id:c1", "email:ann@x.com", "user_id:u1"}),
        frozenset({"user_id:u2", "anonymous_id:laptop"}),
    }


def test_ids_are_stable_across_runs():
    links = [("user_id:u1", "anonymous_id:a1", 1), ("user_id:u2", "email:bob@x.com", 2)]
    first = resolve(links)
    again = resolve(links, previous=first)
    assert same(again, first, merges=False) and again.merges.is_empty()
    grown = resolve(links + [("user_id:u1", "email:ann@x.com", 7)], alone=[("anonymous_id:new", 8)], previous=first)
    assert person_of(grown, "email:ann@x.com") == person_of(first, "user_id:u1")
    assert grown.persons.filter(person_id=person_of(first, "user_id:u1"))["created_at"].to_list() == [day(1)]
    assert person_of(grown, "anonymous_id:new") == hashed("anonymous_id:new")
    assert grown.merges.is_empty()


def test_merge_keeps_the_older_id_and_records_it():
    browsing = [("anonymous_id:a0", "device_id:d0", 1)]
    signed_up = [("user_id:u1", "email:ann@x.com", 4)]
    first = resolve(browsing + signed_up)
    older, newer = person_of(first, "anonymous_id:a0"), person_of(first, "user_id:u1")
    merged = resolve(browsing + signed_up + [("user_id:u1", "anonymous_id:a0", 6)], previous=first)
    assert set(merged.id_map["person_id"]) == {older}
    assert merged.persons.rows() == [(older, day(1))]
    assert merge_log(merged) == [(newer, older, "merge")]
    assert merged.merges["at"].to_list() == [day(100)]


def test_split_keeps_the_id_with_most_identifiers_and_records_the_new_one():
    first = resolve(
        [("user_id:u1", "anonymous_id:a1", 2), ("user_id:u1", "email:ann@x.com", 3)], alone=[("anonymous_id:a1", 1)]
    )
    person = person_of(first, "user_id:u1")
    assert person == hashed("anonymous_id:a1")
    split = resolve([("user_id:u1", "email:ann@x.com", 3)], alone=[("anonymous_id:a1", 1)], previous=first)
    assert person_of(split, "user_id:u1") == person_of(split, "email:ann@x.com") == person
    alone = person_of(split, "anonymous_id:a1")
    assert alone == hashed("anonymous_id:a1#1")  # its natural id is still in use: the key's first retry
    assert merge_log(split) == [(person, alone, "split")]


def test_identifiers_only_named_by_an_edge_still_get_a_person():
    identifiers, edges = graph([("user_id:u1", "anonymous_id:a1", 1)])
    resolution = resolve_persons(identifiers.filter(identifier_type="user_id"), edges, RULES, now=day(100))
    assert persons(resolution) == {frozenset({"user_id:u1", "anonymous_id:a1"})}


def test_an_identifier_listed_twice_is_one_identifier_first_seen_at_its_earliest():
    identifiers, edges = graph([("user_id:u1", "email:ann@x.com", 5)], alone=[("email:bob@x.com", 3)])
    twice = pl.concat([identifiers, identifiers.with_columns(first_seen_at=pl.lit(day(2)))])
    resolution = resolve_persons(twice, edges, RULES, now=day(100))
    assert resolution.id_map.height == 3 and persons(resolution) == persons(resolve_persons(identifiers, edges, RULES))
    assert sorted(resolution.persons["created_at"]) == [day(2), day(2)]


# --- properties ------------------------------------------------------------------------------------------

TYPES = ["user_id", "crm_id", "email", "anonymous_id", "device_id"]
UNLIMITED = IdentityRules(identifiers=tuple(IdentifierRule(t) for t in TYPES))
LIMITED = IdentityRules(
    identifiers=(IdentifierRule("user_id", 1), IdentifierRule("crm_id", 1), IdentifierRule("email", 2),
                 IdentifierRule("anonymous_id"), IdentifierRule("device_id")),
    shared_identifier_threshold=2,
)
names = st.builds(lambda t, v: f"{t}:{v}", st.sampled_from(TYPES), st.sampled_from("abcdef"))
links = st.lists(st.tuples(names, names, st.integers(1, 4)), max_size=30)
alone = st.lists(st.tuples(names, st.integers(1, 4)), max_size=5)
FAST = settings(max_examples=60, deadline=None)


@FAST
@given(links, alone)
def test_without_limits_persons_are_the_connected_components(links, alone):
    expected = nx.Graph()
    expected.add_nodes_from(name for name, _ in alone)
    expected.add_edges_from((left, right) for left, right, _ in links)
    assert persons(resolve(links, alone, rules=UNLIMITED)) == {frozenset(c) for c in nx.connected_components(expected)}


@FAST
@given(links, alone, st.randoms(use_true_random=False))
def test_row_order_direction_and_duplicates_do_not_matter(links, alone, rnd):
    shuffled = [(right, left, d) if rnd.random() < 0.5 else (left, right, d) for left, right, d in links]
    shuffled += rnd.sample(links, len(links) // 2)
    rnd.shuffle(shuffled)
    first, other = resolve(links, alone, rules=LIMITED), resolve(shuffled, rnd.sample(alone, len(alone)), rules=LIMITED)
    assert same(first, other)


@FAST
@given(links, alone, st.integers(0, 30), st.sampled_from([UNLIMITED, LIMITED, RULES]))
def test_incremental_run_gives_the_persons_of_a_full_rebuild(links, alone, cut, rules):
    earlier = resolve(links[:cut], alone, rules=rules)
    incremental, rebuild = resolve(links, alone, rules=rules, previous=earlier), resolve(links, alone, rules=rules)
    assert persons(incremental) == persons(rebuild)
    assert incremental.persons["person_id"].is_unique().all()
    assert set(incremental.merges["from_person_id"]) <= set(earlier.persons["person_id"])
    assert set(incremental.id_map["person_id"]) == set(incremental.persons["person_id"])
    again = resolve(links, alone, rules=rules, previous=incremental)
    assert same(again, incremental, merges=False)
    assert again.merges.is_empty()


@FAST
@given(links, alone)
def test_no_person_exceeds_a_limit_and_every_identifier_has_one_person(links, alone):
    resolution = resolve(links, alone, rules=LIMITED)
    seen = {name for left, right, _ in links for name in (left, right)} | {name for name, _ in alone}
    mapped = [f"{t}:{v}" for t, v in resolution.id_map.select("identifier_type", "identifier_value").rows()]
    assert sorted(mapped) == sorted(seen)
    linked = nx.Graph([(left, right) for left, right, _ in links])
    linked.add_nodes_from(seen)
    component = {name: n for n, names in enumerate(nx.connected_components(linked)) for name in names}
    for person in persons(resolution):
        counts = Counter(name.split(":")[0] for name in person)
        assert all(counts[rule.type] <= rule.limit for rule in LIMITED.identifiers if rule.limit)
        assert len({component[name] for name in person}) == 1  # limits only ever split, never join
