"""The validation rules come from the Great Expectations suites; each kind is evaluated exactly."""

from __future__ import annotations

import json
from datetime import datetime

import polars as pl
import pytest

from cdp_assets.config import load_sources
from cdp_assets.events.validate import unpack_typed
from cdp_assets.events.rules import EXPECTATIONS_DIR, SuiteError, apply_rules, load_suite, suite_rules, typed_property_rules

PARAMS = {"max_event_time": datetime(2030, 1, 1)}


def parsed(con, name: str, records: list[str]) -> pl.DataFrame:
    """`records` as raw rows of source `name`, read back through its dbt parse view."""
    con.execute(f"DELETE FROM raw.{name}")
    con.executemany(f"INSERT INTO raw.{name} VALUES ('', 'f', ?, ?, TIMESTAMP '2026-01-01')", list(enumerate(records, 1)))
    if name == "web":
        return con.sql("SELECT * FROM staging.parsed_events WHERE raw_source = 'web'").pl()
    frame = con.sql(f"SELECT * FROM staging.parsed_records WHERE raw_source = '{name}'").pl()
    return unpack_typed(frame, load_sources()[name])


def event_rules(suite: dict, frame: pl.DataFrame):
    return suite_rules(suite, PARAMS, frame.columns, "events.json") + typed_property_rules(suite, "events.json")


@pytest.fixture
def judge_events(parse_views):
    def judge(records: list[dict | str]) -> list[list[str]]:
        frame = parsed(parse_views, "web", [r if isinstance(r, str) else json.dumps(r) for r in records])
        suite = load_suite("events")
        judged = apply_rules(frame, event_rules(suite, frame)).sort("line_no")
        # Every finding, blocking ones first, then flagged ones (the shipped plan flags its violations).
        return [[reason.split(":")[0] for reason in reasons + flagged]
                for reasons, flagged in zip(judged["reasons"].to_list(), judged["violations"].to_list())]

    return judge


GOOD = {"type": "track", "messageId": "m1", "anonymousId": "a", "event": "product_added",
        "properties": {"product_id": "sku_1"}, "timestamp": "2026-01-01T00:00:00Z"}


@pytest.mark.parametrize(
    ("change", "codes"),
    [
        ({}, []),
        ({"anonymousId": None}, ["missing_identity"]),
        ({"anonymousId": None, "userId": "u1"}, []),
        ({"type": "purchase"}, ["unknown_type"]),
        ({"timestamp": "yesterday"}, ["bad_timestamp"]),
        ({"timestamp": "2099-01-01T00:00:00Z"}, ["timestamp_out_of_range"]),
        ({"timestamp": "1999-12-31T00:00:00Z"}, ["timestamp_out_of_range"]),
        ({"event": None}, ["missing_event_name"]),
        ({"type": "identify", "event": None, "traits": {"email": "not-an-email"}}, ["invalid_email"]),
        ({"event": "order_completed", "properties": {"order_id": "o1", "revenue": "twelve"}}, ["wrong_type"]),
        ({"event": "order_completed", "properties": {"order_id": "o1", "revenue": 12.5}}, []),
        ({"event": "order_completed", "properties": {"revenue": 12.5}}, ["missing_property"]),
        ({"properties": {"product_id": None, "price": "x"}}, ["missing_property", "wrong_type"]),
        ({"event": "some_new_event", "properties": {}}, []),  # the shipped plan is not strict
        ({"messageId": None}, ["missing_message_id"]),
    ],
)
def test_event_rules(change, codes, judge_events):
    message = {**GOOD, **change}
    assert judge_events([{k: v for k, v in message.items() if v is not None}]) == [codes]


def test_the_shipped_suite_is_in_sync_with_the_tracking_plan():
    from cdp_assets.events.tracking_plan import load_tracking_plan, sync_events_suite
    from cdp_resources.settings import config_dir

    plan = load_tracking_plan(config_dir() / "tracking_plan.yaml")
    assert sync_events_suite(plan, load_suite("events")) == load_suite("events"), "run `cdp tracking-plan sync`"


def test_a_strict_plan_quarantines_unknown_track_events(parse_views):
    from cdp_assets.events.tracking_plan import TrackingPlan, sync_events_suite

    suite = sync_events_suite(TrackingPlan(True, {"product_added": {}}), load_suite("events"))
    assert sync_events_suite(TrackingPlan(False, {}), suite)["expectations"] == load_suite("events")["expectations"]
    page = {**GOOD, "type": "page", "event": None, "name": "home"}
    frame = parsed(parse_views, "web", [json.dumps(GOOD), json.dumps({**GOOD, "event": "dance"}), json.dumps(page)])
    judged = apply_rules(frame, event_rules(suite, frame)).sort("line_no")
    assert [[r.split(":")[0] for r in reasons] for reasons in judged["violations"]] == [[], ["unknown_event"], []]
    assert judged["reasons"].to_list() == [[], [], []]  # flagged, not blocked: the plan-wide default


