"""Validation throughput: accepted events/second on N raw Segment messages (default 1M).

Builds `raw.web` in a temporary DuckDB file with a realistic mix (about 3% bad records: broken JSON, wrong
types, and rows failing each expectation of the suite), then times the same two steps the
`validate_records` asset runs: DuckDB JSON parsing (`parse_events`) and the row rules from
expectations/events.json evaluated with polars (`apply_rules`).

The peer, in the same run: Great Expectations 1.x validating the same suite (loaded by `load_suite`, the
`$PARAMETER` supplied as the asset does) on a pandas DataFrame of the same parsed rows, through
`great_expectations_result` as the asset calls it; failing rows per expectation are compared.

    .venv/bin/python benchmarks/validation_throughput.py [--events 1000000] [--ge-rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import time
from pathlib import Path

import duckdb

from cdp_assets.config import SourceConfig
from cdp_assets.events.parse import parse_events
from cdp_assets.events.rules import apply_rules, expectation_label, great_expectations_result, load_suite, suite_rules


def raw_lines(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        message = {
            "type": rng.choice(["track", "track", "track", "page", "identify"]),
            "messageId": f"m{i}",
            "anonymousId": f"a{rng.randrange(n // 20 + 1)}",
            "event": rng.choice(["product_viewed", "product_added", "order_completed"]),
            "properties": {"price": round(rng.random() * 100, 2), "revenue": round(rng.random() * 300, 2),
                           "product_id": f"sku_{rng.randrange(500)}", "order_id": f"o{i}"},  # the plan's required ones
            "traits": {"email": f"user{rng.randrange(n)}@example.com"},
            "context": {"ip": "127.0.0.1", "userAgent": "bench"},
            "timestamp": f"2026-11-{rng.randrange(1, 28):02d}T{rng.randrange(24):02d}:00:00Z",
        }
        bad = rng.random()
        if bad < 0.005:
            lines.append("{broken")
            continue
        if bad < 0.01:
            message.pop("anonymousId")
        elif bad < 0.015:
            message["timestamp"] = "yesterday"
        elif bad < 0.02:
            message["properties"]["revenue"] = "twelve"
        # One per suite expectation (0.2% each), so GE and polars are compared on failing rows of every rule.
        elif bad < 0.022:
            message.pop("messageId")
        elif bad < 0.024:
            message["type"] = "click"
        elif bad < 0.026:
            message.pop("type")
        elif bad < 0.028:
            message["type"] = "track"
            message.pop("event")
        elif bad < 0.030:
            message["timestamp"] = "1999-12-31T23:00:00Z"
        elif bad < 0.032:
            message["traits"]["email"] = "user at example dot com"
        lines.append(json.dumps(message))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--ge-rows", type=int, default=1_000_000, help="rows the Great Expectations peer validates")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        con = duckdb.connect(str(Path(tmp) / "bench.duckdb"))
        con.execute("CREATE SCHEMA raw")
        con.execute("CREATE TABLE raw.web (partition_key VARCHAR, file VARCHAR, line_no BIGINT, record VARCHAR, loaded_at TIMESTAMP)")
        import polars as pl

        lines = pl.DataFrame({"record": raw_lines(args.events)}).with_row_index("line_no")  # noqa: F841
        con.execute("INSERT INTO raw.web SELECT '', 'bench.jsonl', line_no, record, now()::TIMESTAMP FROM lines")
        suite = load_suite("events")
        source = SourceConfig(name="web", kind="events", partitions="hourly")
        started = time.perf_counter()
        frame = parse_events(con, source, suite["meta"]["typed_properties"])
        parsed = time.perf_counter()
        from datetime import datetime

        parameters = {"max_event_time": datetime(2030, 1, 1)}
        rules = suite_rules(suite, parameters, frame.columns, "events.json")
        judged = apply_rules(frame, rules)
        accepted = judged.filter(pl.col("reasons").list.len() == 0).height
        done = time.perf_counter()
        peer = great_expectations_peer(frame.filter(pl.col("parsed")).head(args.ge_rows), suite, rules, parameters)
    total = done - started
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(f"events: {args.events:,}  accepted: {accepted:,}  quarantined: {args.events - accepted:,}")
    print(f"parse (DuckDB JSON): {parsed - started:.2f}s  rules (polars): {done - parsed:.2f}s  total: {total:.2f}s")
    print(f"accepted events/second: {accepted / total:,.0f}")
    ours, theirs = peer["ours_s"], peer["ge_s"]
    print(f"rules on {peer['rows']:,} parsed rows: polars {ours:.2f}s ({peer['rows'] / ours:,.0f} rows/s), "
          f"Great Expectations {theirs:.2f}s ({peer['rows'] / theirs:,.0f} rows/s), ratio {theirs / ours:.1f}x")
    for name, (mine, ge) in peer["failing"].items():
        print(f"  {name}: failing rows polars {mine:,} / GE {ge:,}{'' if mine == ge else '  MISMATCH'}")


def great_expectations_peer(frame, suite: dict, rules, parameters: dict) -> dict:
    """Time GE's own validation of the suite against our polars rules on the same rows."""
    columns = sorted({e["kwargs"]["column"] for e in suite["expectations"]} | {"parsed", "parse_errors", "unreadable_columns"})
    rows = frame.select(columns)
    started = time.perf_counter()
    apply_rules(rows, rules)  # per-row reasons, as the asset computes them
    ours = time.perf_counter() - started
    mine = dict(zip((expectation_label(e["type"], e["kwargs"]) for e in suite["expectations"]),
                    rows.select([rule.failing.sum().alias(str(i)) for i, rule in enumerate(rules)]).row(0)))
    started = time.perf_counter()
    result = great_expectations_result(rows, suite, parameters)
    theirs = time.perf_counter() - started  # includes the pandas conversion, as the asset pays it too
    by_rule = {e["expectation"]: (mine[e["expectation"]], e["unexpected_count"] or 0) for e in result["expectations"]}
    return {"rows": len(rows), "ours_s": ours, "ge_s": theirs, "failing": by_rule}


if __name__ == "__main__":
    main()
