"""Asset checks fail when the data is wrong, not only pass when it is right."""

from __future__ import annotations

import json

import duckdb
import pytest
from dagster import materialize

from cdp_assets.config import SourceConfig
from cdp_assets.events.assets import build_validation_asset
from cdp_assets.events.checks import records_reconcile
from cdp_resources import WarehouseResource

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
GOOD = {"type": "track", "anonymousId": "a", "event": "signed_up", "timestamp": "2026-01-01T00:00:00Z"}


WEB = SourceConfig(name="web", kind="events", partitions="hourly")


def _validated_warehouse(tmp_path, monkeypatch, rows: list[tuple[str, str]]):
    """raw.web holding `rows` (partition key, record), validated; the run's result."""
    monkeypatch.setenv("CDP_DATA_DIR", str(tmp_path))
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        con.execute("CREATE SCHEMA raw")
        con.execute("CREATE TABLE raw.web (partition_key VARCHAR, file VARCHAR, line_no BIGINT, record VARCHAR, loaded_at TIMESTAMP)")
        con.executemany("INSERT INTO raw.web VALUES (?, 'f', 1, ?, now())", rows)
    return materialize([build_validation_asset({"web": WEB})], resources={"warehouse": WarehouseResource()}, run_config=QUIET)


def test_reconciliation_passes_per_partition_then_fails_when_a_record_is_lost(tmp_path, monkeypatch):
    rows = [("2026-01-01-00:00", json.dumps({**GOOD, "messageId": f"m{i}"})) for i in range(3)]
    rows += [("2026-01-01-01:00", json.dumps({**GOOD, "messageId": "m9"})), ("2026-01-01-01:00", "{broken")]
    assert _validated_warehouse(tmp_path, monkeypatch, rows).success
    result = records_reconcile(warehouse=WarehouseResource())
    assert result.passed and result.metadata["per_source"].data["web"] == {"partitions": 2, "raw": 5, "accepted": 4, "quarantined": 1}
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        con.execute("DELETE FROM cdp.quarantine")  # a rejected record silently dropped
        con.execute("DELETE FROM cdp.events WHERE event_id = 'm1'")  # an accepted one lost
        con.execute("INSERT INTO raw.web VALUES ('2026-01-01-02:00', 'f', 1, '{}', now())")  # one never judged
    result = records_reconcile(warehouse=WarehouseResource())
    problems = result.metadata["problems"].md_str
    assert not result.passed
    assert "web 2026-01-01-00:00: raw 3, accepted 2, quarantined 0 (lost)" in problems
    assert "web 2026-01-01-01:00: raw 2, accepted 1, quarantined 0 (lost)" in problems
    assert "web 2026-01-01-02:00: raw 1, accepted 0, quarantined 0 (never judged)" in problems


def test_quarantine_rate_warns_for_a_partition_of_mostly_garbage(tmp_path, monkeypatch):
    from cdp_assets.events.checks import quarantine_rate_within_bounds

    good = [("2026-01-01-00:00", json.dumps({**GOOD, "messageId": f"m{i}"})) for i in range(40)]
    garbage = [("2026-01-01-01:00", "{broken") for _ in range(47)] + [("2026-01-01-01:00", json.dumps({**GOOD, "messageId": f"g{i}"})) for i in range(3)]
    assert _validated_warehouse(tmp_path, monkeypatch, good + garbage).success
    result = quarantine_rate_within_bounds(warehouse=WarehouseResource())
    assert not result.passed and result.metadata["partitions_above"].value == 1
    assert "web 2026-01-01-01:00: 94.0%" in result.metadata["above"].md_str


def test_volume_check_flags_a_closed_hour_far_from_the_trailing_median():
    from datetime import datetime

    from cdp_assets.sources.checks import volume_anomalies

    counts = {f"2026-01-01-{h:02d}:00": 100 + h for h in range(12)}
    now = datetime(2026, 1, 1, 12, 30)
    assert volume_anomalies(counts, "hourly", now)["passed"]
    dropped = {**counts, "2026-01-01-11:00": 10, "2026-01-01-12:00": 1}  # the hour in progress is not judged
    verdict = volume_anomalies(dropped, "hourly", now)
    assert not verdict["passed"] and verdict["partition"] == "2026-01-01-11:00" and verdict["ratio"] < 0.25
    assert not volume_anomalies({**counts, "2026-01-01-11:00": 1000}, "hourly", now)["passed"]
    assert volume_anomalies({"2026-01-01-10:00": 3, "2026-01-01-11:00": 0}, "hourly", now)["passed"]  # too small to judge


