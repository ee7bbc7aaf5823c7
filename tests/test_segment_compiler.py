"""The segment rule language: operators, NULL semantics, event conditions, errors, injection, and a
property test against a plain Python evaluator written here, independently of the compiler."""

from __future__ import annotations

import json
import re
import tempfile
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdp_assets.segments.compiler import (
    Catalog,
    SegmentError,
    catalog_from_warehouse,
    compile_segment,
    load_segment,
    load_segments,
    load_valid_segments,
)

REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2024, 6, 1, 12, 0, 0)

PROFILE_COLUMNS = {
    "person_id": "VARCHAR",
    "gender": "VARCHAR",
    "city": "VARCHAR",
    "total_revenue": "DOUBLE",
    "order_count": "BIGINT",
    "last_seen_at": "TIMESTAMP",
    "is_subscribed": "BOOLEAN",
    "products_purchased": "VARCHAR[]",
}
EVENT_PROPERTY_TYPES = {"amount": "number", "plan": "string", "gift": "boolean", "tags": "list", "at": "datetime"}
# Events a and b are known to the catalog (types checked); c is not (types inferred from the operator).
CATALOG = Catalog(PROFILE_COLUMNS, {"a": dict(EVENT_PROPERTY_TYPES), "b": dict(EVENT_PROPERTY_TYPES)})


# --------------------------------------------------------------------------------------------------
# A tiny warehouse
# --------------------------------------------------------------------------------------------------


def make_warehouse(profiles: list[dict], events: list[dict], membership=(), con=None):
    """cdp.profiles, core.person_events and cdp.segment_membership holding exactly these rows."""
    if con is None:
        con = duckdb.connect()
        con.execute("CREATE SCHEMA cdp")
        con.execute("CREATE SCHEMA core")
        columns = ", ".join(f"{name} {kind}" for name, kind in PROFILE_COLUMNS.items())
        con.execute(f"CREATE TABLE cdp.profiles ({columns})")
        con.execute(
            "CREATE TABLE core.person_events (person_id VARCHAR, event_id VARCHAR, event_type VARCHAR, "
            "event_name VARCHAR, occurred_at TIMESTAMP, properties JSON)"
        )
        con.execute("CREATE TABLE cdp.segment_membership (segment VARCHAR, person_id VARCHAR, entered_at TIMESTAMP)")
    rows = {
        "cdp.profiles": [[p.get(c) for c in PROFILE_COLUMNS] for p in profiles],
        "core.person_events": [[e["person"], f"ev{i}", "track", e["name"], e["at"], json.dumps(e["props"])]
                               for i, e in enumerate(events)],
        "cdp.segment_membership": [[s, p, NOW] for s, p in membership],
    }
    for table, values in rows.items():
        con.execute(f"DELETE FROM {table}")
        if values:  # one statement: executemany is slow
            row = "(" + ", ".join("?" for _ in values[0]) + ")"
            con.execute(f"INSERT INTO {table} VALUES " + ", ".join(row for _ in values), [v for r in values for v in r])
    return con


def write_segment(directory: Path, where, name: str = "t", **extra) -> Path:
    body = {"name": name, "refresh": "daily", **extra, "where": where}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def members(con, path: Path, catalog: Catalog = CATALOG, now: datetime = NOW) -> set[str]:
    compiled = compile_segment(load_segment(path), catalog, now)
    assert compiled.sql.count("?") == len(compiled.params)
    # exactly how the segment asset runs it
    return {r[0] for r in con.execute(f"SELECT DISTINCT person_id FROM ({compiled.sql})", compiled.params).fetchall()}


# --------------------------------------------------------------------------------------------------
# Traits: every operator on every type, with NULLs
# --------------------------------------------------------------------------------------------------

PROFILES = [
    {"person_id": "p1", "gender": "male", "city": "Berlin", "total_revenue": 600.0, "order_count": 3,
     "last_seen_at": NOW - timedelta(days=1), "is_subscribed": True, "products_purchased": ["a", "b"]},
    {"person_id": "p2", "gender": "female", "city": "Bern", "total_revenue": 100.0, "order_count": 1,
     "last_seen_at": NOW - timedelta(days=40), "is_subscribed": False, "products_purchased": ["c"]},
    {"person_id": "p3"},  # every trait missing
    {"person_id": "p4", "gender": "", "city": "Paris", "total_revenue": 0.0, "order_count": 0,
     "last_seen_at": datetime(2024, 5, 20, 23, 30), "is_subscribed": None, "products_purchased": []},
]

TRAIT_CASES = [
    # string
    ("gender", "eq", "male", {"p1"}),
    ("gender", "neq", "male", {"p2", "p3", "p4"}),
    ("gender", "in", ["male", "female"], {"p1", "p2"}),
    ("gender", "not_in", ["male", "female"], {"p3", "p4"}),
    ("city", "contains", "er", {"p1", "p2"}),
    ("city", "not_contains", "er", {"p3", "p4"}),
    ("city", "contains", "ber", set()),  # case-sensitive
    ("city", "starts_with", "Ber", {"p1", "p2"}),
    ("city", "ends_with", "lin", {"p1"}),
    ("city", "is_set", None, {"p1", "p2", "p4"}),
    ("city", "is_not_set", None, {"p3"}),
    ("gender", "is_set", None, {"p1", "p2", "p4"}),  # an empty string is set
    # number
    ("total_revenue", "eq", 100, {"p2"}),
    ("total_revenue", "neq", 100, {"p1", "p3", "p4"}),
    ("total_revenue", "gt", 100, {"p1"}),
    ("total_revenue", "gte", 100, {"p1", "p2"}),
    ("total_revenue", "lt", 100, {"p4"}),
    ("total_revenue", "lte", 100, {"p2", "p4"}),
    ("total_revenue", "between", [100, 600], {"p1", "p2"}),
    ("order_count", "between", [0, 1], {"p2", "p4"}),
    ("order_count", "gte", 2.5, {"p1"}),
    ("total_revenue", "is_not_set", None, {"p3"}),
    # datetime
    ("last_seen_at", "before", "2024-05-01", {"p2"}),
    ("last_seen_at", "after", date(2024, 5, 1), {"p1", "p4"}),
    ("last_seen_at", "after", datetime(2024, 5, 31, 11), {"p1"}),
    ("last_seen_at", "after", datetime(2024, 5, 31, 12), set()),  # strictly after
    ("last_seen_at", "between", [date(2024, 5, 19), date(2024, 5, 20)], {"p4"}),  # the whole last day
    ("last_seen_at", "between", ["2024-05-20T23:00:00Z", "2024-05-31T12:00:00+00:00"], {"p1", "p4"}),
    ("last_seen_at", "within_last", "30d", {"p1", "p4"}),
    ("last_seen_at", "within_last", "1d", {"p1"}),  # inclusive
    ("last_seen_at", "not_within_last", "30d", {"p2", "p3"}),
    ("last_seen_at", "is_set", None, {"p1", "p2", "p4"}),
    # boolean
    ("is_subscribed", "is_true", None, {"p1"}),
    ("is_subscribed", "is_false", None, {"p2"}),
    ("is_subscribed", "is_not_set", None, {"p3", "p4"}),
    # list
    ("products_purchased", "contains_any", ["a", "c"], {"p1", "p2"}),
    ("products_purchased", "contains_all", ["a", "b"], {"p1"}),
    ("products_purchased", "contains_all", ["a", "c"], set()),
    ("products_purchased", "contains_none", ["a"], {"p2", "p3", "p4"}),
    ("products_purchased", "is_set", None, {"p1", "p2"}),  # an empty list is not set
    ("products_purchased", "is_not_set", None, {"p3", "p4"}),
]


