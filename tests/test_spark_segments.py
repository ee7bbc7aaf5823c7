"""Segments on Spark give the DuckDB members, rule for rule (a differential test on a real standalone cluster,
tests/spark_cluster.py).

A small generated shop runs through the pipeline on DuckDB; crafted events with dirty properties (JSON null,
[], "[]", "true", numeric and unreadable strings, offsets, nested keys, a non-object) join its events; the
tables a rule reads go to the Spark warehouse as Parquet (tests/spark_tables.py). Every shipped segment and the
edge-case rules below are compiled once per dialect against one catalog and evaluated at one `now` on both
engines: the members must be the same. The Spark catalog read from the copied tables must equal DuckDB's.
Marked `spark`: `-m 'not spark'` skips it locally; CI runs it. Only the evaluation is compared here: the segment
assets' bookkeeping on Spark (entries, exits) is tests/test_spark_activation.py's.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest
from spark_cluster import require_java
from spark_tables import copy_to_spark

from cdp_assets.segments.compiler import CompiledSegment, catalog_from_warehouse, column_type, compile_segment, load_segment
from cdp_assets.segments.spark import catalog_from_spark, segment_members
from cdp_resources.settings import config_dir

pytestmark = pytest.mark.spark

EVENTS = "core.segment_test_events"  # core.person_events (a view) plus the crafted events
TABLES = ["cdp.profiles", "cdp.events", "cdp.segment_membership", EVENTS]

EDGE_RULES = {
    # traits: missing values and negative operators, lists, time windows, strings
    "gender_not_m": "{trait: gender, op: neq, value: m}",
    "city_in_or_unknown": "any: [{trait: city, op: in, value: [Berlin, Paris, 'O''Brien; DROP TABLE x']}, {trait: city, op: is_not_set}]",
    "city_not_in": "{trait: city, op: not_in, value: [Berlin, Lyon]}",
    "email_shapes": "any: [{trait: email, op: ends_with, value: .com}, {trait: email, op: contains, value: \"'\"}, {trait: first_name, op: starts_with, value: A}]",
    "email_not_contains": "{trait: email, op: not_contains, value: example}",
    "bought_sku": "{trait: products_purchased, op: contains_any, value: [sku_0001, sku_0002, sku_0003, sku_0042]}",
    "bought_all": "{trait: products_purchased, op: contains_all, value: [sku_0042, sku_0018]}",
    "bought_none": "{trait: products_purchased, op: contains_none, value: [sku_0042]}",
    "purchases_set": "all: [{trait: products_purchased, op: is_set}, {not: {trait: signed_up_at, op: is_not_set}}]",
    "recent_order": "{trait: last_order_at, op: within_last, value: 60d}",
    "no_recent_order": "{trait: last_order_at, op: not_within_last, value: 20d}",
    "ordered_in_range": "{trait: last_order_at, op: between, value: [2020-01-01, 2100-12-31]}",
    "ordered_before": "any: [{trait: last_order_at, op: before, value: '2000-01-01T00:00:00+02:00'}, {trait: first_seen_at, op: after, value: 2001-01-01}]",
    "revenue_band": "{trait: total_revenue, op: between, value: [50, 1e3]}",
    "rfm_not_champion": "{trait: rfm_segment, op: not_in, value: [champions, loyal]}",
    "low_count": "all: [{trait: order_count, op: lte, value: 1}, {trait: orders_30d, op: lt, value: 2}]",
    "not_vip": "not: {segment: vip_buyers}",
    # events: counts, sums over dirty values, windows, not_followed_by
    "browsers": "{event: product_viewed, within: 3d, count: {gte: 3}}",
    "no_orders_30d": "{event: order_completed, within: 30d, count: {eq: 0}}",
    "order_count_band": "{event: order_completed, count: {between: [1, 2]}}",
    "big_spenders": "{event: order_completed, sum: {property: revenue, gte: 100}}",
    "eur_orders": "{event: order_completed, where: [{property: currency, op: neq, value: USD}], count: {neq: 0}}",
    "pricey_adds": "{event: product_added, within: 7d, where: {any: [{property: price, op: gt, value: 50}, {property: category, op: in, value: [bags, shoes]}]}}",
    "added_not_bought": "{event: product_added, within: 5d, not_followed_by: {event: order_completed, within: 1h}}",
    "added_not_bought_twice": "{event: product_added, within: 30d, count: {gte: 2}, not_followed_by: {event: order_completed, within: 1d, where: [{property: currency, op: eq, value: EUR}]}}",
    # crafted dirty properties (the edge_case event, unknown to the catalog: types inferred)
    "coupon_missing": "{event: edge_case, where: [{property: coupon, op: is_not_set}]}",
    "coupon_set": "{event: edge_case, where: [{property: coupon, op: is_set}]}",
    "coupon_not_save": "{event: edge_case, where: [{property: coupon, op: neq, value: SAVE}]}",
    "label_set": "{event: edge_case, where: [{property: label, op: is_set}]}",
    "tags_set": "{event: edge_case, where: [{property: tags, op: is_set}]}",
    "tags_any": "{event: edge_case, where: [{property: tags, op: contains_any, value: [a, '1', 'true']}]}",
    "tags_all": "{event: edge_case, where: [{property: tags, op: contains_all, value: [a, b]}]}",
    "tags_none": "{event: edge_case, where: [{property: tags, op: contains_none, value: [a]}]}",
    "flag_true": "{event: edge_case, where: [{property: flag, op: is_true}]}",
    "flag_false": "{event: edge_case, where: [{property: flag, op: is_false}]}",
    "amount_ge_10": "{event: edge_case, where: [{property: amount, op: gte, value: 10}]}",
    "amount_sum": "{event: edge_case, sum: {property: amount, between: [5, 20]}}",
    "amount_text": "{event: edge_case, where: [{property: amount, op: eq, value: '12'}]}",
    "when_recent": "{event: edge_case, where: [{property: when, op: within_last, value: 3d}]}",
    "when_not_recent": "{event: edge_case, where: [{property: when, op: not_within_last, value: 3d}]}",
    "when_between": "{event: edge_case, where: [{property: when, op: between, value: [2020-01-01, 2099-01-01]}]}",
    "nested_k": "{event: edge_case, where: [{property: nested.k, op: eq, value: 3}]}",
    "odd_name": "{event: edge_case, where: [{property: \"it's\", op: eq, value: 'a \"quoted\" value'}]}",
    "quote_value": "{event: edge_case, where: [{property: coupon, op: in, value: [\"x'); DROP TABLE cdp.profiles; --\", SAVE]}]}",
    "edge_recent_not_twice": "{not: {event: edge_case, within: 2d, count: {gte: 2}}}",
}


def crafted_events(now: datetime) -> list[tuple[int, str, timedelta]]:
    """(person index, properties JSON, age) of the edge_case events: values each engine could read its own way,
    one kind per person so that a person's membership turns on one reading."""
    iso = lambda age, suffix="Z": (now - age).isoformat(sep="T", timespec="seconds") + suffix  # noqa: E731
    return [
        (0, json.dumps({"coupon": None, "tags": [], "label": "[]", "flag": "true", "amount": "12",
                        "when": iso(timedelta(days=1)), "it's": 'a "quoted" value'}), timedelta(hours=1)),
        (0, "{}", timedelta(hours=20)),
        (1, json.dumps({"coupon": "SAVE", "tags": ["a", "b", None], "flag": True, "amount": 7.5,
                        "when": iso(timedelta(days=2), "+02:00"), "nested": {"k": 3}}), timedelta(hours=30)),
        (2, json.dumps({"tags": "not a list", "flag": False, "amount": "twelve", "nested": {"k": "3"},
                        "when": "garbage", "label": None}), timedelta(hours=2)),
        (3, "{}", timedelta(minutes=5)),
        (4, json.dumps({"coupon": "x'); DROP TABLE cdp.profiles; --", "tags": [1, True], "amount": 12,
                        "when": "2024-02-30", "nested": {"k": [3]}, "flag": "false"}), timedelta(days=1)),
        (5, json.dumps({"coupon": "", "tags": ["b"], "flag": "yes", "amount": " 5 ", "label": "",
                        "when": (now - timedelta(days=10)).date().isoformat()}), timedelta(days=10)),
        (6, "[1, 2]", timedelta(hours=3)),
        (7, "null", timedelta(hours=4)),
        (8, json.dumps({"amount": 1e3, "when": iso(timedelta(hours=5), ""), "tags": ["a"], "coupon": "SAVE",
                        "label": [1]}), timedelta(days=40)),
    ]


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> tuple[Path, datetime, Path]:
    """A small shop run through the pipeline on DuckDB, its events plus the crafted ones, and a folder with
    every rule to compare (the shipped segments and EDGE_RULES)."""
    from cdp_assets.runner import run_everything
    from cdp_assets.sample_data import generate_sample_data

    require_java()  # before building the shop: without Java there is nothing to compare it with
    root = tmp_path_factory.mktemp("spark-segments")
    data_dir = root / "data"
    patch = pytest.MonkeyPatch()
    patch.setenv("CDP_DATA_DIR", str(data_dir))
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0, tzinfo=None)
    generate_sample_data(data_dir, events=1500, seed=11, end=end, log=lambda *_: None)
    run_everything(progress=lambda *_: None)
    patch.undo()
    now = end + timedelta(minutes=30)
    with duckdb.connect(str(data_dir / "warehouse.duckdb")) as con:
        persons = [r[0] for r in con.execute("SELECT person_id FROM cdp.profiles ORDER BY person_id").fetchall()]
        con.execute(f"CREATE TABLE {EVENTS} AS SELECT * FROM core.person_events")
        for i, (person, properties, age) in enumerate(crafted_events(now)):
            con.execute(f"INSERT INTO {EVENTS} (person_id, event_id, event_name, occurred_at, properties) "
                        "VALUES (?, ?, 'edge_case', ?, ?)", [persons[person], f"edge-{i}", now - age, properties])
    rules = root / "segments"
    rules.mkdir()
    for path in sorted((config_dir() / "segments").glob("*.yaml")):
        shutil.copy(path, rules / path.name)
    for name, where in EDGE_RULES.items():
        (rules / f"{name}.yaml").write_text(f"name: {name}\nwhere:\n{textwrap.indent(where, '  ')}\n")
    return data_dir, now, rules


