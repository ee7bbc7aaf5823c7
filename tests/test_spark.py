"""The Spark engine on a real standalone cluster (tests/spark_cluster.py): identity resolution on Spark gives the
in-process resolver's persons, ids, creation times and merge log, identifier for identifier.

Every Spark job costs seconds, so the generated graphs are resolved together: many small random graphs on
disjoint identifiers (a person never crosses a graph) in one resolution, checked against the in-process
resolver on the same union. Marked `spark`: `-m 'not spark'` skips them locally; CI runs them.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import polars as pl
import pytest

from cdp_assets.identity.resolve import PreviousIdentity, _hashed, resolve_persons
from cdp_assets.identity.rules import IdentifierRule, IdentityRules

pytestmark = pytest.mark.spark

# The shipped rules' kinds of rule with small limits and threshold: over-merges and shared identifiers in
# small graphs.
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
    for i in range(24):  # one long chain of anonymous ids
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

# A person anchored at anonymous id a1 (seen first) whose link to the rest goes: the rest keeps its id (three
# identifiers against one), so a1's own hashed id is taken and it gets "anonymous_id:split-a1#1"'s.
SPLIT_CASE = [("anonymous_id", "split-a1", "user_id", "split-u1", 1), ("user_id", "split-u1", "email", "split-e1@x.com", 2),
              ("user_id", "split-u1", "phone", "+15550000001", 3)]

def with_split_case(identifiers: pl.DataFrame, edges: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    links = [(*link[:4], "gen", START + timedelta(days=link[4]), START + timedelta(days=link[4])) for link in SPLIT_CASE]
    first = pl.DataFrame([("anonymous_id", "split-a1", START)], schema=IDENTIFIER_SCHEMA, orient="row")
    return pl.concat([identifiers, first]), pl.concat([edges, pl.DataFrame(links, schema=EDGE_SCHEMA, orient="row")])

def changed(edges: pl.DataFrame, seed: int) -> pl.DataFrame:
    """The next day's edges: some links gone (splits), some new ones across graphs' persons (merges)."""
    rnd = random.Random(seed)
    kept = edges.filter(pl.Series([rnd.random() > 0.15 for _ in range(edges.height)]))
    kept = kept.filter(pl.col("left_value") != "split-a1")
    ends = edges.select("right_type", "right_value").rows()
    later = START + timedelta(days=9)
    extra = [(*rnd.choice(ends), *rnd.choice(ends), "gen", later, later) for _ in range(edges.height // 10)]
    return pl.concat([kept, pl.DataFrame(extra, schema=EDGE_SCHEMA, orient="row")])

def on_spark(engine, frame: pl.DataFrame):
    return engine.session().createDataFrame(frame.to_pandas())

def warehouse_table(engine, table: str) -> pl.DataFrame:
    return pl.from_pandas(engine.table(table).toPandas())

def resolve_on_spark(engine, identifiers: pl.DataFrame, edges: pl.DataFrame, rules):
    """The identity stage on the Spark engine's tables, as the asset runs it."""
    from cdp_assets.identity.store import update_persons_in

    engine.replace_tables({"core.identifiers": on_spark(engine, identifiers), "cdp.identity_edges": on_spark(engine, edges)})
    return update_persons_in(engine, rules, NOW)

def assert_same(engine, expected, merges: pl.DataFrame) -> None:
    id_map = warehouse_table(engine, "cdp.id_map")
    assert id_map.height == expected.id_map.height
    assert id_map.sort(KEY).equals(expected.id_map.sort(KEY)), "person per identifier differs"
    assert warehouse_table(engine, "core.persons").sort("person_id").equals(
        expected.persons.sort("person_id").with_columns(pl.col("created_at").cast(pl.Datetime("us"))))
    order = ["reason", "from_person_id", "to_person_id"]
    assert merges.select(order).sort(order).rows() == expected.merges.select(order).sort(order).rows()

def test_spark_resolves_the_persons_of_the_in_process_resolver(spark_engine):
    """The shipped rules' checks with tight limits and threshold, so that small graphs break them: over-merges,
    shared devices, blocked values; then the next run's merges, splits and retried ids against the last."""
    identifiers, edges = with_split_case(*shop(seed=7, graphs=120))
    expected = resolve_persons(identifiers, edges, TIGHT, now=NOW)
    assert expected.persons.height > 100 and expected.merges.is_empty()
    update, by_type = resolve_on_spark(spark_engine, identifiers, edges, TIGHT)
    assert_same(spark_engine, expected, update.merges)
    assert by_type == dict(expected.id_map.group_by("identifier_type").len().sort("identifier_type").rows())
    assert (update.identifiers, update.persons) == (expected.id_map.height, expected.persons.height)

    later = changed(edges, seed=8)
    again = resolve_persons(identifiers, later, TIGHT, previous=PreviousIdentity(expected.id_map, expected.persons), now=NOW)
    assert set(again.merges["reason"]) == {"merge", "split"}
    retried = _hashed("anonymous_id:split-a1#1")
    assert again.id_map.filter(identifier_value="split-a1")["person_id"].to_list() == [retried]
    update, _ = resolve_on_spark(spark_engine, identifiers, later, TIGHT)
    assert_same(spark_engine, again, update.merges)
    assert warehouse_table(spark_engine, "cdp.identity_merges").height == again.merges.height  # appended once


def test_a_stopped_session_leaves_no_code_archive_on_sys_path(spark_engine):
    """The driver's copy of the code archive (`addPyFile`) is on this process's sys.path, and Spark deletes it
    when the session stops; left there, it broke whatever scanned sys.path next (dbt's plugin discovery)."""
    import os
    import sys

    spark_engine.session()
    assert [p for p in sys.path if p.endswith("cdp_code.zip")], "the archive is on the driver's path while it runs"
    spark_engine.stop()
    try:
        assert [p for p in sys.path if p.endswith(".zip") and not os.path.exists(p)] == []
    finally:
        spark_engine.session()  # the module's other tests share the engine


def test_the_clusters_own_settings_win_over_the_engine_defaults(spark_cluster, tmp_path):
    """A setting the cluster's configuration gives (here PYSPARK_SUBMIT_ARGS, as spark-defaults.conf would) is kept;
    the engine's small default applies only where nothing set it. The defaults used to be forced on the session,
    so a cluster's 200 shuffle partitions became 8."""
    import os
    import subprocess
    import sys

    probe = ("from pathlib import Path; import sys; from cdp_resources.spark import SparkEngine; "
             "s = SparkEngine(sys.argv[1], Path(sys.argv[2])).session(); "
             "print(s.conf.get('spark.sql.shuffle.partitions'), s.conf.get('spark.sql.adaptive.enabled'))")
    from spark_cluster import submit_args

    env = {**os.environ, "PYSPARK_SUBMIT_ARGS": submit_args({**spark_cluster.conf, "spark.sql.shuffle.partitions": "200"})}
    shown = subprocess.run([sys.executable, "-c", probe, spark_cluster.master_url, str(tmp_path / "warehouse")],
                           env=env, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert shown.stdout.split()[-2:] == ["200", "true"]  # the cluster's own value; the default where unset