@pytest.mark.parametrize("trait,op,value,expected", TRAIT_CASES, ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(TRAIT_CASES)])
def test_trait_operator(tmp_path, trait, op, value, expected):
    con = make_warehouse(PROFILES, [])
    where = {"trait": trait, "op": op} | ({} if value is None else {"value": value})
    assert members(con, write_segment(tmp_path, where)) == expected


def test_every_operator_is_covered():
    from cdp_assets.segments.compiler import OPERATORS, NEGATIVE_OPERATORS

    assert {c[1] for c in TRAIT_CASES} == set(OPERATORS)
    assert NEGATIVE_OPERATORS == {"neq", "not_in", "not_contains", "contains_none", "not_within_last"}


def test_negative_operators_match_missing_values_and_not_of_positive_too(tmp_path):
    con = make_warehouse(PROFILES, [])
    for where in (
        {"trait": "gender", "op": "neq", "value": "male"},
        {"not": {"trait": "gender", "op": "eq", "value": "male"}},
    ):
        assert "p3" in members(con, write_segment(tmp_path, where))


def test_unquoted_scalars_are_strings_as_written_for_string_traits(tmp_path):
    con = make_warehouse([{"person_id": "n", "city": "no"}, {"person_id": "z", "city": "01234"}], [])
    (tmp_path / "t.yaml").write_text("name: t\nwhere: {trait: city, op: in, value: [no, 01234]}\n")
    assert members(con, tmp_path / "t.yaml") == {"n", "z"}


# --------------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------------

H = timedelta(hours=1)
EVENTS = [
    # q1: two orders (one recent), and a cart add answered by an order 1h later
    {"person": "q1", "name": "order_completed", "at": NOW - 30 * 24 * H, "props": {"revenue": 400, "currency": "EUR", "items": ["a"]}},
    {"person": "q1", "name": "order_completed", "at": NOW - 2 * H, "props": {"revenue": 150.5, "currency": "USD", "coupon": "X"}},
    {"person": "q1", "name": "product_added", "at": NOW - 3 * H, "props": {"sku": "a"}},
    # q2: one order, a cart add at -5h with an order only 3h later, and a recent cart add
    {"person": "q2", "name": "order_completed", "at": NOW - 2 * H, "props": {"revenue": "20", "currency": "EUR", "gift": True, "shipped_at": "2024-06-01T09:00:00+02:00"}},
    {"person": "q2", "name": "product_added", "at": NOW - 5 * H, "props": {"sku": "b"}},
    {"person": "q2", "name": "product_added", "at": NOW - 30 * timedelta(minutes=1), "props": {"sku": "c"}},
    # q3: three page views, a cart add without any order
    {"person": "q3", "name": "page_viewed", "at": NOW - 1 * H, "props": {"path": "/"}},
    {"person": "q3", "name": "page_viewed", "at": NOW - 2 * H, "props": {"path": "/a", "nested": {"k": "v"}}},
    {"person": "q3", "name": "page_viewed", "at": NOW - 50 * H, "props": {"path": "/b"}},
    {"person": "q3", "name": "product_added", "at": NOW - 4 * H, "props": {"sku": "d"}},
    # q5: a cart add an hour ago; an event in the future does not count in a window
    {"person": "q5", "name": "product_added", "at": NOW - 1 * H, "props": {"sku": "e"}},
    {"person": "q4", "name": "order_completed", "at": NOW + H, "props": {"revenue": 10}},
]
EVENT_PROFILES = [{"person_id": p, "total_revenue": r} for p, r in (("q1", 550.5), ("q2", 20.0), ("q3", 0.0), ("q4", 10.0), ("q5", None))]
EVENT_CATALOG = Catalog(PROFILE_COLUMNS, {"order_completed": {
    "revenue": "any", "currency": "string", "coupon": "string", "items": "list", "gift": "boolean", "shipped_at": "datetime"}})

