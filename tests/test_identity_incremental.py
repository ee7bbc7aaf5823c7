"""Incremental resolution (cdp_assets.identity.store): an hourly run re-resolves only the components new
edges reach, and ends exactly where a full rebuild over the same history ends (ids and merge log too)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import networkx as nx
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdp_assets.identity.rules import IdentifierRule, IdentityRules, load_identity_rules
from cdp_assets.events.validate import new_batch, run_sql
from cdp_assets.identity.store import update_persons

REPO = Path(__file__).resolve().parents[1]
RULES = load_identity_rules(REPO / "config" / "identity.yaml")
START = datetime(2026, 1, 1)
TYPES = ["user_id", "crm_id", "email", "anonymous_id", "device_id"]
UNLIMITED = IdentityRules(identifiers=tuple(IdentifierRule(t) for t in TYPES))
LIMITED = IdentityRules(
    identifiers=(IdentifierRule("user_id", 1), IdentifierRule("crm_id", 1), IdentifierRule("email", 2),
                 IdentifierRule("anonymous_id"), IdentifierRule("device_id")),
    blocked_any=frozenset({"f"}),
    shared_identifier_threshold=2,
)


def day(n: int) -> datetime:
    return START + timedelta(days=n)


class Warehouse:
    """An in-memory warehouse holding the identity stage's output for a set of links."""

    def __init__(self, rules: IdentityRules):
        self.con = duckdb.connect()
        self.rules = rules
        self.run = 0

    def load(self, links, alone=()) -> None:
        """Replace cdp.identity_edges and core.identifiers as the identity_edges asset does: links are
        ("type:value", "type:value", day, source), lone sightings ("type:value", day)."""
        edges = pl.DataFrame(
            [(*left.split(":", 1), *right.split(":", 1), source, day(d), day(d)) for left, right, d, source in links],
            schema={"left_type": pl.String, "left_value": pl.String, "right_type": pl.String, "right_value": pl.String,
                    "source": pl.String, "first_seen_at": pl.Datetime("us"), "last_seen_at": pl.Datetime("us")},
            orient="row",
        ).group_by("left_type", "left_value", "right_type", "right_value", "source").agg(
            pl.col("first_seen_at").min(), pl.col("last_seen_at").max()
        )
        sightings = [(name, d) for left, right, d, _ in links for name in (left, right)] + list(alone)
        identifiers = pl.DataFrame(
            [(*name.split(":", 1), day(d)) for name, d in sightings],
            schema={"identifier_type": pl.String, "identifier_value": pl.String, "seen_at": pl.Datetime("us")},
            orient="row",
        ).group_by("identifier_type", "identifier_value").agg(
            first_seen_at=pl.col("seen_at").min(), last_seen_at=pl.col("seen_at").max()
        )
        run_sql(self.con, "state")
        # The change log the dbt identity models write: every end of an edge that appeared, vanished or changed,
        # and every identifier whose sightings changed (here exactly those; dbt writes a superset).
        old = {table: self._rows(table) for table in ("cdp.identity_edges", "core.identifiers")}
        for table, frame in (("cdp.identity_edges", edges), ("core.identifiers", identifiers)):
            self.con.register("_frame", frame)
            self.con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM _frame")
            self.con.unregister("_frame")
        touched = {(t, v) for row in old["cdp.identity_edges"] ^ self._rows("cdp.identity_edges") for t, v in (row[0:2], row[2:4])}
        touched |= {row[0:2] for row in old["core.identifiers"] ^ self._rows("core.identifiers")}
        batch = new_batch(self.con, "test", day(100 + self.run))
        self.con.execute("CREATE TABLE IF NOT EXISTS core.touched_identifiers (identifier_type VARCHAR, identifier_value VARCHAR, _batch_id BIGINT)")
        if touched:
            self.con.executemany("INSERT INTO core.touched_identifiers VALUES (?, ?, ?)", [(*key, batch) for key in touched])

    def _rows(self, table: str) -> set[tuple]:
        exists = self.con.execute(f"SELECT count(*) FROM information_schema.tables WHERE table_schema || '.' || table_name = '{table}'").fetchone()[0]
        return set(self.con.execute(f"SELECT * FROM {table}").fetchall()) if exists else set()

    def update(self, full_rebuild: bool = False):
        self.run += 1
        return update_persons(self.con, self.rules, now=day(100 + self.run), full_rebuild=full_rebuild)

    def state(self) -> tuple[list, list, list]:
        return tuple(self.con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall() for table in (
            "cdp.id_map", "core.persons", "cdp.identity_merges"))

    def persons(self) -> set[frozenset[str]]:
        rows = self.con.execute(
            "SELECT list(identifier_type || ':' || identifier_value) FROM cdp.id_map GROUP BY person_id"
        ).fetchall()
        return {frozenset(names) for (names,) in rows}


