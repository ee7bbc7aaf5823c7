"""Fault injection: hostile segment files (an alias bomb, huge numbers, deep nesting, huge lists, non-UTF-8,
binary) each fail fast, alone, with `file:line`, in bounded time and memory; the code location still loads
and every other segment is evaluated."""

from __future__ import annotations

import random
import re
import time
import tracemalloc
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
from dagster import materialize

from cdp_assets.config import ConfigError, read_config
from cdp_assets.segments.assets import segment_assets, segment_key
from cdp_assets.segments.check import check_segment_file
from cdp_assets.segments.compiler import Catalog, SegmentError, compile_segment, load_segment
from cdp_resources import WarehouseResource

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def alias_bomb(name: str) -> bytes:
    """'Billion laughs': nine levels of nine aliases, 9**9 conditions once expanded, in about 650 bytes."""
    lines = [f"name: {name}", "where:", "  all:", "    - &a0 {trait: total_revenue, op: gt, value: 1}"]
    for level in range(1, 10):
        lines.append(f"    - &a{level} {{all: [" + ", ".join([f"*a{level - 1}"] * 9) + "]}")
    lines.append("    - *a9")
    return ("\n".join(lines) + "\n").encode()


def event(name: str, **fields) -> bytes:
    body = "".join(f"  {key}: {value}\n" for key, value in fields.items())
    return f"name: {name}\nwhere:\n  event: order_completed\n{body}".encode()


def trait(name: str, op: str, value: str) -> bytes:
    return f"name: {name}\nwhere:\n  trait: total_revenue\n  op: {op}\n  value: {value}\n".encode()


# (file name, content, line of the error, what the message says)
HOSTILE = [
    ("alias_bomb", alias_bomb("alias_bomb"), 9, "expands to more than 100,000 values"),
    ("recursive_alias", b"name: recursive_alias\nwhere: &a {all: [*a]}\n", 2, "alias refers to a node that contains it"),
    ("within_huge", event("within_huge", within="99999999999999999999d"), 4, "at most 36600d"),
    ("within_long", event("within_long", within="999999d"), 4, "at most 36600d"),
    ("within_last_huge", b"name: within_last_huge\nwhere:\n  trait: last_seen_at\n  op: within_last\n  value: 99999999999999999999m\n",
     5, "at most 36600d"),
    ("follow_up_huge", event("follow_up_huge", within="2d", not_followed_by="{event: x, within: 99999999999999999999h}"), 5,
     "at most 36600d"),
    ("count_huge", event("count_huge", count="{gte: " + "9" * 40 + "}"), 4, "whole number from 0 to"),
    ("count_between_huge", event("count_between_huge", count="{between: [0, " + "9" * 40 + "]}"), 4, "whole number from 0 to"),
    ("sum_inf", event("sum_inf", sum="{property: revenue, gte: 1e999}"), 4, "needs a number"),
    ("digits", trait("digits", "gt", "1" + "0" * 5000), 5, "cannot read"),
    ("month_13", b"name: month_13\nwhere:\n  trait: last_seen_at\n  op: before\n  value: 2024-13-45\n", 5, "month must be in 1..12"),
    ("flow_nesting", b"name: flow_nesting\nwhere: " + b"[" * 200_000 + b"\n", 2, "nested more than 100 levels deep"),
    ("block_nesting", b"name: block_nesting\nwhere:\n" + b"- " * 100_000 + b"x\n", 3, "nested more than 100 levels deep"),
    ("mapping_nesting", b"name: mapping_nesting\nwhere: " + b"{a: " * 50_000 + b"\n", 2, "nested more than 100 levels deep"),
    ("condition_nesting", b"name: condition_nesting\nwhere:\n" + b"".join(b"  " * (i + 1) + b"not:\n" for i in range(40))
     + b"  " * 41 + b"trait: total_revenue\n" + b"  " * 41 + b"op: is_set\n", 36, "nested more than 32 deep"),
    ("oversized", b"name: oversized\ndescription: " + b"x" * 300_000 + b"\nwhere: {trait: total_revenue, op: is_set}\n", 1,
     "more than the 262,144 allowed"),
    ("latin1", "name: latin1\ndescription: café\nwhere: {trait: total_revenue, op: is_set}\n".encode("latin-1"), 2, "not UTF-8"),
    ("binary", bytes(random.Random(7).randrange(256) for _ in range(4096)), None, ""),
    ("nul", b"name: nul\nwhere: {trait: total_revenue\x00, op: is_set}\n", 2, "is not allowed"),
]