def test_profile_dbt_tests_fail_for_a_person_without_profile_and_a_profile_without_person(tmp_path, monkeypatch):
    """The profiles <-> id map relationship is a dbt test each way (shown in Dagster as checks on cdp.profiles)."""
    from cdp_assets.dbt.assets import cdp_dbt_models

    checks = {k.to_user_string() for k in cdp_dbt_models.check_keys}
    assert {"cdp/profiles:every_person_has_a_profile",
            "cdp/profiles:relationships_profiles_person_id__person_id__source_cdp_id_map_"} <= checks
    from tests.conftest import build_models

    monkeypatch.setenv("CDP_DATA_DIR", str(tmp_path))
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        con.execute("CREATE SCHEMA cdp")
        con.execute("CREATE TABLE cdp.id_map AS SELECT * FROM (VALUES ('email', 'a@x.io', 'p1'), ('email', 'b@x.io', 'p2')) t(identifier_type, identifier_value, person_id)")
        con.execute("CREATE TABLE cdp.profiles AS SELECT * FROM (VALUES ('p1'), ('p2')) t(person_id)")
    build_models(tmp_path, "every_person_has_a_profile relationships_profiles_person_id__person_id__source_cdp_id_map_", command="test")
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        con.execute("UPDATE cdp.profiles SET person_id = 'p3' WHERE person_id = 'p2'")
    for test in ("every_person_has_a_profile", "relationships_profiles_person_id__person_id__source_cdp_id_map_"):
        with pytest.raises(RuntimeError, match=test):
            build_models(tmp_path, test, command="test")


def test_validation_reports_ge_results_and_per_partition_quarantine_rates(tmp_path, monkeypatch):
    rows = [("2026-01-01-00:00", json.dumps({**GOOD, "messageId": "m1"})), ("2026-01-01-00:00", json.dumps({**GOOD, "messageId": "m2", "anonymousId": None})),
            ("2026-01-01-01:00", json.dumps({**GOOD, "messageId": "m3"})),
            # breaks only the tracking plan (product_added requires product_id): flagged and kept
            ("2026-01-01-01:00", json.dumps({**GOOD, "messageId": "m4", "event": "product_added", "properties": {}}))]
    result = _validated_warehouse(tmp_path, monkeypatch, rows)
    observed = {e.partition: e.event_specific_data.asset_observation.metadata for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"}
    assert {k: v["quarantine_rate"].value for k, v in observed.items()} == {"2026-01-01-00:00": 0.5, "2026-01-01-01:00": 0.0}
    [events] = [m for m in result.get_asset_materialization_events() if m.asset_key.path == ["cdp", "events"]]
    suite_result = events.materialization.metadata["great_expectations"].data["web"]
    identity = [e for e in suite_result["expectations"] if e["expectation"] == "expect_column_values_to_not_be_null(identity)"]
    assert not suite_result["success"] and identity[0]["unexpected_count"] == 1
    rates = events.materialization.metadata["violation_rates"].data  # per source: flagged of its records
    assert rates == {"web": {"flagged": 1, "records": 4, "rate": 0.25, "by_code": {"missing_property": 1}}}
    assert events.materialization.metadata["tracking_plan_violations"].value == 1
    again = materialize([build_validation_asset({"web": WEB})], resources={"warehouse": WarehouseResource()}, run_config=QUIET)
    assert not [e for e in again.all_events if e.event_type_value == "ASSET_OBSERVATION"]  # nothing changed


def test_dbt_step_runs_dbt_in_process_and_its_tests_fail_on_bad_profiles(tmp_path, monkeypatch):
    """The dbt assets run dbt in the step's process (no subprocess), and a failing dbt test still fails the step
    and is a failed check on its asset (beside the passing ones): a person written into the id map behind the
    pipeline's back has no profile, and that is found."""
    import subprocess

    from dagster import AssetSelection

    from cdp_assets.definitions import defs
    from cdp_assets.runner import run_everything
    from cdp_assets.sample_data import generate_sample_data

    monkeypatch.setenv("CDP_DATA_DIR", str(tmp_path))
    generate_sample_data(tmp_path, events=1500, seed=5, log=lambda *_: None)
    assert run_everything(progress=lambda *_: None).failures == []
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        con.execute("INSERT INTO cdp.id_map BY NAME SELECT * REPLACE ('p_ghost' AS person_id, 'ghost@x.io' AS identifier_value) "
                    "FROM cdp.id_map LIMIT 1")

    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"a subprocess was started: {args[0]!r}")

    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    result = materialize([*defs.assets, *defs.asset_checks], selection=AssetSelection.assets(["cdp", "profiles"]),
                         resources=defs.resources, run_config=QUIET, raise_on_error=False)
    assert not result.success
    verdicts = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert verdicts["every_person_has_a_profile"] is False, verdicts
    assert verdicts["unique_profiles_person_id"] is True
    assert "every_person_has_a_profile" in str(result.failure_data_for_node("cdp_dbt_models").error)