# --- properties ------------------------------------------------------------------------------------------

names = st.builds(lambda t, v: f"{t}:{v}", st.sampled_from(TYPES), st.sampled_from("abcdef"))
link = st.tuples(names, names, st.integers(1, 4), st.sampled_from(["web", "crm"]))
batches = st.lists(st.tuples(st.lists(link, max_size=12), st.lists(st.integers(0, 40), max_size=3)), min_size=1, max_size=4)
alone = st.lists(st.tuples(names, st.integers(1, 4)), max_size=4)
FAST = settings(max_examples=40, deadline=None)


@FAST
@given(batches, alone, st.sampled_from([UNLIMITED, LIMITED, RULES]))
def test_hourly_runs_end_where_full_rebuilds_end(batches, alone, rules):
    """Batches of new edges (and removed ones, as an erasure or a changed record does) applied run by run:
    incremental updates and full rebuilds over the same history agree on every row after every run."""
    incremental, rebuilt = Warehouse(rules), Warehouse(rules)
    links: list = []
    for number, (added, removed) in enumerate(batches):
        links = [edge for index, edge in enumerate(links) if index not in removed] + added
        for warehouse in (incremental, rebuilt):
            warehouse.load(links, alone)
        update = incremental.update()
        rebuilt.update(full_rebuild=True)
        assert update.mode == ("full" if number == 0 else "incremental")
        assert incremental.state() == rebuilt.state()


