"""What the test cluster's JVM options (tests/spark_cluster.py SHORT_RUNS) save: one `cdp run` of a small generated
shop (1,500 events, seed 7, as tests/test_spark_run.py) on a fresh test cluster (1 core, 1 GB worker) per variant,
with the JVM's defaults and with SHORT_RUNS, each variant in a process of its own. Prints the run's wall time and
the CPU seconds its driver and executor JVMs used (from /proc), and the peak resident memory of each.

  .venv/bin/python benchmarks/spark_test_cluster_jvm.py [ROUNDS]   # ROUNDS runs of each variant, alternated (default 2)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
VARIANTS = ("jvm-defaults", "short-runs")


def jvm_usage(pids: set[int]) -> dict[str, tuple[float, int]]:
    """(CPU seconds, peak RSS in MB) of this process's Spark driver and executor JVMs among the processes."""
    ticks = os.sysconf("SC_CLK_TCK")
    usage = {}
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            peak = next(int(line.split()[1]) // 1024 for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                        if line.startswith("VmHWM"))
        except (OSError, StopIteration):
            continue
        role = "driver" if "SparkSubmit" in command else "executor" if "CoarseGrainedExecutorBackend" in command else None
        if role:
            usage[role] = ((int(stat[11]) + int(stat[12])) / ticks, peak)  # utime + stime
    return usage


def descendants(pid: int) -> set[int]:
    children = {int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()}
    return children.union(*(descendants(child) for child in children)) if children else children


def one_run(variant: str) -> dict:
    from spark_cluster import SHORT_RUNS, start_cluster, stop_cluster, submit_args

    work = Path(tempfile.mkdtemp(prefix="jvm-bench-"))
    cluster, processes = start_cluster(work / "cluster")
    conf = {**cluster.conf, **(SHORT_RUNS if variant == "short-runs" else {})}
    os.environ["PYSPARK_SUBMIT_ARGS"] = submit_args(conf)
    from cdp_assets.runner import run_everything
    from cdp_assets.sample_data import generate_sample_data

    end = datetime(2026, 11, 20, 12)
    generate_sample_data(work / "data", events=1500, seed=7, end=end, days=7, log=lambda *_: None)
    os.environ.update({"CDP_DATA_DIR": str(work / "data"), "CDP_NOW": (end + timedelta(minutes=30)).isoformat(sep=" "),
                       "CDP_ENGINE": "spark", "CDP_SPARK_MASTER": cluster.master_url,
                       "CDP_CONFIG_DIR": str(REPO / "config")})
    try:
        started = time.monotonic()
        summary = run_everything(progress=lambda *_: None)
        wall = time.monotonic() - started
        assert summary.success, summary.failures
        own = os.getpid()
        usage = jvm_usage(descendants(own) | {p for worker in processes for p in descendants(worker.pid)})
        return {"variant": variant, "wall_s": round(wall, 1), **{f"{role}_cpu_s": round(cpu, 1) for role, (cpu, _) in usage.items()},
                **{f"{role}_peak_mb": peak for role, (_, peak) in usage.items()}}
    finally:
        from cdp_resources.spark import SparkEngine

        SparkEngine(cluster.master_url, work).stop()
        stop_cluster(processes)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in VARIANTS:  # one variant, in a fresh process (a fresh driver JVM)
        print(json.dumps(one_run(sys.argv[1])))
        return
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    print(f"machine: {os.cpu_count()} cores; one `cdp run` of 1,500 events on a fresh 1-core test cluster per line")
    results = []
    for _ in range(rounds):
        for variant in VARIANTS:
            shown = subprocess.run([sys.executable, __file__, variant], capture_output=True, text=True,
                                   env={**os.environ, "PYTHONPATH": str(REPO)})
            line = shown.stdout.strip().splitlines()[-1] if shown.returncode == 0 else json.dumps(
                {"variant": variant, "error": shown.stderr[-500:]})
            print(line, flush=True)
            results.append(json.loads(line))
    for variant in VARIANTS:
        runs = [r for r in results if r.get("variant") == variant and "wall_s" in r]
        if runs:
            cpu = [round(r.get("driver_cpu_s", 0) + r.get("executor_cpu_s", 0), 1) for r in runs]
            print(f"{variant}: wall {sorted(r['wall_s'] for r in runs)} s, driver+executor CPU {sorted(cpu)} s")


if __name__ == "__main__":
    main()