@pytest.mark.parametrize("name,content,line,message", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_file_fails_fast_with_file_and_line(tmp_path, name, content, line, message):
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(content)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(SegmentError) as caught:
            load_segment(path)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    text = str(caught.value)
    assert re.match(rf"^{re.escape(str(path))}:{line or '[0-9]+'}: ", text) and message in text, text
    assert elapsed < 5 and peak < 64 * 2**20, (elapsed, peak)  # before: minutes and gigabytes for the bomb


def test_the_bomb_is_a_kilobyte():
    assert len(alias_bomb("b")) < 1024


def test_a_huge_list_is_bounded_by_the_file_size_and_stays_fast(tmp_path):
    """25,000 values (about 250 KB, under the cap): loaded, compiled to one list parameter, evaluated over
    100,000 profiles in well under a second or two; 40,000 values are over the cap."""
    values = [f"v{i}" for i in range(0, 50_000, 2)]
    path = tmp_path / "many.yaml"
    path.write_text("name: many\nwhere:\n  trait: email\n  op: in\n  value: [" + ", ".join(values) + "]\n")
    started = time.perf_counter()
    compiled = compile_segment(load_segment(path), Catalog({"person_id": "VARCHAR", "email": "VARCHAR"}, {}), datetime(2026, 1, 1))
    con = duckdb.connect()
    con.execute("CREATE SCHEMA cdp")
    con.execute("CREATE TABLE cdp.profiles AS SELECT 'p' || i AS person_id, 'v' || i AS email FROM range(100000) t(i)")
    count = con.execute(f"SELECT count(*) FROM ({compiled.sql})", compiled.params).fetchone()[0]
    assert count == 25_000  # the oracle: every even v below 50,000
    assert time.perf_counter() - started < 15  # before: a parameter per value, ~12 s to evaluate alone
    path.write_text("name: many\nwhere:\n  trait: email\n  op: in\n  value: [" + ", ".join(f"v{i}" for i in range(40_000)) + "]\n")
    with pytest.raises(SegmentError, match=r"many.yaml:1: the file is .* more than the 262,144 allowed"):
        load_segment(path)


def _tiny_warehouse(path: Path) -> WarehouseResource:
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA cdp; CREATE SCHEMA core")
        con.execute("CREATE TABLE cdp.profiles (person_id VARCHAR, total_revenue DOUBLE, last_seen_at TIMESTAMP, email VARCHAR)")
        con.execute("INSERT INTO cdp.profiles VALUES ('rich', 900, now(), 'a@x.io'), ('poor', 5, now(), 'b@x.io')")
        con.execute("CREATE TABLE core.person_events (person_id VARCHAR, event_id VARCHAR, event_type VARCHAR, "
                    "event_name VARCHAR, occurred_at TIMESTAMP, properties JSON)")
        con.execute("CREATE TABLE cdp.events (event_name VARCHAR, occurred_at TIMESTAMP, properties JSON)")
    return WarehouseResource(path=str(path))


def test_every_hostile_file_fails_alone_while_the_others_are_evaluated(tmp_path):
    """The code location loads (before: OverflowError on `within: 99999999999999999999d`, minutes on the
    bomb); each hostile file is an asset failing with `file:line`; the good segments are evaluated."""
    folder = tmp_path / "segments"
    folder.mkdir()
    for name, content, *_ in HOSTILE:
        (folder / f"{name}.yaml").write_bytes(content)
    (folder / "big_spenders.yaml").write_text("name: big_spenders\nrefresh: hourly\nwhere: {trait: total_revenue, op: gte, value: 500}\n")
    (folder / "everyone.yaml").write_text("name: everyone\nwhere: {not: {segment: big_spenders}}\n")
    started = time.perf_counter()
    assets = segment_assets(folder)
    assert time.perf_counter() - started < 10
    by_name = {a.key.path[-1]: a for a in assets}
    assert set(by_name) == {name for name, *_ in HOSTILE} | {"big_spenders", "everyone"}
    for name, _, line, message in HOSTILE:
        description = by_name[name].descriptions_by_key[segment_key(name)]
        assert re.match(rf"INVALID definition {name}.yaml: {re.escape(str(folder / name))}.yaml:{line or '[0-9]+'}: ", description)
        assert message in description
    warehouse = _tiny_warehouse(tmp_path / "warehouse.duckdb")
    result = materialize(assets, resources={"warehouse": warehouse}, run_config=QUIET, raise_on_error=False)
    failures = {e.step_key: str(e.event_specific_data.error) for e in result.all_events if e.is_step_failure}
    assert {key.removeprefix("segments__") for key in failures} == {name for name, *_ in HOSTILE}
    for name, _, line, message in HOSTILE:
        error = failures[f"segments__{name}"]
        assert re.search(rf"{re.escape(str(folder / name))}.yaml:{line or '[0-9]+'}: ", error) and message in error, error
    with duckdb.connect(str(warehouse.file()), read_only=True) as con:
        membership = set(con.execute("SELECT segment, person_id FROM cdp.segment_membership").fetchall())
    assert membership == {("big_spenders", "rich"), ("everyone", "poor")}


def test_segment_check_reports_a_hostile_file_without_a_traceback(tmp_path):
    path = tmp_path / "alias_bomb.yaml"
    path.write_bytes(alias_bomb("alias_bomb"))
    valid, text = check_segment_file(path, _tiny_warehouse(tmp_path / "warehouse.duckdb"))
    assert not valid and text.startswith(f"{path}:9: ") and "expands to more than" in text


def test_configuration_files_share_the_bounds_and_keep_their_anchors(tmp_path):
    bomb = tmp_path / "destinations.yaml"
    bomb.write_text("a0: &a0 [x]\n" + "".join(
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, 10)))
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"destinations.yaml:\d+: invalid YAML: the document expands"):
        read_config(bomb)
    assert time.perf_counter() - started < 2
    shared = tmp_path / "sources.yaml"
    shared.write_text("defaults: &d {kind: csv, partitions: daily}\nsources:\n  a: *d\n  b: {<<: *d, partitions: none}\n")
    assert read_config(shared)["sources"] == {"a": {"kind": "csv", "partitions": "daily"}, "b": {"kind": "csv", "partitions": "none"}}
