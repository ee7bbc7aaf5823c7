"""Segment assets on small hand-made warehouses: templates, entries and exits, bad files, hourly refresh."""

from __future__ import annotations

import re
import shutil
from datetime import datetime, timedelta

import duckdb
import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    Definitions,
    IntMetadataValue,
    RunRequest,
    SkipReason,
    build_sensor_context,
    job,
    materialize,
    op,
)

from cdp_assets.segments.assets import refresh_segment, segment_assets
from cdp_assets.segments.compiler import SegmentError, catalog_from_warehouse, load_segment, load_segments, property_events
from cdp_resources import WarehouseResource
from cdp_resources.settings import config_dir

NOW = datetime(2026, 6, 1, 12, 0)
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _warehouse(path, profiles, events):
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA cdp; CREATE SCHEMA core")
    con.execute(
        """CREATE TABLE cdp.profiles (person_id VARCHAR, order_count BIGINT, total_revenue DOUBLE,
           last_order_at TIMESTAMP, rfm_segment VARCHAR, gender VARCHAR)"""
    )
    if profiles:
        con.executemany("INSERT INTO cdp.profiles VALUES (?, ?, ?, ?, ?, ?)", profiles)
    con.execute("CREATE TABLE core.person_events (person_id VARCHAR, event_name VARCHAR, occurred_at TIMESTAMP, properties JSON)")
    if events:
        con.executemany("INSERT INTO core.person_events VALUES (?, ?, ?, '{}')", events)
    con.execute("CREATE TABLE cdp.events AS SELECT event_name, properties, occurred_at FROM core.person_events")
    return con


def _members(con, segment):
    return sorted(r[0] for r in con.execute("SELECT person_id FROM cdp.segment_membership WHERE segment = ?", [segment]).fetchall())


def test_shipped_templates_find_exactly_their_persons(tmp_path):
    ago = lambda **kw: NOW - timedelta(**kw)  # noqa: E731
    profiles = [
        ("lapsed", 3, 120.0, ago(days=120), "hibernating", "f"),
        ("tenth", 10, 900.0, ago(days=2), "champions", "m"),
        ("ninth", 9, 450.0, ago(days=1), "loyal", None),
        ("new", 0, 0.0, None, None, None),
        ("cart", 1, 20.0, ago(days=10), "promising", None),
        ("cart_then_order", 2, 60.0, ago(minutes=30), "promising", None),
        ("nobody", 0, 0.0, None, None, None),
    ]
    events = [
        ("new", "signed_up", ago(days=2)),
        ("lapsed", "signed_up", ago(days=200)),
        ("cart", "product_added", ago(hours=1)),
        ("cart_then_order", "product_added", ago(hours=1)),
        ("cart_then_order", "order_completed", ago(minutes=30)),
        ("nobody", "product_added", ago(hours=3)),  # outside the 2 h window
    ]
    con = _warehouse(tmp_path / "w.duckdb", profiles, events)
    definitions = load_segments(config_dir() / "segments")
    assert {"cart_abandoners", "vip_buyers", "lapsed_customers", "new_signups", "rfm_champions", "tenth_order"} <= set(definitions)
    for definition in definitions.values():
        refresh_segment(con, definition, NOW)
    assert _members(con, "cart_abandoners") == ["cart"]
    assert _members(con, "vip_buyers") == ["tenth"]
    assert _members(con, "lapsed_customers") == ["lapsed"]
    assert _members(con, "new_signups") == ["new"]
    assert _members(con, "rfm_champions") == ["tenth"]
    assert _members(con, "tenth_order") == ["tenth"]


def test_entries_and_exits_are_recorded_between_evaluations(tmp_path):
    con = _warehouse(tmp_path / "w.duckdb", [("a", 1, 600.0, NOW, None, None), ("b", 1, 100.0, NOW, None, None)], [])
    vip = load_segments(config_dir() / "segments")["vip_buyers"]
    first = refresh_segment(con, vip, NOW)
    assert (first["size"], first["entered"], first["exited"]) == (1, 1, 0)
    con.execute("UPDATE cdp.profiles SET total_revenue = 700 WHERE person_id = 'b'")
    con.execute("UPDATE cdp.profiles SET total_revenue = 10 WHERE person_id = 'a'")
    later = NOW + timedelta(hours=1)
    second = refresh_segment(con, vip, later)
    assert (second["size"], second["entered"], second["exited"]) == (1, 1, 1)
    assert refresh_segment(con, vip, later + timedelta(hours=1))["entered"] == 0  # nothing changed, nothing recorded
    changes = con.execute("SELECT person_id, change, changed_at FROM cdp.segment_changes ORDER BY changed_at, person_id").fetchall()
    assert changes == [("a", "entered", NOW), ("a", "exited", later), ("b", "entered", later)]
    assert con.execute("SELECT person_id, entered_at FROM cdp.segment_membership").fetchall() == [("b", later)]