EVENT_CASES = [
    ("done ever", {"event": "order_completed"}, {"q1", "q2", "q4"}),
    ("within", {"event": "order_completed", "within": "3h"}, {"q1", "q2"}),
    ("within inclusive", {"event": "order_completed", "within": "120m"}, {"q1", "q2"}),
    ("within excludes future", {"event": "order_completed", "within": "1d"}, {"q1", "q2"}),
    ("count gte", {"event": "page_viewed", "count": {"gte": 3}}, {"q3"}),
    ("count in window", {"event": "page_viewed", "within": "1d", "count": {"eq": 2}}, {"q3"}),
    ("count lt includes none", {"event": "order_completed", "count": {"lt": 2}}, {"q2", "q3", "q4", "q5"}),
    ("count eq 0", {"event": "order_completed", "count": {"eq": 0}}, {"q3", "q5"}),
    ("count between", {"event": "order_completed", "count": {"between": [1, 1]}}, {"q2", "q4"}),
    ("count neq and gte", {"event": "page_viewed", "count": {"neq": 1, "gte": 1}}, {"q3"}),
    ("sum", {"event": "order_completed", "sum": {"property": "revenue", "gte": 500}}, {"q1"}),
    ("sum numeric string", {"event": "order_completed", "sum": {"property": "revenue", "between": [20, 20]}}, {"q2"}),
    ("sum none is 0", {"event": "order_completed", "sum": {"property": "revenue", "lt": 15}}, {"q3", "q4", "q5"}),
    ("sum in window", {"event": "order_completed", "within": "1d", "sum": {"property": "revenue", "gt": 100}}, {"q1"}),
    ("sum and count", {"event": "order_completed", "count": {"gte": 1}, "sum": {"property": "revenue", "lte": 20}}, {"q2", "q4"}),
    ("where eq", {"event": "order_completed", "where": [{"property": "currency", "op": "eq", "value": "EUR"}]}, {"q1", "q2"}),
    ("where all", {"event": "order_completed", "where": [
        {"property": "currency", "op": "eq", "value": "EUR"}, {"property": "revenue", "op": "gt", "value": 100}]}, {"q1"}),
    ("where any tree", {"event": "order_completed", "where": {"any": [
        {"property": "coupon", "op": "is_set"}, {"property": "gift", "op": "is_true"}]}}, {"q1", "q2"}),
    ("where neq missing", {"event": "order_completed", "where": [{"property": "coupon", "op": "neq", "value": "X"}]}, {"q1", "q2", "q4"}),
    ("where not", {"event": "order_completed", "within": "1d", "where": {"not": {"property": "currency", "op": "eq", "value": "USD"}}}, {"q2"}),
    ("where list", {"event": "order_completed", "where": [{"property": "items", "op": "contains_any", "value": ["a", "z"]}]}, {"q1"}),
    ("where datetime offset", {"event": "order_completed", "where": [
        {"property": "shipped_at", "op": "before", "value": "2024-06-01T07:30:00"}]}, {"q2"}),
    ("where datetime within_last", {"event": "order_completed", "where": [
        {"property": "shipped_at", "op": "within_last", "value": "5h"}]}, {"q2"}),
    ("where nested key", {"event": "page_viewed", "where": [{"property": "nested.k", "op": "eq", "value": "v"}]}, {"q3"}),
    ("where count", {"event": "page_viewed", "where": [{"property": "path", "op": "starts_with", "value": "/"}], "count": {"gte": 3}}, {"q3"}),
    ("not_followed_by", {"event": "product_added", "within": "1d", "not_followed_by": {"event": "order_completed", "within": "2h"}}, {"q2", "q3"}),
    ("not_followed_by long", {"event": "product_added", "within": "1d", "not_followed_by": {"event": "order_completed", "within": "3h"}}, {"q3"}),
    ("not_followed_by where", {"event": "product_added", "not_followed_by": {
        "event": "order_completed", "within": "2h", "where": [{"property": "currency", "op": "eq", "value": "EUR"}]}}, {"q1", "q2", "q3"}),
    ("not_followed_by count", {"event": "product_added", "count": {"gte": 1}, "not_followed_by": {"event": "order_completed", "within": "1h"}}, {"q2", "q3", "q5"}),
    ("not event", {"not": {"event": "order_completed", "within": "2h"}}, {"q3", "q4", "q5"}),
    ("cart abandoners", {"all": [{"event": "product_added", "within": "6h"}, {"not": {"event": "order_completed", "within": "2h"}}]}, {"q3", "q5"}),
    ("any", {"any": [{"event": "page_viewed"}, {"trait": "total_revenue", "op": "gte", "value": 500}]}, {"q1", "q3"}),
    ("all with trait", {"all": [{"event": "order_completed"}, {"trait": "total_revenue", "op": "lt", "value": 500}]}, {"q2", "q4"}),
]


@pytest.mark.parametrize("where,expected", [c[1:] for c in EVENT_CASES], ids=[c[0] for c in EVENT_CASES])
def test_event_condition(tmp_path, where, expected):
    con = make_warehouse(EVENT_PROFILES, EVENTS)
    assert members(con, write_segment(tmp_path, where), EVENT_CATALOG) == expected


def test_segment_reuse_reads_membership(tmp_path):
    con = make_warehouse(EVENT_PROFILES, EVENTS, [("vip", "q1"), ("vip", "q2"), ("other", "q3"), ("vip", "ghost")])
    write_segment(tmp_path, {"trait": "total_revenue", "op": "gte", "value": 0}, name="vip")
    path = write_segment(tmp_path, {"all": [{"segment": "vip"}, {"not": {"event": "product_added", "within": "1h"}}]}, name="reuse")
    assert members(con, path, EVENT_CATALOG) == {"q1"}  # ghost is no profile; q2 added to cart 30 min ago
    path = write_segment(tmp_path, {"not": {"segment": "vip"}}, name="reuse")
    assert members(con, path, EVENT_CATALOG) == {"q3", "q4", "q5"}
    assert load_segments(tmp_path)["reuse"].depends_on == ("vip",)


def test_compiled_sql_is_one_select_with_now_as_a_parameter(tmp_path):
    path = write_segment(tmp_path, {"event": "order_completed", "within": "2h"})
    compiled = compile_segment(load_segment(path), CATALOG, NOW)
    assert compiled.name == "t"
    assert "CURRENT_TIMESTAMP" not in compiled.sql.upper() and "NOW()" not in compiled.sql.upper()
    assert NOW in compiled.params and NOW - 2 * H in compiled.params
    # an aware now is the same instant
    aware = compile_segment(load_segment(path), CATALOG, NOW.replace(tzinfo=timezone.utc).astimezone(timezone(2 * H)))
    assert aware.params == compiled.params


# --------------------------------------------------------------------------------------------------
# Safety
# --------------------------------------------------------------------------------------------------

INJECTION = "x'; DROP TABLE cdp.profiles; --"


def test_injection_in_values_is_just_a_string(tmp_path):
    con = make_warehouse(PROFILES + [{"person_id": "evil", "city": INJECTION}], EVENTS)
    path = write_segment(tmp_path, {"any": [
        {"trait": "gender", "op": "eq", "value": INJECTION},
        {"trait": "gender", "op": "in", "value": [INJECTION, '"); DROP TABLE core.person_events; --']},
        {"event": INJECTION, "where": [{"property": "a'); DROP TABLE cdp.profiles; --", "op": "eq", "value": INJECTION}]},
        {"segment": "x"},
    ]})
    compiled = compile_segment(load_segment(path), CATALOG, NOW)
    assert "DROP" not in compiled.sql
    assert members(con, path) == set()
    path = write_segment(tmp_path, {"trait": "city", "op": "eq", "value": INJECTION})
    assert members(con, path) == {"evil"}
    assert con.execute("SELECT count(*) FROM cdp.profiles").fetchone()[0] == len(PROFILES) + 1
    assert con.execute("SELECT count(*) FROM core.person_events").fetchone()[0] == len(EVENTS)


