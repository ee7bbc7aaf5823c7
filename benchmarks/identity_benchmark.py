"""Identity resolution: ours vs scipy's connected components (the lower bound) vs iterative SQL in DuckDB,
then an hourly incremental update against a full rebuild in the warehouse.

Synthetic graphs of N identifiers in persons of 8: "star" (a user id linked to an email, a phone, a CRM id,
a device and three anonymous ids) and "chain" (the same eight linked in a line, the worst case for label
propagation). Limits are never exceeded, so every implementation must find the same persons.

- ours: `resolve_persons` (rules, limits, shared/blocked identifiers, anchors, stable SHA-256 person ids,
  the id map) from the polars frames the asset reads;
- scipy: integer-code the identifiers the way ours does (one hash join of both edge ends at once against
  the identifiers) and run `scipy.sparse.csgraph.connected_components`: no rules, no ids, the lower bound
  for any correct implementation;
- SQL: min-label propagation in DuckDB, the approach of warehouse-native identity stitchers: every node
  starts with its own label and takes the smallest label among its neighbours until nothing changes (on
  integer ids coded in DuckDB, which favours it).

Each timing starts from the same polars frames of string identifiers and is the best of `--repeat` runs;
ours and scipy take turns (the machine may be shared), then SQL runs its repeats: a DuckDB query leaves
this process's memory in a state that slows whatever numpy/polars code runs next, ours and scipy alike,
by 10-20% for seconds after (measured: 0.22 -> 0.25 s and 0.13 -> 0.15 s at 1M, with or without a pause).

Hourly: the same graph in an in-memory DuckDB warehouse (cdp.identity_edges, core.identifiers), resolved
once by `update_persons` (a full run, which also writes the state), then `--new-edges` edges arrive (half
give an existing user a new anonymous id, half link one person's device to another person's anonymous id:
a family laptop, which the user-id limit must keep apart) and the incremental update runs; then a full
rebuild of the same data, which must change nothing.

    .venv/bin/python benchmarks/identity_benchmark.py [--identifiers 1000000] [--shapes star,chain]
        [--repeat 3] [--new-edges 1000] [--no-hourly]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

from cdp_assets.identity.resolve import resolve_persons
from cdp_assets.identity.rules import load_identity_rules
from cdp_assets.identity.store import update_persons

REPO = Path(__file__).resolve().parents[1]
RULES = load_identity_rules(REPO / "config" / "identity.yaml")
KINDS = ["user_id", "email", "phone", "crm_id", "device_id", "anonymous_id", "anonymous_id", "anonymous_id"]
KEY = ["identifier_type", "identifier_value"]
START = datetime(2026, 1, 1)


def build(shape: str, identifiers: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    persons = identifiers // len(KINDS)
    n = pl.int_range(persons * len(KINDS), eager=True)
    nodes = pl.DataFrame({"n": n}).select(
        identifier_type=pl.Series(KINDS * persons),
        identifier_value=pl.format("v{}", "n"),
        first_seen_at=pl.lit(START) + pl.duration(seconds="n"),
        last_seen_at=pl.lit(START) + pl.duration(seconds="n"),
    )
    position = n % len(KINDS)
    if shape == "star":  # every identifier of a person linked to its user id (position 0)
        left, right = (n - position).filter(position > 0), n.filter(position > 0)
    else:  # each identifier linked to the next one of the same person
        left, right = n.filter(position < len(KINDS) - 1), n.filter(position < len(KINDS) - 1) + 1
    ends = nodes.select(KEY)
    edges = pl.concat(
        [ends[left].rename({"identifier_type": "left_type", "identifier_value": "left_value"}),
         ends[right].rename({"identifier_type": "right_type", "identifier_value": "right_value"})],
        how="horizontal",
    ).with_columns(source=pl.lit("bench"), first_seen_at=pl.lit(START), last_seen_at=pl.lit(START))
    return nodes, edges


def ours(nodes: pl.DataFrame, edges: pl.DataFrame) -> int:
    return resolve_persons(nodes, edges, RULES, now=START).persons.height


def scipy_components(nodes: pl.DataFrame, edges: pl.DataFrame) -> int:
    index = nodes.lazy().select(KEY).with_row_index("i")
    ends = pl.concat([  # left ends, then right ends: one join, the identifiers hashed once
        edges.lazy().select(identifier_type="left_type", identifier_value="left_value"),
        edges.lazy().select(identifier_type="right_type", identifier_value="right_value"),
    ]).with_row_index("end")
    coded = ends.join(index, on=KEY, how="left").select("end", i=pl.col("i").cast(pl.Int64)).collect()
    node = np.empty(coded.height, np.int64)
    node[coded["end"].to_numpy()] = coded["i"].to_numpy()
    a, b = node[: edges.height], node[edges.height :]
    index = np.int32 if nodes.height < 2**31 else np.int64  # as ours: csgraph's index type, float64 data
    graph = coo_array((np.ones(len(a)), (a.astype(index), b.astype(index))), shape=(nodes.height, nodes.height))
    return connected_components(graph, directed=False)[0]


def sql_label_propagation(nodes: pl.DataFrame, edges: pl.DataFrame, max_iterations: int = 100) -> tuple[int, int]:
    con = duckdb.connect()
    index = nodes.select(KEY).with_row_index("id")  # noqa: F841 (read by DuckDB)
    con.execute("CREATE TABLE nodes AS SELECT id::BIGINT AS id, identifier_type, identifier_value FROM index")
    con.execute(
        """CREATE TABLE links AS
           SELECT l.id AS a, r.id AS b FROM edges e
           JOIN nodes l ON l.identifier_type = e.left_type AND l.identifier_value = e.left_value
           JOIN nodes r ON r.identifier_type = e.right_type AND r.identifier_value = e.right_value"""
    )
    con.execute("CREATE TABLE both_ways AS SELECT a, b FROM links UNION ALL SELECT b, a FROM links")
    con.execute("CREATE TABLE labels AS SELECT id, id AS label FROM nodes")
    for iteration in range(1, max_iterations + 1):
        con.execute(
            """CREATE OR REPLACE TABLE next AS
               SELECT l.id, least(l.label, coalesce(min(n.label), l.label)) AS label
               FROM labels l LEFT JOIN both_ways w ON w.a = l.id LEFT JOIN labels n ON n.id = w.b
               GROUP BY l.id, l.label"""
        )
        changed = con.execute("SELECT count(*) FROM next JOIN labels USING (id) WHERE next.label <> labels.label").fetchone()[0]
        con.execute("DROP TABLE labels; ALTER TABLE next RENAME TO labels")
        if not changed:
            break
    return con.execute("SELECT count(DISTINCT label) FROM labels").fetchone()[0], iteration


def best_of(repeat: int, fn, *args):
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - started)
    return result, min(times)


def interleaved(repeat: int, implementations, *args) -> list[tuple[object, float]]:
    """(result, best seconds) per implementation, taking turns so that all see the same machine load."""
    best = [(None, float("inf"))] * len(implementations)
    for _ in range(repeat):
        for index, fn in enumerate(implementations):
            result, seconds = best_of(1, fn, *args)
            best[index] = (result, min(best[index][1], seconds))
    return best


def hourly(nodes: pl.DataFrame, edges: pl.DataFrame, new_edges: int) -> dict:
    """Seconds of a first full update, an hourly incremental one after `new_edges` edges, and a full
    rebuild of the same data; the incremental scope; and whether the rebuild agreed."""
    con = duckdb.connect()
    con.execute("CREATE SCHEMA cdp; CREATE SCHEMA core")
    con.execute("CREATE TABLE cdp.identity_edges AS SELECT * FROM edges")
    con.execute("CREATE TABLE core.identifiers AS SELECT * FROM nodes")
    now = START + timedelta(days=30)
    _, first = best_of(1, update_persons, con, RULES, now)

    rnd = random.Random(7)
    persons = nodes.height // len(KINDS)
    at = START + timedelta(days=31)
    rows, seen = [], []
    for number in range(new_edges):
        p, q = rnd.randrange(persons), rnd.randrange(persons)
        if number % 2 == 0:  # a new anonymous id of an existing user
            rows.append(("user_id", f"v{p * len(KINDS)}", "anonymous_id", f"new{number}"))
            seen.append(("anonymous_id", f"new{number}"))
        else:  # one person's device seen with another person's anonymous id
            rows.append(("device_id", f"v{p * len(KINDS) + 4}", "anonymous_id", f"v{q * len(KINDS) + 5}"))
    added = pl.DataFrame(rows, schema=["left_type", "left_value", "right_type", "right_value"], orient="row").with_columns(
        source=pl.lit("bench"), first_seen_at=pl.lit(at), last_seen_at=pl.lit(at))
    new_ids = pl.DataFrame(seen, schema=KEY, orient="row").with_columns(first_seen_at=pl.lit(at), last_seen_at=pl.lit(at))  # noqa: F841
    con.execute("INSERT INTO cdp.identity_edges SELECT * FROM added")
    con.execute("INSERT INTO core.identifiers SELECT * FROM new_ids")

    update, incremental = best_of(1, update_persons, con, RULES, now + timedelta(hours=1))
    before = con.sql("SELECT * FROM cdp.id_map ORDER BY ALL").pl()
    rebuild, full = best_of(1, update_persons, con, RULES, now + timedelta(hours=2), True)
    after = con.sql("SELECT * FROM cdp.id_map ORDER BY ALL").pl()
    return {"first": first, "incremental": incremental, "full": full, "scope": update.identifiers,
            "mode": update.mode, "agrees": before.equals(after) and rebuild.merges.is_empty()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identifiers", type=int, default=1_000_000)
    parser.add_argument("--shapes", default="star,chain")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--new-edges", type=int, default=1000)
    parser.add_argument("--no-hourly", action="store_true")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, Python {platform.python_version()}, "
          f"duckdb {duckdb.__version__}, polars {pl.__version__}; best of {args.repeat}")
    print("| shape | identifiers | edges | ours (s) | scipy (s) | SQL (s) | SQL iterations | ours / scipy | SQL / ours |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    tiny = build("chain", 800)
    for implementation in (ours, scipy_components, sql_label_propagation):  # imports and first-use set-up
        implementation(*tiny)
    hourly_rows = []
    for shape in args.shapes.split(","):
        nodes, edges = build(shape, args.identifiers)
        (persons, t_ours), (components, t_scipy) = interleaved(args.repeat, (ours, scipy_components), nodes, edges)
        (labels, iterations), t_sql = best_of(args.repeat, sql_label_propagation, nodes, edges)  # last: see the docstring
        expected = args.identifiers // len(KINDS)
        assert persons == components == labels == expected, (shape, persons, components, labels, expected)
        print(f"| {shape} | {nodes.height:,} | {edges.height:,} | {t_ours:.2f} | {t_scipy:.2f} | {t_sql:.2f} | "
              f"{iterations} | {t_ours / t_scipy:.2f}x | {t_sql / t_ours:.1f}x |", flush=True)
        if not args.no_hourly:
            hourly_rows.append((shape, nodes.height, hourly(nodes, edges, args.new_edges)))
    if hourly_rows:
        print()
        print(f"| shape | identifiers | first full update (s) | +{args.new_edges:,} edges: incremental (s) | "
              "identifiers re-resolved | full rebuild (s) | full / incremental | rebuild agrees |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for shape, size, h in hourly_rows:
            assert h["mode"] == "incremental" and h["agrees"], h
            print(f"| {shape} | {size:,} | {h['first']:.2f} | {h['incremental']:.2f} | {h['scope']:,} | "
                  f"{h['full']:.2f} | {h['full'] / h['incremental']:.1f}x | yes |", flush=True)


if __name__ == "__main__":
    main()