PLAN_VIOLATIONS = [
    {**GOOD, "messageId": "m1", "properties": {}},                                          # product_added without product_id
    {**GOOD, "messageId": "m2", "event": "order_completed", "properties": {"order_id": "o", "revenue": "x"}},
    {**GOOD, "messageId": "m3", "event": "dance"},                                          # not in the plan
    {**GOOD, "messageId": "m4", "anonymousId": None, "properties": {}},                     # no identity: structural
    {**GOOD, "messageId": "m5", "timestamp": "soon", "event": "order_completed", "properties": {}},  # bad time: structural
]


@pytest.mark.parametrize(
    ("plan_text", "blocked", "flagged"),
    [
        ("strict: true\nevents: {product_added: {product_id: {type: string, required: true}},"
         " order_completed: {order_id: {type: string, required: true}, revenue: {type: number}}}",
         [[], [], [], ["missing_identity"], ["bad_timestamp"]],
         [["missing_property"], ["wrong_type"], ["unknown_event"], ["missing_property"], ["missing_property"]]),
        ("strict: true\non_violation: quarantine\nevents: {product_added: {product_id: {type: string, required: true}},"
         " order_completed: {order_id: {type: string, required: true}, revenue: {type: number}}}",
         [["missing_property"], ["wrong_type"], ["unknown_event"], ["missing_identity", "missing_property"],
          ["bad_timestamp", "missing_property"]],
         [[], [], [], [], []]),
        ("strict: true\nevents: {product_added: {product_id: {type: string, required: true}},"
         " order_completed: {on_violation: quarantine, order_id: {type: string, required: true}, revenue: {type: number}}}",
         [[], ["wrong_type"], [], ["missing_identity"], ["bad_timestamp", "missing_property"]],
         [["missing_property"], [], ["unknown_event"], ["missing_property"], []]),
    ],
    ids=["flag-by-default", "quarantine-plan-wide", "quarantine-one-event"],
)
def test_on_violation_flags_or_blocks_but_structural_failures_always_block(parse_views, tmp_path, plan_text, blocked, flagged):
    from cdp_assets.events.tracking_plan import load_tracking_plan, sync_events_suite

    (tmp_path / "plan.yaml").write_text(plan_text)
    suite = sync_events_suite(load_tracking_plan(tmp_path / "plan.yaml"), load_suite("events"))
    lines = [json.dumps({k: v for k, v in m.items() if v is not None}) for m in PLAN_VIOLATIONS]
    frame = parsed(parse_views, "web", lines)
    judged = apply_rules(frame, event_rules(suite, frame)).sort("line_no")
    codes = lambda column: [[r.split(":")[0] for r in found] for found in judged[column]]  # noqa: E731
    assert (codes("reasons"), codes("violations")) == (blocked, flagged)


def test_a_bad_on_violation_is_an_error_naming_the_file(tmp_path):
    from cdp_assets.config import ConfigError
    from cdp_assets.events.tracking_plan import load_tracking_plan

    (tmp_path / "plan.yaml").write_text("events: {signed_up: {on_violation: block}}")
    with pytest.raises(ConfigError, match="plan.yaml: events.signed_up.on_violation: on_violation 'block'"):
        load_tracking_plan(tmp_path / "plan.yaml")


def test_malformed_line_has_only_its_parse_error(judge_events):
    assert judge_events(["{not json", '"a json string"']) == [["malformed_json"], ["malformed_json"]]


def test_table_source_types_and_rules(parse_views):
    rows = [
        {"receipt_id": "r1", "phone": "4155550101", "amount": "12.50", "store_id": "s", "purchased_at": "2026-01-01 10:00:00"},
        {"receipt_id": "r2", "phone": "4155550101", "amount": "abc", "store_id": "s", "purchased_at": "2026-01-01 10:00:00"},
        {"receipt_id": "r3", "phone": "", "amount": "1", "store_id": "s", "purchased_at": "soon"},
    ]
    frame = parsed(parse_views, "pos", [json.dumps(r) for r in rows])
    judged = apply_rules(frame, suite_rules(load_suite("pos"), PARAMS, frame.columns, "pos.json")).sort("line_no")
    assert judged["amount"].to_list()[0] == 12.5
    codes = [[r.split(":")[0] for r in reasons] for reasons in judged["reasons"].to_list()]
    assert codes == [[], ["wrong_type"], ["bad_timestamp", "missing_identity"]]


def test_every_suite_is_a_valid_great_expectations_suite():
    import great_expectations as gx

    for path in EXPECTATIONS_DIR.glob("*.json"):
        suite = gx.ExpectationSuite(**json.loads(path.read_text()))
        assert suite.expectations, path


def test_unsupported_expectation_is_an_error_naming_the_suite():
    suite = {"expectations": [{"type": "expect_table_row_count_to_equal", "kwargs": {"column": "x"}}]}
    with pytest.raises(SuiteError, match="my.json: expectations\\[0\\]"):
        suite_rules(suite, PARAMS, ["x"], "my.json")
    with pytest.raises(SuiteError, match="column 'nope'"):
        suite_rules({"expectations": [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "nope"}}]}, PARAMS, ["x"], "my.json")


def test_apply_rules_without_rules_keeps_parse_errors():
    frame = pl.DataFrame({"parsed": [True], "parse_errors": [["wrong_type: x"]], "unreadable_columns": [["x"]]})
    assert apply_rules(frame, [])["reasons"].to_list() == [["wrong_type: x"]]