def test_column_names_come_from_the_catalog_only(tmp_path):
    path = write_segment(tmp_path, {"trait": 'gender" IS NULL OR TRUE --', "op": "is_set"})
    with pytest.raises(SegmentError, match="unknown trait"):
        compile_segment(load_segment(path), CATALOG, NOW)


# --------------------------------------------------------------------------------------------------
# Errors: file and line
# --------------------------------------------------------------------------------------------------

LOAD_ERRORS = [
    ("name mismatch", "name: other\nwhere: {segment: x}\n", 1, "does not match the file name 't'"),
    ("missing name", "refresh: daily\nwhere: {segment: x}\n", 1, "missing 'name'"),
    ("bad name", "name: t-1\nwhere: {segment: x}\n", 1, "letters, digits"),
    ("bad refresh", "name: t\nrefresh: weekly\nwhere: {segment: x}\n", 2, "refresh must be one of hourly, daily"),
    ("unknown top key", "name: t\nwehre: {segment: x}\n", 2, "unknown key 'wehre'"),
    ("missing where", "name: t\nrefresh: daily\n", 1, "missing 'where'"),
    ("yaml syntax", "name: t\nwhere:\n  all: [\n    {segment: x}\n  - oops\n", 5, "invalid YAML"),
    ("empty file", "", 1, "empty"),
    ("not a mapping", "- name: t\n", 1, "must be a mapping"),
    ("duplicate key", "name: t\nwhere:\n  trait: city\n  op: eq\n  op: neq\n  value: x\n", 5, "duplicate key 'op'"),
    ("unknown operator", "name: t\nwhere:\n  all:\n    - trait: gender\n      op: equals\n      value: x\n", 5, "unknown operator 'equals'"),
    ("missing op", "name: t\nwhere:\n  any:\n    - segment: x\n    - trait: gender\n      value: x\n", 5, "missing 'op'"),
    ("missing value", "name: t\nwhere:\n  trait: gender\n  op: eq\n", 4, "needs a value"),
    ("value for is_set", "name: t\nwhere:\n  trait: gender\n  op: is_set\n  value: x\n", 5, "takes no value"),
    ("null value", "name: t\nwhere:\n  trait: gender\n  op: eq\n  value:\n", 5, "empty (null)"),
    ("bad within_last (read at load: any type)", "name: t\nwhere:\n  trait: last_seen_at\n  op: within_last\n  value: 2024-01-01\n", 5, "duration like 30m"),
    ("between three", "name: t\nwhere:\n  trait: total_revenue\n  op: between\n  value: [1, 2, 3]\n", 5, "list of two"),
    ("in scalar", "name: t\nwhere:\n  trait: gender\n  op: in\n  value: male\n", 5, "non-empty list"),
    ("eq list", "name: t\nwhere:\n  trait: gender\n  op: eq\n  value: [a, b]\n", 5, "single value"),
    ("two kinds", "name: t\nwhere:\n  trait: gender\n  op: is_set\n  event: x\n", 5, "has both 'trait' and 'event'"),
    ("no kind", "name: t\nwhere:\n  all:\n    - {}\n", 4, "needs one of all, any, not"),
    ("unknown condition key", "name: t\nwhere:\n  event: x\n  withn: 2h\n", 4, "unknown key 'withn'"),
    ("empty all", "name: t\nwhere:\n  all: []\n", 3, "must not be empty"),
    ("bad duration", "name: t\nwhere:\n  not:\n    event: x\n    within: 2 hours\n", 5, "duration like 30m"),
    ("zero duration", "name: t\nwhere:\n  event: x\n  within: 0d\n", 4, "duration"),
    ("count op", "name: t\nwhere:\n  event: x\n  count:\n    atleast: 3\n", 5, "unknown count comparison 'atleast'"),
    ("count fraction", "name: t\nwhere:\n  event: x\n  count: {gte: 1.5}\n", 4, "whole number"),
    ("count negative", "name: t\nwhere:\n  event: x\n  count:\n    gte: -1\n", 5, "whole number"),
    ("count scalar", "name: t\nwhere:\n  event: x\n  count: 3\n", 4, "must be a mapping"),
    ("sum no property", "name: t\nwhere:\n  event: x\n  sum: {gte: 3}\n", 4, "needs 'property'"),
    ("sum text", "name: t\nwhere:\n  event: x\n  sum:\n    property: revenue\n    gte: lots\n", 6, "needs a number"),
    ("sum no comparison", "name: t\nwhere:\n  event: x\n  sum: {property: revenue}\n", 4, "needs a comparison"),
    ("where shape", "name: t\nwhere:\n  event: x\n  where:\n    - {trait: city, op: is_set}\n", 5, "needs one of all, any, not, property"),
    ("nfb without within", "name: t\nwhere:\n  event: x\n  not_followed_by:\n    event: y\n", 5, "needs 'within'"),
    ("nfb unknown key", "name: t\nwhere:\n  event: x\n  not_followed_by:\n    event: y\n    within: 1h\n    count: {gte: 1}\n", 7, "unknown key 'count'"),
    ("nfb window too short", "name: t\nwhere:\n  event: x\n  within: 1h\n  not_followed_by: {event: y, within: 2h}\n", 4, "must be longer"),
    ("self reference", "name: t\nwhere:\n  any:\n    - segment: u\n    - segment: t\n", 5, "refers to itself"),
    ("deep", "name: t\nwhere: " + "{not: " * 40 + "{segment: x}" + "}" * 40 + "\n", 2, "nested more than"),
]


@pytest.mark.parametrize("text,line,message", [c[1:] for c in LOAD_ERRORS], ids=[c[0] for c in LOAD_ERRORS])
def test_load_errors_name_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(SegmentError) as caught:
        load_segment(path)
    assert str(caught.value).startswith(f"{path}:{line}: "), str(caught.value)
    assert message in str(caught.value)


