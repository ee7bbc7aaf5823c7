"""cdp.relationships on hand-made records: group calls, households and parents relate persons, never merge them."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from cdp_assets.config import SourceConfig
from tests.pipeline import load_raw, refresh, warehouse

CRM = SourceConfig(
    name="crm_customers", kind="csv", partitions="none", primary_key="id", time_column="updated_at",
    columns={"id": "string", "email": "string", "household_id": "string", "parent_crm_id": "string", "updated_at": "timestamp"},
    identifiers={"id": "crm_id", "email": "email"},
    relationships={"household_id": "household", "parent_crm_id": "parent"},
)
SOURCES = {"web": SourceConfig(name="web", kind="events", partitions="hourly"), "crm_customers": CRM}


def _event(event_id, kind, user, anonymous, at, **fields):
    message = {"messageId": event_id, "type": kind, "userId": user, "anonymousId": anonymous, "timestamp": at, **fields}
    return json.dumps({k: v for k, v in message.items() if v is not None})


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """Two account members (one signed in, one anonymous) and a CRM family: a parent and a child in one household."""
    data_dir = tmp_path_factory.mktemp("shop")
    load_raw(data_dir, "web", "2026-01-01-10:00", [
        _event("e1", "identify", "u1", "a1", "2026-01-01T10:00:00Z", traits={"email": "Ann@X.com"}),
        _event("e2", "group", "u1", "a1", "2026-01-02T10:00:00Z", groupId="acme"),
        _event("e3", "group", None, "a2", "2026-01-03T10:00:00Z", groupId="acme"),
        _event("e4", "group", "u1", None, "2026-01-04T10:00:00Z", groupId="acme"),
    ])
    load_raw(data_dir, "crm_customers", "", [
        json.dumps({"id": "c1", "email": "ann@x.com", "household_id": "h1", "parent_crm_id": None, "updated_at": "2026-01-01 09:00:00"}),
        json.dumps({"id": "c2", "email": "kid@x.com", "household_id": "h1", "parent_crm_id": "c1", "updated_at": "2026-01-05 09:00:00"}),
    ])
    refresh(data_dir, SOURCES, now=datetime(2026, 2, 1))
    con = warehouse(data_dir)
    yield con
    con.close()


def person(con, identifier_type: str, value: str) -> str:
    return con.execute(
        "SELECT person_id FROM cdp.id_map WHERE identifier_type = ? AND identifier_value = ?", [identifier_type, value]
    ).fetchone()[0]


def test_relationships_relate_persons_that_stay_apart(shop):
    con = shop
    ann, anonymous, kid = person(con, "user_id", "u1"), person(con, "anonymous_id", "a2"), person(con, "crm_id", "c2")
    assert person(con, "crm_id", "c1") == ann  # the CRM record and the signed-in user share an email
    assert len({ann, anonymous, kid}) == 3
    rows = con.execute("SELECT person_id, kind, related_value, source FROM cdp.relationships").fetchall()
    assert sorted(rows) == sorted([
        (ann, "group_member", "acme", "web"), (anonymous, "group_member", "acme", "web"),
        (ann, "household", "h1", "crm_customers"), (kid, "household", "h1", "crm_customers"), (kid, "parent", "c1", "crm_customers"),
    ])
    # seen twice in the account: first and last sighting
    seen = con.execute("SELECT first_seen_at, last_seen_at FROM cdp.relationships WHERE person_id = ? AND kind = 'group_member'",
                       [ann]).fetchone()
    assert seen == (datetime(2026, 1, 2, 10), datetime(2026, 1, 4, 10))


def test_group_household_and_parent_values_never_become_identifiers_or_edges(shop):
    con = shop
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
