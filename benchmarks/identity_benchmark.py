"""Identity resolution: ours vs scipy's connected components (the lower bound) vs iterative SQL in DuckDB.

Synthetic graphs of N identifiers in persons of 8: "star" (a user id linked to an email, a phone, a CRM id,
a device and three anonymous ids) and "chain" (the same eight linked in a line, the worst case for label
propagation). Limits are never exceeded, so every implementation must find the same persons.

- ours: `resolve_persons` (rules, limits, shared/blocked identifiers, stable person ids) from the same
  polars frames the asset builds;
- scipy: integer-code the identifiers and run `scipy.sparse.csgraph.connected_components` (no rules: the
  lower bound for any correct implementation);
- SQL: min-label propagation in DuckDB, the approach of warehouse-native identity stitchers: every node
  starts with its own label and takes the smallest label among its neighbours until nothing changes (on
  integer ids, which favours it).

    .venv/bin/python benchmarks/identity_benchmark.py [--identifiers 1000000] [--shapes star,chain]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

from cdp_assets.identity.resolve import resolve_persons
from cdp_assets.identity.rules import load_identity_rules

REPO = Path(__file__).resolve().parents[1]
KINDS = ["user_id", "email", "phone", "crm_id", "device_id", "anonymous_id", "anonymous_id", "anonymous_id"]
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
    ends = nodes.select("identifier_type", "identifier_value")
    edges = pl.concat(
        [ends[left].rename({"identifier_type": "left_type", "identifier_value": "left_value"}),
         ends[right].rename({"identifier_type": "right_type", "identifier_value": "right_value"})],
        how="horizontal",
    ).with_columns(source=pl.lit("bench"), first_seen_at=pl.lit(START), last_seen_at=pl.lit(START))
    return nodes, edges


def ours(nodes: pl.DataFrame, edges: pl.DataFrame) -> int:
    rules = load_identity_rules(REPO / "config" / "identity.yaml")
    return resolve_persons(nodes, edges, rules, now=START).persons.height


def scipy_components(nodes: pl.DataFrame, edges: pl.DataFrame) -> int:
    index = nodes.select("identifier_type", "identifier_value").with_row_index("i")
    coded = (
        edges.join(index, left_on=["left_type", "left_value"], right_on=["identifier_type", "identifier_value"])
        .rename({"i": "a"})
        .join(index, left_on=["right_type", "right_value"], right_on=["identifier_type", "identifier_value"])
        .rename({"i": "b"})
    )
    a, b = coded["a"].to_numpy(), coded["b"].to_numpy()
    graph = coo_array((np.ones(len(a), np.int8), (a, b)), shape=(index.height, index.height))
    return connected_components(graph, directed=False)[0]


def sql_label_propagation(nodes: pl.DataFrame, edges: pl.DataFrame, max_iterations: int = 100) -> tuple[int, int]:
    con = duckdb.connect()
    index = nodes.select("identifier_type", "identifier_value").with_row_index("id")  # noqa: F841
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


def timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identifiers", type=int, default=1_000_000)
    parser.add_argument("--shapes", default="star,chain")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, duckdb {duckdb.__version__}, polars {pl.__version__}")
    print("| shape | identifiers | edges | ours (s) | scipy (s) | SQL (s) | SQL iterations | ours / scipy | SQL / ours |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    tiny = build("chain", 800)
    for implementation in (ours, scipy_components, sql_label_propagation):  # imports and first-use set-up
        implementation(*tiny)
    for shape in args.shapes.split(","):
        nodes, edges = build(shape, args.identifiers)
        persons, t_ours = timed(ours, nodes, edges)
        components, t_scipy = timed(scipy_components, nodes, edges)
        (labels, iterations), t_sql = timed(sql_label_propagation, nodes, edges)
        expected = args.identifiers // len(KINDS)
        assert persons == components == labels == expected, (shape, persons, components, labels, expected)
        print(f"| {shape} | {nodes.height:,} | {edges.height:,} | {t_ours:.2f} | {t_scipy:.2f} | {t_sql:.2f} | "
              f"{iterations} | {t_ours / t_scipy:.2f}x | {t_sql / t_ours:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