COMPILE_ERRORS = [
    ("unknown trait", "name: t\nwhere:\n  all:\n    - segment: u\n    - trait: revenue\n      op: gt\n      value: 1\n", 5, "unknown trait 'revenue'"),
    ("gt on varchar", "name: t\nwhere:\n  trait: gender\n  op: gt\n  value: 1\n", 4, "operator 'gt' does not apply to trait 'gender' (VARCHAR)"),
    ("string for number", "name: t\nwhere:\n  trait: total_revenue\n  op: gte\n  value: '500'\n", 5, "needs a number, not '500'"),
    ("word for number", "name: t\nwhere:\n  trait: total_revenue\n  op: between\n  value:\n    - 1\n    - many\n", 7, "needs a number"),
    ("list op on scalar", "name: t\nwhere:\n  trait: gender\n  op: contains_any\n  value: [a]\n", 4, "does not apply to trait 'gender'"),
    ("scalar op on list", "name: t\nwhere:\n  trait: products_purchased\n  op: eq\n  value: a\n", 4, "does not apply to trait 'products_purchased'"),
    ("eq on boolean", "name: t\nwhere:\n  trait: is_subscribed\n  op: eq\n  value: true\n", 4, "operators: is_true, is_false"),
    ("bad date", "name: t\nwhere:\n  trait: last_seen_at\n  op: before\n  value: yesterday\n", 5, "ISO date"),
    ("between reversed", "name: t\nwhere:\n  trait: total_revenue\n  op: between\n  value: [5, 1]\n", 5, "low end is above"),
    ("unknown property", "name: t\nwhere:\n  event: a\n  where:\n    - property: amout\n      op: gt\n      value: 1\n", 5, "event 'a' has no property 'amout'"),
    ("property type", "name: t\nwhere:\n  event: b\n  where:\n    - property: plan\n      op: gt\n      value: 1\n", 6, "does not apply to property 'plan' of event 'b', which is string"),
    ("property value", "name: t\nwhere:\n  event: b\n  where:\n    - property: amount\n      op: eq\n      value: lots\n", 7, "needs a number"),
    ("nfb property", "name: t\nwhere:\n  event: c\n  not_followed_by:\n    event: a\n    within: 1h\n    where: [{property: nope, op: is_set}]\n", 7, "event 'a' has no property 'nope'"),
    ("sum unknown property", "name: t\nwhere:\n  event: a\n  sum:\n    property: amonut\n    gte: 1\n", 5, "no property 'amonut'"),
    ("sum of text", "name: t\nwhere:\n  event: a\n  sum:\n    property: plan\n    gte: 1\n", 5, "sum needs a numeric property"),
]


@pytest.mark.parametrize("text,line,message", [c[1:] for c in COMPILE_ERRORS], ids=[c[0] for c in COMPILE_ERRORS])
def test_compile_errors_name_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    definition = load_segment(path)
    with pytest.raises(SegmentError) as caught:
        compile_segment(definition, CATALOG, NOW)
    assert str(caught.value).startswith(f"{path}:{line}: "), str(caught.value)
    assert message in str(caught.value)


