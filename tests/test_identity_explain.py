"""`cdp profile A --explain B` and cdp.relationships on the generated shop (its manifest is the truth), then
--explain on hand-made graphs, one per reason two identifiers are or are not one person (hand-made
relationships: tests/test_identity_relationships.py)."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import polars as pl

from cdp_assets.identity.explain import explain_link
from cdp_assets.identity.rules import load_identity_rules
from cdp_assets.identity.store import update_persons
from cdp_resources.settings import config_dir

RULES = load_identity_rules(config_dir() / "identity.yaml")


def test_one_person_is_explained_by_a_chain_of_recorded_edges(demo, warehouse):
    person = demo.manifest["example_person"]
    lines = explain_link(warehouse, ("email", f"  {person['email'].upper()} "), ("phone", person["phone"]), RULES)
    assert lines[2].startswith("one person: chain of") and "✗" not in "\n".join(lines)
    assert lines[0].split(" → ")[1] == lines[1].split(" → ")[1]


def test_family_laptop_names_the_limit_that_kept_the_accounts_apart(demo, warehouse):
    laptop = demo.manifest["family_laptop"]
    first, second = laptop["user_ids"]
    lines = explain_link(warehouse, ("user_id", first), ("user_id", second), RULES)
    assert lines[2] == "not joined: chain of 2 edge(s)"
    assert f"anonymous_id:{laptop['anonymous_id']}" in lines[3] + lines[4]
    assert "✗ not applied: joining" in "\n".join(lines) and "(limit 1)" in "\n".join(lines)


def test_unrelated_identifiers_have_no_chain(demo, warehouse):
    lines = explain_link(warehouse, ("email", "nobody@example.org"), ("user_id", demo.manifest["family_laptop"]["user_ids"][0]), RULES)
    assert "no person" in lines[0] and lines[2].startswith("not joined: no chain")


def test_group_calls_relate_persons_without_merging_them(demo, warehouse):
    groups = warehouse.execute(
        "SELECT count(DISTINCT group_id) FROM cdp.events WHERE event_type = 'group' AND group_id IS NOT NULL"
    ).fetchone()[0]
    related = warehouse.execute("SELECT count(DISTINCT related_value) FROM cdp.relationships WHERE kind = 'group_member'").fetchone()[0]
    assert groups > 0 and related == groups
    # a group id never becomes an identifier of anyone
    assert not warehouse.execute(
        "SELECT count(*) FROM cdp.id_map WHERE identifier_value IN (SELECT group_id FROM cdp.events WHERE group_id IS NOT NULL)"
    ).fetchone()[0]


# --- hand-made graphs ---------------------------------------------------------------------------------------


def resolved(links) -> duckdb.DuckDBPyConnection:
    """A warehouse whose identity stage saw `links` ("type:value", "type:value", day) and resolved them."""
    at = lambda d: datetime(2026, 1, 1) + timedelta(days=d)  # noqa: E731
    edges = pl.DataFrame(
        [(*left.split(":", 1), *right.split(":", 1), "web", at(d), at(d)) for left, right, d in links],
        schema={"left_type": pl.String, "left_value": pl.String, "right_type": pl.String, "right_value": pl.String,
                "source": pl.String, "first_seen_at": pl.Datetime("us"), "last_seen_at": pl.Datetime("us")},
        orient="row",
    )
    identifiers = pl.concat([  # noqa: F841 (read by DuckDB by name)
        edges.select(identifier_type=f"{end}_type", identifier_value=f"{end}_value", first_seen_at="first_seen_at")
        for end in ("left", "right")
    ]).group_by("identifier_type", "identifier_value").agg(pl.col("first_seen_at").min())
    con = duckdb.connect()
    con.execute("CREATE SCHEMA cdp; CREATE SCHEMA core")
    con.execute("CREATE TABLE cdp.identity_edges AS SELECT * FROM edges")
    con.execute("CREATE TABLE core.identifiers AS SELECT * FROM identifiers")
    update_persons(con, RULES, now=at(100))
    return con


KIOSK = [(f"user_id:k{n:02}", "device_id:kiosk", 1) for n in range(11)]  # 11 users: shared (threshold 10)


def test_one_person_is_explained_by_edges_inside_it_not_by_a_shortcut_through_a_shared_device():
    con = resolved(KIOSK + [
        ("user_id:u1", "email:ann@x.com", 1), ("email:ann@x.com", "phone:+14155550100", 1),
        ("phone:+14155550100", "anonymous_id:a1", 1),
        ("user_id:u1", "device_id:kiosk", 2), ("anonymous_id:a1", "device_id:kiosk", 2),
    ])
    lines = explain_link(con, ("user_id", "u1"), ("anonymous_id", "a1"), RULES)
    assert lines[2] == "one person: chain of 3 edge(s)"
    assert "✗" not in "\n".join(lines) and "email:ann@x.com" in lines[3]


def test_two_persons_joined_only_by_a_shared_identifier_name_it():
    con = resolved(KIOSK)
    lines = explain_link(con, ("user_id", "k00"), ("user_id", "k01"), RULES)
    assert lines[2] == "not joined: chain of 2 edge(s)"
    assert "device_id:kiosk is shared: linked to 11 user_ids (more than shared_identifier_threshold 10)" in lines[3]


def test_family_laptop_link_names_the_limit_and_input_is_normalized():
    con = resolved([("user_id:u1", "email:ann@x.com", 1), ("user_id:u2", "email:bob@x.com", 1),
                    ("user_id:u1", "anonymous_id:laptop", 3), ("user_id:u2", "anonymous_id:laptop", 5)])
    lines = explain_link(con, ("email", "  ANN@x.com "), ("email", "bob@x.com"), RULES)
    ann, bob = (line.split(" → ")[1] for line in lines[:2])
    assert lines[0].startswith("email:ann@x.com → p_") and ann != bob
    assert lines[2:] == [
        "not joined: chain of 4 edge(s)",
        "  email:ann@x.com — user_id:u1   (seen in web)",
        f"  user_id:u1 — anonymous_id:laptop   (seen in web)   ✗ not applied: joining {ann} and {bob} "
        "would give one person 2 user_ids (limit 1)",
        "  anonymous_id:laptop — user_id:u2   (seen in web)",
        "  user_id:u2 — email:bob@x.com   (seen in web)",
    ]


def test_blocked_values_and_strangers():
    con = resolved([("user_id:u1", "anonymous_id:undefined", 1), ("user_id:u2", "email:bob@x.com", 1)])
    lines = explain_link(con, ("anonymous_id", "undefined"), ("user_id", "u2"), RULES)
    assert lines[0] == "anonymous_id:undefined → no person: a blocked value (config/identity.yaml blocked_values)"
    assert lines[2].startswith("not joined: no chain")
    lines = explain_link(con, ("user_id", "u1"), ("anonymous_id", "undefined"), RULES)
    assert lines[2:] == ["not joined: chain of 1 edge(s)",
                         "  user_id:u1 — anonymous_id:undefined   (seen in web)   ✗ not applied: anonymous_id:undefined is blocked"]