@pytest.fixture(scope="module")
def spark_shop(shop, spark_cluster):
    """A SparkEngine on the cluster, the rules' tables copied to its warehouse and registered in its session."""
    from cdp_resources.spark import SparkEngine

    data_dir, _, _ = shop
    engine = SparkEngine(spark_cluster.master_url, data_dir / "spark-warehouse", spark_cluster.conf)
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        copy_to_spark(con, engine, TABLES)
    engine.session()
    engine.register_tables()
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def spark_session(spark_shop):
    return spark_shop.session()


def union_of(compiled: list[CompiledSegment]) -> tuple[str, list]:
    """All rules in one query, each member tagged with its rule (one Spark job instead of one per rule)."""
    parts, params = [], []
    for i, rule in enumerate(compiled):
        parts.append(f"SELECT ? AS segment, person_id FROM (\n{rule.sql}\n) AS rule{i}")
        params += [rule.name, *rule.params]
    return "\nUNION ALL\n".join(parts), params


def test_segments_on_spark_have_the_duckdb_members(shop, spark_session):
    data_dir, now, rules = shop
    definitions = [load_segment(path) for path in sorted(rules.glob("*.yaml"))]
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        catalog = catalog_from_warehouse(con)
        expected = {d.name: set() for d in definitions}
        for d in definitions:
            compiled = compile_segment(d, catalog, now, events=EVENTS)
            expected[d.name] = {r[0] for r in con.execute(compiled.sql, compiled.params).fetchall()}
        everyone = {r[0] for r in con.execute("SELECT person_id FROM cdp.profiles").fetchall()}

    compiled = [compile_segment(d, catalog, now, events=EVENTS, dialect="spark") for d in definitions]
    sql, params = union_of(compiled)
    found = {d.name: set() for d in definitions}
    for row in spark_session.sql(sql, args=params).collect():
        found[row.segment].add(row.person_id)

    differ = {name: (sorted(found[name] - members), sorted(members - found[name]))
              for name, members in expected.items() if found[name] != members}
    assert not differ, f"Spark members differ from DuckDB's (extra on Spark, missing on Spark): {differ}"
    vip = next(rule for rule in compiled if rule.name == "vip_buyers")
    assert {r.person_id for r in segment_members(spark_session, vip).collect()} == expected["vip_buyers"]
    # The comparison means something: most rules find someone, and not everyone.
    assert sum(1 for members in expected.values() if members) >= 0.7 * len(expected), expected
    assert sum(1 for members in expected.values() if 0 < len(members) < len(everyone)) >= 0.5 * len(expected)
    edge = {name for name in EDGE_RULES if "edge_case" in EDGE_RULES[name]}
    assert len({frozenset(expected[name]) for name in edge}) >= 6, "the crafted events tell the edge rules apart"