@FAST
@given(batches, alone, st.sampled_from([UNLIMITED, LIMITED, RULES]))
def test_every_run_logs_exactly_the_identifiers_whose_person_changed(batches, alone, rules):
    """core.id_map_changes is what per-person models downstream recompute from: each run must log every
    identifier whose person differs from the run before (new, gone, merged, split) and nothing else."""
    warehouse = Warehouse(rules)
    links: list = []
    before: dict = {}
    for added, removed in batches:
        links = [edge for index, edge in enumerate(links) if index not in removed] + added
        warehouse.load(links, alone)
        warehouse.update()
        after = {(t, v): p for t, v, p in warehouse.con.execute("SELECT * FROM cdp.id_map").fetchall()}
        logged = warehouse.con.execute(
            "SELECT identifier_type, identifier_value, person_before, person_after FROM core.id_map_changes "
            "WHERE _batch_id = (SELECT max(batch_id) FROM core.batches WHERE stage = 'identity')").fetchall()
        expected = {(*key, before.get(key), after.get(key)) for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
        assert len(logged) == len(set(logged)) and set(logged) == expected
        before = after


@FAST
@given(st.lists(link, max_size=30), alone, st.randoms(use_true_random=False))
def test_without_limits_any_split_into_runs_gives_the_connected_components(links, alone, rnd):
    warehouse = Warehouse(UNLIMITED)
    shuffled = rnd.sample(links, len(links))
    cuts = sorted(rnd.sample(range(len(links) + 1), min(3, len(links) + 1)))
    for cut in cuts + [len(links)]:
        warehouse.load(shuffled[:cut], alone)
        warehouse.update()
    expected = nx.Graph()
    expected.add_nodes_from(name for name, _ in alone)
    expected.add_edges_from((left, right) for left, right, _, _ in links)
    assert warehouse.persons() == {frozenset(c) for c in nx.connected_components(expected)}


# --- one case per rule ------------------------------------------------------------------------------------


def shop(persons: int) -> list:
    """`persons` persons of a user id, an email and an anonymous id."""
    return [edge for n in range(persons) for edge in (
        (f"user_id:u{n}", f"email:e{n}@x.com", 1, "web"), (f"user_id:u{n}", f"anonymous_id:a{n}", 1, "web"))]


def test_an_hourly_run_touches_only_the_persons_new_edges_reach():
    warehouse = Warehouse(RULES)
    warehouse.load(shop(50))
    assert warehouse.update().identifiers == 150
    before = dict(warehouse.con.execute("SELECT identifier_value, person_id FROM cdp.id_map").fetchall())
    warehouse.load(shop(50) + [("user_id:u7", "device_id:d7", 5, "web"), ("anonymous_id:new", "device_id:d9", 5, "web")])
    update = warehouse.update()
    assert (update.mode, update.identifiers) == ("incremental", 3 + 1 + 2)  # u7's person, the device, a new pair
    after = dict(warehouse.con.execute("SELECT identifier_value, person_id FROM cdp.id_map").fetchall())
    assert after["d7"] == before["u7"] and {k: after[k] for k in before} == before
    nothing = warehouse.update()
    assert (nothing.mode, nothing.identifiers) == ("incremental", 0)


def test_a_merge_then_a_split_are_recorded_as_in_a_rebuild():
    warehouse, rebuilt = Warehouse(RULES), Warehouse(RULES)
    browsing = [("anonymous_id:a0", "device_id:d0", 1, "web")]
    signed_up = [("user_id:u1", "email:ann@x.com", 4, "web")]
    joined = [("user_id:u1", "anonymous_id:a0", 6, "web")]
    for links in (browsing + signed_up, browsing + signed_up + joined, browsing + signed_up):
        for w in (warehouse, rebuilt):
            w.load(links)
        warehouse.update()
        rebuilt.update(full_rebuild=True)
        assert warehouse.state() == rebuilt.state()
    merges = warehouse.con.execute("SELECT reason FROM cdp.identity_merges ORDER BY \"at\"").fetchall()
    assert merges == [("merge",), ("split",)]


def test_a_shared_identifier_that_stops_being_shared_links_again():
    """Removing links can make a shared device ordinary: its other links (untouched) then join persons,
    so the update grows its scope beyond the components the changed edges touched."""
    kiosk = [(f"user_id:u{n:02}", "device_id:kiosk", n, "web") for n in range(1, 12)]
    extra = [(f"user_id:u{n:02}", f"email:e{n}@x.com", 1, "crm") for n in range(1, 12)]
    warehouse, rebuilt = Warehouse(RULES), Warehouse(RULES)
    for links in (kiosk + extra, kiosk[1:] + extra):  # 11 users: shared; then 10: one user's laptop
        for w in (warehouse, rebuilt):
            w.load(links)
        warehouse.update()
        rebuilt.update(full_rebuild=True)
        assert warehouse.state() == rebuilt.state()
    assert frozenset({"user_id:u11", "email:e11@x.com", "device_id:kiosk"}) in warehouse.persons()


def test_a_rule_change_rebuilds_everything():
    warehouse = Warehouse(RULES)
    warehouse.load(shop(3))
    warehouse.update()
    warehouse.rules = UNLIMITED
    assert warehouse.update().mode == "full"
    assert warehouse.update().mode == "incremental"


@pytest.mark.parametrize("order", [0, 1])
def test_the_family_laptop_goes_to_the_most_recent_user_whichever_run_brings_it(order):
    household = [("user_id:u1", "email:ann@x.com", 1, "web"), ("user_id:u2", "email:bob@x.com", 1, "web")]
    laptop = [("user_id:u1", "anonymous_id:laptop", 3, "web"), ("user_id:u2", "anonymous_id:laptop", 5, "web")]
    warehouse = Warehouse(RULES)
    first, second = (laptop[:1], laptop[1:]) if order == 0 else (laptop[1:], laptop[:1])
    warehouse.load(household + first)
    warehouse.update()
    warehouse.load(household + first + second)
    warehouse.update()
    assert warehouse.persons() == {
        frozenset({"user_id:u1", "email:ann@x.com"}),
        frozenset({"user_id:u2", "email:bob@x.com", "anonymous_id:laptop"}),
    }


def test_after_an_erasure_the_next_run_matches_a_rebuild():
    """The privacy job deletes an erased person's rows from every table (the state included), then the
    identity stage no longer sees their edges: the next update notices and agrees with a full rebuild."""
    from cdp_assets.privacy.erase import _delete_rows

    links = shop(4) + [("user_id:u1", "anonymous_id:laptop", 3, "web"), ("user_id:u2", "anonymous_id:laptop", 5, "web"),
                       ("email:e3@x.com", "device_id:d3", 2, "web")]
    incremental, rebuilt = Warehouse(RULES), Warehouse(RULES)
    for warehouse in (incremental, rebuilt):
        warehouse.load(links)
        warehouse.update(full_rebuild=warehouse is rebuilt)
        person = warehouse.con.execute("SELECT person_id FROM cdp.id_map WHERE identifier_value = 'u2'").fetchone()[0]
        erased = {v for (v,) in warehouse.con.execute("SELECT identifier_value FROM cdp.id_map WHERE person_id = ?", [person]).fetchall()}
        assert erased == {"u2", "e2@x.com", "a2", "laptop"}
        _delete_rows(warehouse.con, {person}, erased)
        warehouse.load([edge for edge in links if not {edge[0].split(":")[1], edge[1].split(":")[1]} & erased])
    update = incremental.update()
    rebuilt.update(full_rebuild=True)
    assert update.mode == "full"  # the erasure changed the state behind the store's back
    assert incremental.state() == rebuilt.state()
    assert frozenset({"user_id:u1", "email:e1@x.com", "anonymous_id:a1"}) in incremental.persons()


@FAST
@given(st.lists(link, min_size=1, max_size=20), alone, st.sampled_from([UNLIMITED, LIMITED, RULES]), st.data())
def test_after_erasing_any_person_the_next_run_matches_a_rebuild(links, alone, rules, data):
    """Erase a random person as the privacy job does (their rows deleted everywhere, their edges gone from
    the input), add new edges, and the next update still ends where a full rebuild ends."""
    from cdp_assets.privacy.erase import _delete_rows

    more = data.draw(st.lists(link, max_size=6))
    incremental, rebuilt = Warehouse(rules), Warehouse(rules)
    for warehouse in (incremental, rebuilt):
        warehouse.load(links, alone)
        warehouse.update(full_rebuild=warehouse is rebuilt)
    persons = sorted(r[0] for r in incremental.con.execute("SELECT DISTINCT person_id FROM cdp.id_map").fetchall())
    if not persons:
        return
    person = data.draw(st.sampled_from(persons))
    for warehouse in (incremental, rebuilt):
        erased = {v for (v,) in warehouse.con.execute(
            "SELECT identifier_value FROM cdp.id_map WHERE person_id = ?", [person]).fetchall()}
        _delete_rows(warehouse.con, {person}, erased)
        kept = [edge for edge in links + more if not {edge[0].split(":")[1], edge[1].split(":")[1]} & erased]
        warehouse.load(kept, [(name, d) for name, d in alone if name.split(":")[1] not in erased])
    incremental.update()
    rebuilt.update(full_rebuild=True)
    assert incremental.state() == rebuilt.state()
