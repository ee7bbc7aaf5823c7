"""Segment evaluation: 20 segments over 1M profiles and 10M events, each refreshed as the asset does it.

Builds a synthetic warehouse in a temporary DuckDB file (`cdp.profiles`, `core.person_events`), writes 20
definitions covering the language (traits of every type, negative operators, list operators, event
windows, counts, sums, property filters, "did A then not B", reuse, all/any/not), then times
`refresh_segment` (compile, evaluate, apply entries/exits) for each, in dependency order: first when
everyone enters, then an hour later after 1% more events landed (what an hourly refresh pays). The peer, in
the same run, is hand-written SQL for two representative segments (a trait test and an event count in a
window), evaluated beside the compiled SQL of the same segments: the ratio is what the generic compiler costs.

    .venv/bin/python benchmarks/segments_benchmark.py [--profiles 1000000] [--events 10000000]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

from cdp_assets.segments.assets import refresh_segment
from cdp_assets.segments.compiler import catalog_from_warehouse, compile_segment, load_segments

NOW = datetime(2026, 11, 1, 12, 0)

SEGMENTS = {
    "vip": "trait: total_revenue\nop: gte\nvalue: 500",
    "no_orders": "trait: order_count\nop: eq\nvalue: 0",
    "not_male": "trait: gender\nop: neq\nvalue: m",
    "paris_or_lyon": "trait: city\nop: in\nvalue: [Paris, Lyon]",
    "gmail": "trait: email\nop: ends_with\nvalue: '@gmail.com'",
    "lapsed": "all:\n  - {trait: order_count, op: gt, value: 0}\n  - {trait: last_order_at, op: not_within_last, value: 90d}",
    "bought_sku_7": "trait: products_purchased\nop: contains_any\nvalue: [sku_7, sku_8]",
    "never_sku_1": "trait: products_purchased\nop: contains_none\nvalue: [sku_1]",
    "consented": "trait: marketing_consent\nop: is_true",
    "viewed_24h": "event: product_viewed\nwithin: 24h",
    "viewers_5x_7d": "event: product_viewed\nwithin: 7d\ncount: {gte: 5}",
    "big_spenders_30d": "event: order_completed\nwithin: 30d\nsum: {property: revenue, gte: 300}",
    "eur_orders": "event: order_completed\nwithin: 30d\nwhere:\n  - {property: currency, op: eq, value: EUR}",
    "pricey_adds": "event: product_added\nwithin: 7d\nwhere:\n  - {property: price, op: gt, value: 80}",
    "cart_abandoners": (
        "event: product_added\nwithin: 1d\nnot_followed_by:\n  event: order_completed\n  within: 2h"
    ),
    "no_login_30d": "not:\n  event: logged_in\n  within: 30d",
    "vip_not_lapsed": "all:\n  - {segment: vip}\n  - not: {segment: lapsed}",
    "vip_or_big_spender": "any:\n  - {segment: vip}\n  - {segment: big_spenders_30d}",
    "engaged_buyers": "all:\n  - {trait: order_count, op: between, value: [2, 10]}\n  - {event: product_viewed, within: 7d}",
    "signed_up_recent": "event: signed_up\nwithin: 7d",
}

PEERS = {  # hand-written SQL for the same membership, as a peer
    "vip": "SELECT person_id FROM cdp.profiles WHERE total_revenue >= 500",
    "viewers_5x_7d": (
        "SELECT person_id FROM core.person_events WHERE event_name = 'product_viewed' "
        "AND occurred_at BETWEEN TIMESTAMP '2026-10-25 12:00' AND TIMESTAMP '2026-11-01 12:00' "
        "GROUP BY person_id HAVING count(*) >= 5"
    ),
}


def build_warehouse(con: duckdb.DuckDBPyConnection, profiles: int, events: int) -> None:
    con.execute("CREATE SCHEMA cdp; CREATE SCHEMA core")
    con.execute(f"""
        CREATE TABLE cdp.profiles AS
        SELECT 'p' || i AS person_id,
               'user' || i || (CASE WHEN i % 3 = 0 THEN '@gmail.com' ELSE '@example.com' END) AS email,
               CASE i % 4 WHEN 0 THEN 'm' WHEN 1 THEN 'f' WHEN 2 THEN 'x' END AS gender,
               (['Paris', 'Lyon', 'Rome', 'Oslo', NULL])[1 + i % 5] AS city,
               (hash(i) % 12)::BIGINT AS order_count,
               ((hash(i * 7) % 100000) / 100.0)::DOUBLE AS total_revenue,
               TIMESTAMP '2026-11-01' - to_days((hash(i * 3) % 365)::INTEGER) AS last_order_at,
               ['sku_' || (i % 50), 'sku_' || (i % 13)] AS products_purchased,
               i % 2 = 0 AS marketing_consent
        FROM range({profiles}) AS t(i)""")
    names = "['product_viewed', 'product_viewed', 'product_viewed', 'product_added', 'order_completed', 'logged_in', 'signed_up']"
    con.execute(f"""
        CREATE TABLE core.person_events AS
        SELECT 'p' || (hash(i) % {profiles}) AS person_id,
               ({names})[1 + (hash(i * 5) % 7)::INTEGER] AS event_name,
               TIMESTAMP '2026-11-01 12:00' - to_seconds((hash(i * 11) % (60 * 86400))::BIGINT) AS occurred_at,
               json_object('price', (hash(i * 13) % 100)::DOUBLE, 'revenue', (hash(i * 17) % 400)::DOUBLE,
                           'currency', CASE WHEN i % 3 = 0 THEN 'USD' ELSE 'EUR' END) AS properties
        FROM range({events}) AS t(i)""")
    con.execute("CREATE VIEW cdp.events AS SELECT event_name, properties, occurred_at FROM core.person_events")


def land_new_events(con: duckdb.DuckDBPyConnection, profiles: int, events: int, now: datetime) -> None:
    """`events` more events (views, adds, orders, log-ins) in the hour before `now`."""
    names = "['product_viewed', 'product_added', 'order_completed', 'logged_in']"
    con.execute(f"""
        INSERT INTO core.person_events
        SELECT 'p' || (hash(i * 19) % {profiles}) AS person_id,
               ({names})[1 + (hash(i * 23) % 4)::INTEGER] AS event_name,
               ?::TIMESTAMP - to_seconds((hash(i * 29) % 3600)::BIGINT) AS occurred_at,
               json_object('price', (hash(i * 31) % 100)::DOUBLE, 'revenue', (hash(i * 37) % 400)::DOUBLE,
                           'currency', 'EUR') AS properties
        FROM range({events}) AS t(i)""", [now])


def refresh_all(con, definitions, ordered: list[str], now: datetime, label: str) -> None:
    print(label)
    started = time.perf_counter()
    for name in ordered:
        began = time.perf_counter()
        result = refresh_segment(con, definitions[name], now)
        print(f"  {name:<20} {result['size']:>9,} members  +{result['entered']:<9,} -{result['exited']:<9,} "
              f"{time.perf_counter() - began:6.2f}s", flush=True)
    total = time.perf_counter() - started
    print(f"{len(ordered)} segments: {total:.1f}s in all, {total / len(ordered):.2f}s per segment on average")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, duckdb {duckdb.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "segments"
        folder.mkdir()
        for name, where in SEGMENTS.items():
            body = "\n".join("  " + line for line in where.splitlines())
            (folder / f"{name}.yaml").write_text(f"name: {name}\nrefresh: hourly\nwhere:\n{body}\n")
        definitions = load_segments(folder)
        con = duckdb.connect(str(Path(tmp) / "bench.duckdb"))
        started = time.perf_counter()
        build_warehouse(con, args.profiles, args.events)
        print(f"built {args.profiles:,} profiles and {args.events:,} events in {time.perf_counter() - started:.1f}s")
        ordered = sorted(SEGMENTS, key=lambda n: bool(definitions[n].depends_on))  # reused ones first
        refresh_all(con, definitions, ordered, NOW, "first evaluation (everyone enters):")
        later = NOW + timedelta(hours=1)
        land_new_events(con, args.profiles, args.events // 100, later)
        refresh_all(con, definitions, ordered, later, f"an hour later, after {args.events // 100:,} new events:")
        catalog = catalog_from_warehouse(con)
        for name, sql in PEERS.items():
            compiled = compile_segment(definitions[name], catalog, NOW)
            runs = {}
            for label, query, params in (("ours", compiled.sql, compiled.params), ("peer", sql, [])):
                began = time.perf_counter()
                size = con.execute(f"SELECT count(*) FROM ({query})", params).fetchone()[0]
                runs[label] = (time.perf_counter() - began, size)
            assert runs["ours"][1] == runs["peer"][1], f"{name}: {runs}"
            print(f"evaluate {name}: compiled {runs['ours'][0]:.3f}s, hand-written {runs['peer'][0]:.3f}s, "
                  f"ratio {runs['ours'][0] / runs['peer'][0]:.2f}x, same {size:,} members")
        con.close()


if __name__ == "__main__":
    main()