def test_spark_catalog_equals_duckdb_catalog(shop, spark_session):
    data_dir, _, _ = shop
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        expected = catalog_from_warehouse(con)
        expected_limited = catalog_from_warehouse(con, event_names=["order_completed"])
    found = catalog_from_spark(spark_session)
    assert found.event_properties == expected.event_properties
    assert {c: column_type(t) for c, t in found.profile_columns.items()} == \
           {c: column_type(t) for c, t in expected.profile_columns.items()}
    assert catalog_from_spark(spark_session, event_names=["order_completed"]).event_properties == \
           expected_limited.event_properties
    assert catalog_from_spark(spark_session, event_names=[]).event_properties == {}


def test_segment_check_on_spark(shop, spark_shop, tmp_path):
    """`cdp segment check` with CDP_ENGINE=spark: Spark's SQL and catalog, the size counted on Spark."""
    from cdp_assets.segments.check import check_segment_file

    data_dir, now, rules = shop
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        vip = con.execute("SELECT count(*) FROM cdp.profiles WHERE total_revenue >= 500").fetchone()[0]
    valid, text = check_segment_file(rules / "vip_buyers.yaml", engine=spark_shop)
    assert valid, text
    assert text.endswith(f"size: {vip}") and "p.`total_revenue`" in text, text
    valid, text = check_segment_file(rules / "not_vip.yaml", engine=spark_shop)
    assert valid and "(with the last evaluated members of vip_buyers)" in text, text

    bad = tmp_path / "segments" / "bad.yaml"
    bad.parent.mkdir()
    bad.write_text("name: bad\nwhere:\n  all:\n    - {trait: no_such_column, op: eq, value: x}\n"
                   "    - {event: order_completed, where: [{property: \"a'\\\"b\", op: eq, value: x}]}\n")
    valid, text = check_segment_file(bad, engine=spark_shop)
    assert not valid and text.startswith(f"{bad}:4: unknown trait 'no_such_column'"), text
    bad.write_text("name: bad\nwhere:\n  event: edge_case\n  where: [{property: \"a'\\\"b\", op: eq, value: x}]\n")
    valid, text = check_segment_file(bad, engine=spark_shop)
    assert not valid and text.startswith(f"{bad}:4: property") and "cannot be read on Spark" in text, text
