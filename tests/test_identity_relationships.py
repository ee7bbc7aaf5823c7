"""cdp.relationships on hand-made tables: group calls, households and parents relate persons, never merge them."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb

from cdp_assets.config import SourceConfig
from cdp_assets.identity.edges import identifier_lookup, identifier_sightings, identifiers_seen, identity_edges, normalized_sightings
from cdp_assets.identity.relationships import person_relationships
from cdp_assets.identity.resolve import resolve_persons
from cdp_assets.identity.rules import load_identity_rules

RULES = load_identity_rules(Path(__file__).resolve().parents[1] / "config" / "identity.yaml")
CRM = SourceConfig(
    name="crm", kind="cdc", partitions="none", primary_key="id", time_column="updated_at",
    identifiers={"id": "crm_id", "email": "email"},
    relationships={"household_id": "household", "parent_crm_id": "parent"},
)
SOURCES = {"web": SourceConfig(name="web", kind="events", partitions="hourly"), "crm": CRM}


def shop() -> duckdb.DuckDBPyConnection:
    """Two account members (one signed in, one anonymous) and a CRM family: a parent and a child in one household."""
    con = duckdb.connect()
    con.execute("CREATE SCHEMA cdp; CREATE SCHEMA core; CREATE SCHEMA validated")
    con.execute(
        """CREATE TABLE cdp.events AS SELECT * FROM (VALUES
             ('e1', 'identify', 'u1', 'a1', NULL, NULL, '{"email": "Ann@X.com"}', '{}', 'web', TIMESTAMP '2026-01-01 10:00'),
             ('e2', 'group', 'u1', 'a1', NULL, 'acme', '{}', '{}', 'web', TIMESTAMP '2026-01-02 10:00'),
             ('e3', 'group', NULL, 'a2', NULL, 'acme', '{}', '{}', 'web', TIMESTAMP '2026-01-03 10:00'),
             ('e4', 'group', 'u1', NULL, NULL, 'acme', '{}', '{}', 'web', TIMESTAMP '2026-01-04 10:00'))
           AS t(event_id, event_type, user_id, anonymous_id, previous_id, group_id, traits, context, source, occurred_at)"""
    )
    con.execute("ALTER TABLE cdp.events ALTER traits TYPE JSON; ALTER TABLE cdp.events ALTER context TYPE JSON")
    con.execute(
        """CREATE TABLE validated.crm AS SELECT * FROM (VALUES
             ('c1', 'ann@x.com', 'h1', NULL, TIMESTAMP '2026-01-01 09:00'),
             ('c2', 'kid@x.com', 'h1', 'c1', TIMESTAMP '2026-01-05 09:00'))
           AS t(id, email, household_id, parent_crm_id, updated_at)"""
    )
    sightings = normalized_sightings(identifier_sightings(con, SOURCES), RULES)
    edges = identity_edges(sightings, RULES)
    resolution = resolve_persons(identifiers_seen(sightings), edges, RULES, now=datetime(2026, 2, 1))
    for table, frame in {"cdp.identity_edges": edges, "cdp.id_map": resolution.id_map,
                         "core.identifier_lookup": identifier_lookup(sightings)}.items():
        con.register("frame", frame)
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM frame")
        con.unregister("frame")
    return con


def person(con, identifier_type: str, value: str) -> str:
    return con.execute(
        "SELECT person_id FROM cdp.id_map WHERE identifier_type = ? AND identifier_value = ?", [identifier_type, value]
    ).fetchone()[0]


def test_relationships_relate_persons_that_stay_apart():
    con = shop()
    relationships = person_relationships(con, SOURCES, RULES)
    ann, anonymous, kid = person(con, "user_id", "u1"), person(con, "anonymous_id", "a2"), person(con, "crm_id", "c2")
    assert person(con, "crm_id", "c1") == ann  # the CRM record and the signed-in user share an email
    assert len({ann, anonymous, kid}) == 3
    assert sorted(relationships.select("person_id", "kind", "related_value", "source").rows()) == sorted([
        (ann, "group_member", "acme", "web"), (anonymous, "group_member", "acme", "web"),
        (ann, "household", "h1", "crm"), (kid, "household", "h1", "crm"), (kid, "parent", "c1", "crm"),
    ])
    # seen twice in the account: first and last sighting
    membership = relationships.filter(person_id=ann, kind="group_member").row(0, named=True)
    assert (membership["first_seen_at"], membership["last_seen_at"]) == (datetime(2026, 1, 2, 10), datetime(2026, 1, 4, 10))


def test_group_household_and_parent_values_never_become_identifiers_or_edges():
    con = shop()
    values = ["acme", "h1"]
    assert not con.execute("SELECT count(*) FROM cdp.id_map WHERE list_contains(?, identifier_value)", [values]).fetchone()[0]
    edges = con.execute("SELECT left_type, left_value, right_type, right_value FROM cdp.identity_edges").fetchall()
    assert all(v not in values for edge in edges for v in edge)
    # the parent's crm id is an identifier of the parent only: no edge ties it to the child's record
    kid = {(t, v) for t, v in con.execute("SELECT identifier_type, identifier_value FROM cdp.id_map WHERE person_id = ?",
                                          [person(con, "crm_id", "c2")]).fetchall()}
    assert kid == {("crm_id", "c2"), ("email", "kid@x.com")}
    assert sorted(edges) == [("crm_id", "c1", "email", "ann@x.com"), ("crm_id", "c2", "email", "kid@x.com"),
                             ("user_id", "u1", "anonymous_id", "a1"), ("user_id", "u1", "email", "ann@x.com")]