def test_unknown_segment_names_file_and_line(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\nwhere:\n  all:\n    - trait: city\n      op: is_set\n    - segment: missing\n")
    with pytest.raises(SegmentError) as caught:
        load_segments(tmp_path)
    assert str(caught.value).startswith(f"{tmp_path / 'a.yaml'}:6: unknown segment 'missing'")


def test_cycle_names_file_and_line(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\nwhere:\n  segment: b\n")
    (tmp_path / "b.yaml").write_text("name: b\ndescription: x\nwhere:\n  not:\n    segment: c\n")
    (tmp_path / "c.yaml").write_text("name: c\nwhere: {any: [{segment: a}]}\n")
    (tmp_path / "d.yaml").write_text("name: d\nwhere: {segment: a}\n")
    with pytest.raises(SegmentError) as caught:
        load_segments(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'c.yaml'}:2: "), message
    assert "a -> b -> c -> a" in message


def test_load_valid_segments_keeps_the_others_and_says_why_a_reuse_fails(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\nwhere: {segment: b}\n")
    (tmp_path / "b.yaml").write_text("name: b\nwhere: {trait: city, op: greater, value: x}\n")
    (tmp_path / "c.yaml").write_text("name: c\nwhere: {segment: d}\n")
    (tmp_path / "d.yaml").write_text("name: d\nwhere: {segment: c}\n")
    (tmp_path / "e.yaml").write_text("name: e\nwhere: {trait: city, op: is_set}\n")
    valid, errors = load_valid_segments(tmp_path)
    assert sorted(valid) == ["e"]
    assert errors[tmp_path / "b.yaml"].startswith(f"{tmp_path / 'b.yaml'}:2: unknown operator 'greater'")
    assert errors[tmp_path / "a.yaml"] == (
        f"{tmp_path / 'a.yaml'}:2: segment 'b' cannot be reused: its definition {tmp_path / 'b.yaml'} is invalid"
    )
    assert "in a cycle: c -> d -> c" in errors[tmp_path / "d.yaml"]  # then c reuses the now invalid d
    assert errors[tmp_path / "c.yaml"].startswith(f"{tmp_path / 'c.yaml'}:2: segment 'd' cannot be reused")


def test_load_segments_orders_dependencies(tmp_path):
    write_segment(tmp_path, {"trait": "city", "op": "is_set"}, name="base", description="Base")
    write_segment(tmp_path, {"all": [{"segment": "base"}, {"not": {"segment": "base"}}]}, name="derived")
    found = load_segments(tmp_path)
    assert sorted(found) == ["base", "derived"]
    assert found["derived"].depends_on == ("base",) and found["base"].description == "Base"
    assert found["base"].refresh == "daily" and found["base"].path == tmp_path / "base.yaml"


# --------------------------------------------------------------------------------------------------
# The shipped definitions, and the catalog from a warehouse
# --------------------------------------------------------------------------------------------------


def test_shipped_segments_load_and_compile():
    definitions = load_segments(REPO / "config" / "segments")
    assert {"cart_abandoners", "vip_buyers"} <= set(definitions)
    catalog = Catalog({"person_id": "VARCHAR", "total_revenue": "DOUBLE"}, {})
    con = make_warehouse(EVENT_PROFILES, EVENTS)
    results = {}
    for name in ("cart_abandoners", "vip_buyers"):  # every template against its columns: tests/test_segments.py
        definition = definitions[name]
        assert definition.refresh in ("hourly", "daily")
        compiled = compile_segment(definition, catalog, NOW)
        results[name] = {r[0] for r in con.execute(compiled.sql, compiled.params).fetchall()}
    assert results["vip_buyers"] == {"q1"}
    assert results["cart_abandoners"] == {"q5"}  # q2 ordered within 2h, q3 added to cart 4h ago


def test_catalog_from_warehouse():
    con = duckdb.connect()
    con.execute("CREATE SCHEMA cdp")
    con.execute("CREATE TABLE cdp.profiles (person_id VARCHAR, total_revenue DOUBLE, products_purchased VARCHAR[], "
                "last_seen_at TIMESTAMP, is_subscribed BOOLEAN, n DECIMAL(18,2), tz TIMESTAMPTZ)")
    con.execute("CREATE TABLE cdp.events (event_id VARCHAR, event_name VARCHAR, occurred_at TIMESTAMP, properties JSON)")
    con.executemany("INSERT INTO cdp.events VALUES (?, ?, ?, ?)", [
        ["1", "order_completed", NOW, json.dumps({"revenue": 10, "currency": "EUR", "items": ["a"], "gift": True,
                                                   "at": "2024-01-01T10:00:00Z", "product": {"sku": "x", "price": 2.5}})],
        ["2", "order_completed", NOW, json.dumps({"revenue": 10.5, "currency": None, "mixed": 1})],
        ["3", "order_completed", NOW, json.dumps({"mixed": "one"})],
        ["4", "page_viewed", NOW, json.dumps({"path": "/"})],
        ["5", "odd", NOW, json.dumps([1, 2])],
    ])
    catalog = catalog_from_warehouse(con)
    assert catalog.profile_columns == {
        "person_id": "VARCHAR", "total_revenue": "DOUBLE", "products_purchased": "VARCHAR[]",
        "last_seen_at": "TIMESTAMP", "is_subscribed": "BOOLEAN", "n": "DECIMAL(18,2)", "tz": "TIMESTAMP WITH TIME ZONE",
    }
    assert catalog.event_properties == {
        "order_completed": {"revenue": "number", "currency": "string", "items": "list", "gift": "boolean",
                            "at": "datetime", "product": "any", "product.sku": "string", "product.price": "number",
                            "mixed": "any"},
        "page_viewed": {"path": "string"},
    }
    empty = catalog_from_warehouse(duckdb.connect())
    assert empty.profile_columns == {} and empty.event_properties == {}


def test_other_column_types(tmp_path):
    con = duckdb.connect()
    con.execute("CREATE SCHEMA cdp")
    con.execute("CREATE TYPE tier AS ENUM ('gold', 'silver')")
    con.execute("CREATE TABLE cdp.profiles (person_id VARCHAR, tier tier, n DECIMAL(18,2), tz TIMESTAMPTZ, "
                "scores INTEGER[], extra STRUCT(a INTEGER))")
    con.execute("SET TimeZone = 'America/New_York'")
    con.execute("INSERT INTO cdp.profiles VALUES ('x', 'gold', 12.50, TIMESTAMPTZ '2024-06-01 10:00:00+00', [1, 2], {'a': 1}), "
                "('y', NULL, NULL, NULL, NULL, NULL)")
    catalog = catalog_from_warehouse(con)
    cases = [
        ({"trait": "tier", "op": "eq", "value": "platinum"}, set()),
        ({"trait": "tier", "op": "neq", "value": "silver"}, {"x", "y"}),
        ({"trait": "n", "op": "gte", "value": 12.5}, {"x"}),
        ({"trait": "tz", "op": "before", "value": "2024-06-01T10:00:01"}, {"x"}),  # compared in UTC
        ({"trait": "tz", "op": "after", "value": "2024-06-01T09:59:59Z"}, {"x"}),
        ({"trait": "scores", "op": "contains_all", "value": [2, 1]}, {"x"}),
        ({"trait": "extra", "op": "is_set"}, {"x"}),
    ]
    for where, expected in cases:
        path = write_segment(tmp_path, where)
        compiled = compile_segment(load_segment(path), catalog, NOW)
        assert {r[0] for r in con.execute(compiled.sql, compiled.params).fetchall()} == expected, where
    path = write_segment(tmp_path, {"trait": "extra", "op": "eq", "value": 1})
    with pytest.raises(SegmentError, match="operators: is_set, is_not_set"):
        compile_segment(load_segment(path), catalog, NOW)


# --------------------------------------------------------------------------------------------------
# Property test: compiled SQL == a plain Python evaluator of the same rule
# --------------------------------------------------------------------------------------------------

MINUTE = timedelta(minutes=1)
OFFSETS = [timedelta(0), -30 * MINUTE, -H, -2 * H, -150 * MINUTE, -3 * H, -24 * H, -26 * H, -3 * 24 * H, -40 * 24 * H, H]
DURATIONS = {"30m": 30 * MINUTE, "1h": H, "2h": 2 * H, "1d": 24 * H, "3d": 72 * H, "30d": 30 * 24 * H}
STRINGS = ["male", "female", "ma", "le", "Berlin", "Ber", "x", ""]
TAGS = ["a", "b", "c", "d"]
PLANS = ["pro", "free", "promo", "pr"]


def parse_duration(text: str) -> timedelta:
    return DURATIONS[text]


def as_time(value) -> tuple[datetime, bool]:
    if isinstance(value, datetime):
        return value, False
    return datetime(value.year, value.month, value.day), True


def read_iso(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed.astimezone(timezone.utc).replace(tzinfo=None) if parsed.tzinfo else parsed


def apply_op(op: str, x, value, kind: str) -> bool:
    """One operator on one value; x None is missing. Written from the contract, not from the compiler."""
    missing = x is None
    if op == "is_set":
        return not missing and x != []
    if op == "is_not_set":
        return missing or x == []
    negative = {"neq": "eq", "not_in": "in", "not_contains": "contains", "contains_none": "contains_any",
                "not_within_last": "within_last"}
    if op in negative:
        return True if missing else not apply_op(negative[op], x, value, kind)
    if missing:
        return False
    if op == "eq":
        return x == value
    if op == "in":
        return x in value
    if op == "contains":
        return value in x
    if op == "starts_with":
        return x.startswith(value)
    if op == "ends_with":
        return x.endswith(value)
    if op in ("gt", "gte", "lt", "lte"):
        return {"gt": x > value, "gte": x >= value, "lt": x < value, "lte": x <= value}[op]
    if op == "before":
        return x < as_time(value)[0]
    if op == "after":
        return x > as_time(value)[0]
    if op == "between":
        if kind == "datetime":
            low, _ = as_time(value[0])
            high, whole_day = as_time(value[1])
            return low <= x <= (high + timedelta(days=1) - timedelta(microseconds=1) if whole_day else high)
        return value[0] <= x <= value[1]
    if op == "within_last":
        return NOW - parse_duration(value) <= x <= NOW
    if op == "is_true":
        return x is True
    if op == "is_false":
        return x is False
    if op == "contains_any":
        return any(v in x for v in value)
    if op == "contains_all":
        return all(v in x for v in value)
    raise AssertionError(op)


PROFILE_KINDS = {"gender": "string", "city": "string", "total_revenue": "number", "last_seen_at": "datetime",
                 "is_subscribed": "boolean", "products_purchased": "list"}


def property_value(props: dict, name: str):
    """A property read as its type; None when absent, null or not of the type."""
    value = props.get(name)
    kind = EVENT_PROPERTY_TYPES[name]
    if kind == "number":
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if kind == "datetime":
        return read_iso(value) if isinstance(value, str) else None
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    return value


def eval_where(rule, props: dict) -> bool:
    if isinstance(rule, list):
        return all(eval_where(r, props) for r in rule)
    if "all" in rule:
        return all(eval_where(r, props) for r in rule["all"])
    if "any" in rule:
        return any(eval_where(r, props) for r in rule["any"])
    if "not" in rule:
        return not eval_where(rule["not"], props)
    name, op = rule["property"], rule["op"]
    if op in ("is_set", "is_not_set"):
        present = props.get(name) is not None and props.get(name) != []
        return present if op == "is_set" else not present
    return apply_op(op, property_value(props, name), rule.get("value"), EVENT_PROPERTY_TYPES[name])


def compare(value, comparisons: dict) -> bool:
    checks = {"eq": lambda v: value == v, "neq": lambda v: value != v, "gt": lambda v: value > v,
              "gte": lambda v: value >= v, "lt": lambda v: value < v, "lte": lambda v: value <= v,
              "between": lambda v: v[0] <= value <= v[1]}
    return all(checks[op](v) for op, v in comparisons.items())


def qualifying_events(rule, person: str, events: list[dict]) -> list[dict]:
    found = [e for e in events if e["person"] == person and e["name"] == rule["event"]]
    if "within" in rule:
        found = [e for e in found if NOW - parse_duration(rule["within"]) <= e["at"] <= NOW]
    if "where" in rule:
        found = [e for e in found if eval_where(rule["where"], e["props"])]
    if "not_followed_by" in rule:
        follow = rule["not_followed_by"]
        window = parse_duration(follow["within"])

        def followed(a):
            return any(
                b["person"] == person and b["name"] == follow["event"] and a["at"] < b["at"] <= a["at"] + window
                and ("where" not in follow or eval_where(follow["where"], b["props"]))
                for b in events
            )

        found = [a for a in found if a["at"] + window <= NOW and not followed(a)]
    return found


def evaluate(rule, profile: dict, events: list[dict], membership: set[tuple[str, str]]) -> bool:
    if "all" in rule:
        return all(evaluate(r, profile, events, membership) for r in rule["all"])
    if "any" in rule:
        return any(evaluate(r, profile, events, membership) for r in rule["any"])
    if "not" in rule:
        return not evaluate(rule["not"], profile, events, membership)
    if "segment" in rule:
        return (rule["segment"], profile["person_id"]) in membership
    if "trait" in rule:
        column = rule["trait"]
        return apply_op(rule["op"], profile.get(column), rule.get("value"), PROFILE_KINDS[column])
    found = qualifying_events(rule, profile["person_id"], events)
    if "count" not in rule and "sum" not in rule:
        return len(found) >= 1
    ok = compare(len(found), rule.get("count", {}))
    if "sum" in rule:
        spec = dict(rule["sum"])
        prop = spec.pop("property")
        total = sum(v for v in (property_value(e["props"], prop) for e in found) if v is not None)
        ok = ok and compare(total, spec)
    return ok


# -- strategies ---------------------------------------------------------------------------------------

times = st.sampled_from(OFFSETS).map(lambda d: NOW + d)
maybe = lambda s: st.one_of(st.none(), s)  # noqa: E731


def sorted_pair(values):
    return st.lists(values, min_size=2, max_size=2).map(sorted)


def datetime_values():
    return st.one_of(times, st.sampled_from([date(2024, 5, 31), date(2024, 6, 1), date(2024, 5, 2)]))


def datetime_pair():
    return st.lists(datetime_values(), min_size=2, max_size=2).map(lambda p: sorted(p, key=lambda v: as_time(v)[0]))


def op_values_for(kind: str, strings, tags):
    """(op, value) for a value of the given kind; value None means no value."""
    options = [st.tuples(st.sampled_from(["is_set", "is_not_set"]), st.none())]
    if kind == "string":
        options += [
            st.tuples(st.sampled_from(["eq", "neq", "contains", "not_contains", "starts_with", "ends_with"]), st.sampled_from(strings)),
            st.tuples(st.sampled_from(["in", "not_in"]), st.lists(st.sampled_from(strings), min_size=1, max_size=3)),
        ]
    elif kind == "number":
        numbers = st.sampled_from([0, 5, 10.5, 50, 100.5, 500, -1])
        options += [
            st.tuples(st.sampled_from(["eq", "neq", "gt", "gte", "lt", "lte"]), numbers),
            st.tuples(st.just("between"), sorted_pair(numbers)),
        ]
    elif kind == "datetime":
        options += [
            st.tuples(st.sampled_from(["before", "after"]), datetime_values()),
            st.tuples(st.just("between"), datetime_pair()),
            st.tuples(st.sampled_from(["within_last", "not_within_last"]), st.sampled_from(list(DURATIONS))),
        ]
    elif kind == "boolean":
        options += [st.tuples(st.sampled_from(["is_true", "is_false"]), st.none())]
    else:
        options += [st.tuples(st.sampled_from(["contains_any", "contains_all", "contains_none"]),
                              st.lists(st.sampled_from(tags), min_size=1, max_size=3))]
    return st.one_of(options)


def with_test(head: dict, test) -> dict:
    op, value = test
    return head | {"op": op} | ({} if value is None else {"value": value})


@st.composite
def trait_rules(draw):
    column = draw(st.sampled_from(sorted(PROFILE_KINDS)))
    return with_test({"trait": column}, draw(op_values_for(PROFILE_KINDS[column], STRINGS, TAGS)))


@st.composite
def property_rules(draw, depth=0):
    if depth < 1 and draw(st.integers(0, 4)) == 0:
        kind = draw(st.sampled_from(["all", "any", "not"]))
        if kind == "not":
            return {"not": draw(property_rules(depth + 1))}
        return {kind: draw(st.lists(property_rules(depth + 1), min_size=1, max_size=2))}
    name = draw(st.sampled_from(sorted(EVENT_PROPERTY_TYPES)))
    return with_test({"property": name}, draw(op_values_for(EVENT_PROPERTY_TYPES[name], PLANS, TAGS)))


@st.composite
def wheres(draw):
    if draw(st.booleans()):
        return draw(st.lists(property_rules(), min_size=1, max_size=2))
    return draw(property_rules())


@st.composite
def event_rules(draw):
    rule = {"event": draw(st.sampled_from(["a", "b", "c"]))}
    follow = draw(st.booleans())
    if follow:
        rule["not_followed_by"] = {"event": draw(st.sampled_from(["a", "b", "c"])), "within": draw(st.sampled_from(["30m", "2h"]))}
        if draw(st.booleans()):
            rule["not_followed_by"]["where"] = draw(wheres())
    within = draw(st.sampled_from([None, "1d", "3d", "30d"] if follow else [None, "30m", "1h", "2h", "1d", "3d"]))
    if within:
        rule["within"] = within
    if draw(st.booleans()):
        rule["where"] = draw(wheres())
    if draw(st.booleans()):
        op = draw(st.sampled_from(["eq", "neq", "gt", "gte", "lt", "lte", "between"]))
        rule["count"] = {op: draw(sorted_pair(st.integers(0, 3)) if op == "between" else st.integers(0, 3))}
    if draw(st.booleans()):
        op = draw(st.sampled_from(["gte", "lt", "between", "eq"]))
        amounts = st.sampled_from([0, 5, 10.5, 20])
        rule["sum"] = {"property": "amount", op: draw(sorted_pair(amounts) if op == "between" else amounts)}
    # keys in a random order: the parser must not care
    keys = draw(st.permutations(list(rule)))
    return {k: rule[k] for k in keys}


def rules(depth: int = 0):
    leaves = st.one_of(trait_rules(), event_rules(), st.sampled_from([{"segment": "s1"}, {"segment": "s2"}]))
    if depth >= 3:
        return leaves
    sub = rules(depth + 1)
    return st.one_of(
        leaves,
        st.lists(sub, min_size=1, max_size=3).map(lambda cs: {"all": cs}),
        st.lists(sub, min_size=1, max_size=3).map(lambda cs: {"any": cs}),
        sub.map(lambda c: {"not": c}),
    )


def iso(moment: datetime, style: int) -> str:
    if style == 0:
        return moment.isoformat()
    if style == 1:
        return moment.isoformat() + "Z"
    return (moment + 2 * H).isoformat() + "+02:00"  # the same instant


PROFILE_VALUES = {
    "gender": ["male", "female", "x", ""],
    "city": ["Berlin", "Bern", "Paris", "male"],
    "total_revenue": [0.0, 5.0, 10.5, 50.0, 100.5, 500.0, -1.0],
    "last_seen_at": [NOW + d for d in OFFSETS] + [datetime(2024, 5, 31, 23, 59), datetime(2024, 6, 2), datetime(2024, 6, 1)],
    "is_subscribed": [True, False],
    "products_purchased": [[], ["a"], ["b"], ["a", "b"], ["b", "c", "d"], ["a", "c"]],
}
PROPERTY_VALUES = {
    "amount": [0, 5, 10.5, 20, -1],
    "plan": PLANS,
    "gift": [True, False],
    "tags": [[], ["a"], ["a", "b"], ["c"], ["b", "d"]],
    "at": [(NOW + d, style) for d in OFFSETS + [timedelta(days=-1, hours=12)] for style in (0, 1, 2)],
}


@st.composite
def worlds(draw):
    """Profiles with missing traits, events with missing / null properties, segment memberships.
    Drawn from a Random that hypothesis controls: large worlds are cheap to make."""
    rnd = draw(st.randoms(use_true_random=False))
    people = []
    for i in range(rnd.randint(0, 10)):
        profile = {"person_id": f"p{i}"}
        for column, values in PROFILE_VALUES.items():
            profile[column] = rnd.choice(values) if rnd.random() < 0.8 else None
        people.append(profile)
    events = []
    for _ in range(rnd.randint(0, 60) if people else 0):
        props = {}
        for name, values in PROPERTY_VALUES.items():
            presence = rnd.random()
            if presence < 0.15:
                props[name] = None
            elif presence < 0.8:
                value = rnd.choice(values)
                props[name] = iso(*value) if name == "at" else value
        events.append({
            "person": f"p{rnd.randint(0, len(people))}",  # sometimes a person without a profile
            "name": rnd.choice(["a", "b", "c"]),
            "at": NOW + rnd.choice(OFFSETS),
            "props": props,
        })
    membership = {(s, p["person_id"]) for p in people for s in ("s1", "s2") if rnd.random() < 0.5}
    return people, events, membership


HYPOTHESIS_DIR = Path(tempfile.mkdtemp(prefix="segment-hypothesis-"))
SHARED: dict = {}  # one in-memory warehouse for all examples, refilled each time


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(world=worlds(), rule_list=st.lists(rules(), min_size=1, max_size=6))
def test_compiled_sql_matches_python_evaluator(world, rule_list):
    people, events, membership = world
    con = make_warehouse(people, events, sorted(membership), con=SHARED.get("con"))
    SHARED["con"] = con
    for rule in rule_list:  # several rules per world: filling the tables is the slow part
        path = write_segment(HYPOTHESIS_DIR, rule, name="h")
        compiled = compile_segment(load_segment(path), CATALOG, NOW)
        got = {r[0] for r in con.execute(compiled.sql, compiled.params).fetchall()}
        expected = {p["person_id"] for p in people if evaluate(rule, p, events, membership)}
        assert got == expected, f"{yaml.safe_dump(rule)}\n{compiled.sql}\n{compiled.params}"


def test_sql_placeholders_match_parameters():
    """No `?` inside the SQL text other than placeholders (values never reach the text)."""
    path = REPO / "config" / "segments" / "cart_abandoners.yaml"
    compiled = compile_segment(load_segment(path), CATALOG, NOW)
    assert len(re.findall(r"\?", compiled.sql)) == len(compiled.params)