def test_a_bad_file_fails_alone_and_the_others_still_load_and_run(tmp_path, monkeypatch):
    folder = tmp_path / "segments"
    folder.mkdir()
    shutil.copy(config_dir() / "segments" / "vip_buyers.yaml", folder)
    (folder / "typo.yaml").write_text("name: typo\nrefresh: daily\nwhere:\n  trait: total_revenue\n  op: greater\n  value: 1\n")
    (folder / "reuses_typo.yaml").write_text("name: reuses_typo\nrefresh: daily\nwhere:\n  segment: typo\n")
    assets = segment_assets(folder)
    Definitions(assets=assets)  # the code location still loads
    by_key = {a.key: a for a in assets}
    assert set(by_key) == {AssetKey(["segments", n]) for n in ("vip_buyers", "typo", "reuses_typo")}
    monkeypatch.setenv("CDP_DATA_DIR", str(tmp_path))
    _warehouse(tmp_path / "warehouse.duckdb", [("a", 1, 600.0, NOW, None, None)], []).close()
    resources = {"warehouse": WarehouseResource()}
    assert materialize([by_key[AssetKey(["segments", "vip_buyers"])]], resources=resources, run_config=QUIET).success
    for name, line in (("typo", 5), ("reuses_typo", 4)):
        result = materialize([by_key[AssetKey(["segments", name])]], resources=resources, run_config=QUIET, raise_on_error=False)
        [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        assert f"{name}.yaml:{line}:" in failure.step_failure_data.error.cause.message


def test_a_segment_depends_on_the_segments_it_reuses_and_reads_their_fresh_members(tmp_path, monkeypatch):
    folder = tmp_path / "segments"
    folder.mkdir()
    shutil.copy(config_dir() / "segments" / "vip_buyers.yaml", folder)
    (folder / "vip_women.yaml").write_text(
        "name: vip_women\nwhere:\n  all:\n    - segment: vip_buyers\n    - {trait: gender, op: eq, value: f}\n"
    )
    assets = {a.key.path[-1]: a for a in segment_assets(folder)}
    assert AssetKey(["segments", "vip_buyers"]) in assets["vip_women"].dependency_keys
    monkeypatch.setenv("CDP_DATA_DIR", str(tmp_path))
    profiles = [("a", 1, 600.0, NOW, None, "f"), ("b", 1, 900.0, NOW, None, "m"), ("c", 1, 10.0, NOW, None, "f")]
    _warehouse(tmp_path / "warehouse.duckdb", profiles, []).close()
    # One run, both assets: vip_buyers is evaluated first, so vip_women sees its members of this run.
    result = materialize(list(assets.values()), resources={"warehouse": WarehouseResource()}, run_config=QUIET)
    sizes = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        metadata = materialization.metadata
        assert all(isinstance(metadata[k], IntMetadataValue) for k in ("size", "entered", "exited"))  # plotted in the UI
        sizes[materialization.asset_key.path[-1]] = metadata["size"].value
    assert sizes == {"vip_buyers": 2, "vip_women": 1}
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        assert _members(con, "vip_women") == ["a"]


def test_only_the_events_a_rule_reads_properties_of_are_sampled_and_still_type_checked(tmp_path):
    con = _warehouse(tmp_path / "w.duckdb", [("a", 1, 10.0, NOW, None, None)], [])
    con.execute("""INSERT INTO core.person_events VALUES
        ('a', 'order_completed', ?, '{"revenue": 120, "currency": "EUR"}'),
        ('a', 'product_added', ?, '{"price": 9.5}')""", [NOW - timedelta(hours=1), NOW - timedelta(hours=3)])
    con.execute("CREATE OR REPLACE TABLE cdp.events AS SELECT event_name, properties, occurred_at FROM core.person_events")
    rule = tmp_path / "big_eur_spenders.yaml"
    rule.write_text(
        "name: big_eur_spenders\nwhere:\n  all:\n    - event: product_added\n"
        "    - event: order_completed\n      where: [{property: currency, op: eq, value: EUR}]\n"
        "      sum: {property: revenue, gte: 100}\n"
    )
    definition = load_segment(rule)
    assert property_events(definition) == ["order_completed"]
    assert set(catalog_from_warehouse(con, event_names=property_events(definition)).event_properties) == {"order_completed"}
    assert refresh_segment(con, definition, NOW)["size"] == 1
    rule.write_text(rule.read_text().replace("op: eq, value: EUR", "op: gt, value: 3"))
    with pytest.raises(SegmentError, match=re.escape(f"{rule}:6: operator 'gt' does not apply to property 'currency'")):
        refresh_segment(con, load_segment(rule), NOW)


def test_hourly_segments_are_re_evaluated_after_every_extract():
    from cdp_assets.definitions import defs
    from cdp_assets.refresh import DOWNSTREAM

    selected = DOWNSTREAM.resolve(defs.resolve_asset_graph())
    definitions = load_segments(config_dir() / "segments")
    assert {n for n, d in definitions.items() if d.refresh == "hourly"} >= {"cart_abandoners", "new_signups", "vip_buyers"}
    for name, definition in definitions.items():
        assert (AssetKey(["segments", name]) in selected) == (definition.refresh == "hourly"), name
    [sensor] = [s for s in defs.sensors if s.name == "refresh_after_extract"]
    assert sensor.job_name == "refresh_job"

    # An extract succeeds (new events landed): the sensor requests a refresh run ...
    @op
    def land_events():
        pass

    @job(name="web_hourly_job")
    def web_hourly_job():
        land_events()

    instance = DagsterInstance.ephemeral()
    web_hourly_job.execute_in_process(instance=instance)

    def evaluate():
        return sensor(build_sensor_context(instance=instance))

    assert isinstance(evaluate(), RunRequest)
    # ... but none beside a refresh that is waiting or running: one refresh after it ends, if anything landed
    # meanwhile (tests/test_orchestration.py).
    instance.add_run(DagsterRun(job_name="refresh_job", status=DagsterRunStatus.NOT_STARTED))
    assert isinstance(evaluate(), SkipReason)


def test_an_hourly_schedule_re_evaluates_time_windows_without_new_data():
    from cdp_assets.definitions import defs

    schedules = [s for s in defs.schedules if s.job_name == "refresh_job"]
    assert [s.cron_schedule for s in schedules] == ["20 * * * *"]


def test_segment_check_prints_sql_and_size_or_the_error(tmp_path, monkeypatch, capsys):
    from cdp_assets.cli import main

    monkeypatch.setenv("CDP_DATA_DIR", str(tmp_path))
    _warehouse(tmp_path / "warehouse.duckdb", [("a", 1, 600.0, NOW, None, None), ("b", 0, 0.0, None, None, None)], []).close()
    assert main(["segment", "check", str(config_dir() / "segments" / "vip_buyers.yaml")]) == 0
    out = capsys.readouterr().out
    assert "FROM cdp.profiles" in out and "parameters: [500]" in out and out.rstrip().endswith("size: 1")
    folder = tmp_path / "segments"
    folder.mkdir()
    (folder / "bad.yaml").write_text("name: bad\nwhere:\n  trait: no_such_trait\n  op: eq\n  value: 1\n")
    assert main(["segment", "check", str(folder / "bad.yaml")]) == 1
    assert f"{folder / 'bad.yaml'}:3: unknown trait 'no_such_trait'" in capsys.readouterr().err
    # A bad neighbour is not this file's problem, unless this file reuses it.
    shutil.copy(config_dir() / "segments" / "vip_buyers.yaml", folder)
    assert main(["segment", "check", str(folder / "vip_buyers.yaml")]) == 0
    (folder / "reuses_bad.yaml").write_text("name: reuses_bad\nwhere:\n  not:\n    segment: bad\n")
    assert main(["segment", "check", str(folder / "reuses_bad.yaml")]) == 1
    err = capsys.readouterr().err
    assert f"{folder / 'reuses_bad.yaml'}:4: reuses segment 'bad', which is invalid: {folder / 'bad.yaml'}:3: unknown trait" in err
    (folder / "reuses_vip.yaml").write_text("name: reuses_vip\nwhere:\n  not:\n    segment: vip_buyers\n")
    assert main(["segment", "check", str(folder / "reuses_vip.yaml")]) == 0  # no membership evaluated yet
    assert "size: unknown: the segments it reuses (vip_buyers) have not been evaluated yet" in capsys.readouterr().out


def test_any_file_name_loads_and_a_bad_file_stays_in_the_refresh_it_declares(tmp_path):
    folder = tmp_path / "segments"
    folder.mkdir()
    shutil.copy(config_dir() / "segments" / "cart_abandoners.yaml", folder)
    (folder / "cart abandoners.yaml").write_text("name: cart_abandoners\nrefresh: hourly\nwhere: {segment: nope}\n")
    (folder / "cart-abandoners.yaml").write_text("name: x\nwhere: {trait: a, op: eq, value: 1}\n")
    (folder / "broken.yaml").write_text("name: broken\nrefresh: hourly\nwhere: [unclosed\n")
    assets = {a.key.path[-1]: a for a in segment_assets(folder)}
    Definitions(assets=list(assets.values()))  # no name stops the code location from loading
    assert set(assets) == {"cart_abandoners", "cart_abandoners_2", "cart_abandoners_3", "broken"}
    refresh = {name: a.tags_by_key[a.key]["refresh"] for name, a in assets.items()}
    assert refresh == {"cart_abandoners": "hourly", "cart_abandoners_2": "hourly", "cart_abandoners_3": "daily",
                       "broken": "daily"}  # unreadable YAML: daily, the default
    assert "cart abandoners.yaml:1: name 'cart_abandoners' does not match" in assets["cart_abandoners_2"].descriptions_by_key[
        AssetKey(["segments", "cart_abandoners_2"])]
