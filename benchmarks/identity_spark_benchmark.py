"""Identity resolution on Spark vs in process: connected components and the whole resolution, at N identifiers.

The graph is identity_benchmark.py's "star" shape (persons of 8 identifiers: a user id linked to an email, a
phone, a CRM id, a device and three anonymous ids; limits never exceeded, so every implementation finds the
same persons), N = `--identifiers`.

- in process: `resolve_persons` (rules, limits, shared/blocked identifiers, anchors, stable ids) on the
  polars frames, as the DuckDB engine runs it;
- scipy: integer-coded edges into `scipy.sparse.csgraph.connected_components`, the lower bound;
- Spark components: `cdp_assets.identity.spark.connected_components` (large-star/small-star) on the
  integer-coded links read from Parquet, to a checkpoint (the rounds it took reported);
- Spark resolution: `resolve_persons_spark` from the Parquet tables of identifiers and edges to the id map
  written as Parquet (every rule, ids included), checked to equal the in-process id map.

Spark runs on a standalone cluster started here from the pyspark wheel (one worker, `--cores` cores,
`--worker-memory`), or on `--master` if given. Times are wall clock, best of `--repeat` (Spark: after one
warm-up run, at the same size or at `--warmup-identifiers`, so JIT and Python worker start-up are not
counted). Peak memory: this process's max RSS (ru_maxrss) for the in-process parts; for Spark the summed
resident memory of the driver JVM, the master, the worker and its executor (its Python workers included),
sampled every 0.2 s while Spark runs (this Python process itself left out: it holds the in-process frames).

    .venv/bin/python benchmarks/identity_spark_benchmark.py [--identifiers 1000000] [--repeat 2]
        [--cores 2] [--worker-memory 6g] [--warmup-identifiers 100000] [--master spark://host:port]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks"), str(REPO / "tests")]

from identity_benchmark import RULES, build, scipy_components  # noqa: E402
from pipeline_benchmark import TreeMemory  # noqa: E402

from cdp_assets.identity.resolve import resolve_persons  # noqa: E402


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, repeat: int):
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def write_inputs(folder: Path, identifiers: pl.DataFrame, edges: pl.DataFrame) -> Path:
    """The graph as Spark reads it: identifiers and edges, and the links coded as integers for the components."""
    folder.mkdir(parents=True)
    identifiers.write_parquet(folder / "identifiers.parquet")
    edges.write_parquet(folder / "edges.parquet")
    codes = identifiers.select("identifier_type", "identifier_value").with_row_index("node")
    links = (
        edges.join(codes.rename({"identifier_type": "left_type", "identifier_value": "left_value", "node": "a"}),
                   on=["left_type", "left_value"])
        .join(codes.rename({"identifier_type": "right_type", "identifier_value": "right_value", "node": "b"}),
              on=["right_type", "right_value"])
        .select(pl.col("a").cast(pl.Int64), pl.col("b").cast(pl.Int64))
    )
    links.write_parquet(folder / "links.parquet")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--identifiers", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--worker-memory", default="6g")
    parser.add_argument("--master", default="")
    parser.add_argument("--warmup-identifiers", type=int, default=0,
                        help="warm Spark up on a graph of this size (default: the measured size itself)")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")

    nodes, edges = build("star", args.identifiers)
    identifiers = nodes.select("identifier_type", "identifier_value", "first_seen_at")
    print(f"{identifiers.height:,} identifiers, {edges.height:,} edges")

    t_ours, resolution = timed(lambda: resolve_persons(identifiers, edges, RULES), args.repeat)
    print(f"in process: {t_ours:.2f} s, {resolution.persons.height:,} persons, peak RSS {peak_mb():,.0f} MB")
    t_scipy, count = timed(lambda: scipy_components(identifiers, edges), args.repeat)
    print(f"scipy components: {t_scipy:.2f} s, {count:,} components")

    work = Path(tempfile.mkdtemp(prefix="cdp-spark-bench-"))
    inputs = write_inputs(work / "measured", identifiers, edges)
    warmup = inputs
    if args.warmup_identifiers and args.warmup_identifiers != args.identifiers:
        small_nodes, small_edges = build("star", args.warmup_identifiers)
        warmup = write_inputs(work / "warmup", small_nodes.select("identifier_type", "identifier_value", "first_seen_at"),
                              small_edges)

    processes = []
    master = args.master
    conf = {"spark.driver.memory": "2g", "spark.sql.shuffle.partitions": str(max(4, 2 * args.cores)),
            "spark.sql.autoBroadcastJoinThreshold": "-1", "spark.sql.adaptive.autoBroadcastJoinThreshold": "10MB"}
    if not master:  # the test suite's cluster (tests/spark_cluster.py), sized up
        from spark_cluster import start_cluster

        cluster, processes = start_cluster(work / "cluster", args.cores, args.worker_memory, args.worker_memory)
        master = cluster.master_url
        conf.update({key: value for key, value in cluster.conf.items() if key.startswith(("spark.executor", "spark.cores"))})
    try:
        from cdp_assets.identity.spark import connected_components, resolve_persons_spark
        from cdp_resources.spark import SparkEngine

        engine = SparkEngine(master, work / "warehouse", conf)
        spark = engine.session()
        rounds = []

        memory = TreeMemory(os.getpid(), *(process.pid for process in processes), without=(os.getpid(),))

        def spark_components(folder: Path = inputs):
            import cdp_assets.identity.spark as module

            counted = [0]
            stars = module._stars

            def counting(frame):
                counted[0] += 1
                return stars(frame)

            module._stars = counting
            try:
                labels = connected_components(spark.read.parquet(str(folder / "links.parquet"))).localCheckpoint()
                found = labels.select("component").distinct().count()
            finally:
                module._stars = stars
            rounds.append(counted[0])
            return found

        spark_components(warmup)  # warm-up
        t_cc, found = timed(spark_components, args.repeat)
        print(f"Spark components: {t_cc:.2f} s, {found:,} components, {rounds[-1]} rounds")

        def spark_resolution(folder: Path = inputs):
            result = resolve_persons_spark(
                spark.read.parquet(str(folder / "identifiers.parquet")), spark.read.parquet(str(folder / "edges.parquet")),
                RULES,
            )
            out = work / f"id_map-{time.monotonic_ns()}"
            result.id_map.write.parquet(str(out))
            return out

        spark_resolution(warmup)  # warm-up
        t_resolve, out = timed(spark_resolution, args.repeat)
        id_map = pl.read_parquet(out / "*.parquet")
        same = id_map.sort("identifier_type", "identifier_value").equals(
            resolution.id_map.sort("identifier_type", "identifier_value"))
        print(f"Spark resolution: {t_resolve:.2f} s, id map equal to in process: {same}")
        cores = args.cores
        print("per core, identifiers per second:")
        print(f"  in process (1 core for components, polars on {os.cpu_count()}): {identifiers.height / t_ours:,.0f}")
        print(f"  scipy (1 core): {identifiers.height / t_scipy:,.0f}")
        print(f"  Spark components ({cores} cores): {identifiers.height / t_cc / cores:,.0f}")
        print(f"  Spark resolution ({cores} cores): {identifiers.height / t_resolve / cores:,.0f}")
        print(f"peak RSS of this process: {peak_mb():,.0f} MB; of Spark's processes (driver JVM, master, worker, "
              f"executor and its Python workers): {memory.stop() / 2**20:,.0f} MB; worker cap {args.worker_memory}")
        engine.stop()
    finally:
        if processes:
            import spark_cluster

            spark_cluster.stop_cluster(processes)


if __name__ == "__main__":
    main()
