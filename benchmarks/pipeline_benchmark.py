"""The whole pipeline, measured (issue 20): full build, one new hour, and event-to-delivery latency.

    .venv/bin/python benchmarks/pipeline_benchmark.py                  # full build at 1M events, increment, latency
    .venv/bin/python benchmarks/pipeline_benchmark.py --with-10m       # and a full build at 10M events
    .venv/bin/python benchmarks/pipeline_benchmark.py --events 100000  # a smaller base size
    .venv/bin/python benchmarks/pipeline_benchmark.py --build-only --engines duckdb,spark   # each engine's build

1. **Full build** at each size, in a fresh data directory: the sample shop (`cdp_assets/sample_data.py`), then
   `cdp run` as a user runs it, in a child process: seconds per stage (from its progress lines) and the peak
   resident memory of the whole process tree (sampled every 0.2 s: Python, dbt, DuckDB together). With
   `--engines duckdb,spark`, the same build with `CDP_ENGINE=spark` too, on a standalone cluster started here
   (its master, worker and executor counted in the memory).
2. **One new hour** on the base size's warehouse: ~0.1% new events (copies of existing messages from known
   visitors, with new ids, in the hour in progress) landed as one file, then what production runs for it:
   `web_hourly_job` for that hour, `refresh_job`, `activation_job` (each in process, as `make dev` runs them),
   and its ratio to the full build.
3. **Latency** with the project's own sensors and automation running as `make dev` runs them: `dagster dev`
   (webserver and daemon, a temporary DAGSTER_HOME with the project's `.dagster/dagster.yaml`), the collector
   (`cdp collect`) and a local HTTP destination (the shipped `marketing_webhook`, pointed at a receiver in this
   process). Per sample, a new visitor signs up and adds to cart through the collector; measured from the
   POST to (a) the event in `cdp.events`, (b) the person's entry in `cdp.segment_changes`, (c) the item
   received by the destination. Samples start with the pipeline idle. The first check: after `dagster dev`
   starts on the built warehouse, its sensors' first ticks queue no run.

Last line: `latency_to_delivery_p50_s=<n> increment_ratio=<r> peak_rss_10m_gb=<g>` (`na` when not measured).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
BIN = Path(PYTHON).parent
STAGE_LINE = re.compile(r"^\[(\d+)/(\d+)\] (.+): (ok|FAILED) in ([\d.]+)s$")


# --- measuring a process tree -------------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(parent, []).append(int(entry))
    return tree


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


class TreeMemory:
    """Peak of the summed resident memory of processes and all their descendants, sampled every 0.2 s;
    `without` names processes counted out (themselves, not their descendants)."""

    def __init__(self, *pids: int, without: tuple[int, ...] = ()):
        self.pids, self.without, self.peak, self._stop = list(pids), set(without), 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            tree, pending, total = _children(), list(self.pids), 0
            while pending:
                pid = pending.pop()
                total += 0 if pid in self.without else _rss_bytes(pid)
                pending += tree.get(pid, [])
            self.peak = max(self.peak, total)
            self._stop.wait(0.2)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run_measured(command: list[str], env: dict, log_prefix: str, also: tuple[int, ...] = ()) -> tuple[float, int, list[str]]:
    """Run a child to completion, echoing its output; (seconds, peak RSS bytes of its tree and of the trees of
    the processes `also` names, e.g. a Spark cluster's, output lines)."""
    started = time.monotonic()
    child = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    memory = TreeMemory(child.pid, *also)
    lines = []
    for line in child.stdout:
        lines.append(line.rstrip("\n"))
        if "Calculating Metrics" not in line:  # Great Expectations' progress bars
            print(f"{log_prefix}{line.rstrip()}", flush=True)
    code = child.wait()
    peak = memory.stop()
    if code:
        raise SystemExit(f"{' '.join(command[:4])} … exited {code}")
    return time.monotonic() - started, peak, lines


def gb(n: int) -> float:
    return round(n / 2**30, 2)


# --- 1. full build -------------------------------------------------------------------------------------------


def environment(data_dir: Path, **extra) -> dict:
    env = {**os.environ, "CDP_DATA_DIR": str(data_dir), "CDP_CONFIG_DIR": str(REPO / "config"), **extra}
    env.pop("DAGSTER_HOME", None)  # `cdp run` on an ephemeral instance
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def full_build(data_dir: Path, events: int, engine: dict | None = None, cluster: tuple[int, ...] = ()) -> dict:
    """The sample shop, then `cdp run` on the engine `engine` sets (CDP_ENGINE...; DuckDB when empty); the
    peak memory counts the processes `cluster` names too (a Spark master, worker and its executors)."""
    env = environment(data_dir, **(engine or {}))
    generate = [PYTHON, "-c", "import sys; from cdp_assets.sample_data import generate_sample_data; "
                "generate_sample_data(sys.argv[1], events=int(sys.argv[2]), seed=7)", str(data_dir), str(events)]
    gen_s, gen_peak, _ = run_measured(generate, env, "  gen | ")
    run_s, run_peak, lines = run_measured([PYTHON, "-m", "cdp_assets.cli", "run"], env, "  run | ", cluster)
    stages = {}
    for line in lines:
        match = STAGE_LINE.match(line.strip())
        if match:
            if match.group(4) != "ok":
                raise SystemExit(f"stage {match.group(3)} failed")
            stages[match.group(3).split(" (")[0]] = float(match.group(5))
    return {"events": events, "engine": env.get("CDP_ENGINE", "duckdb"), "generate_s": round(gen_s, 1), "generate_peak_rss_gb": gb(gen_peak),
            "build_s": round(run_s, 1), "stages_s": stages, "stages_total_s": round(sum(stages.values()), 1),
            "build_peak_rss_gb": gb(run_peak)}


def spark_build(data_dir: Path, events: int, args) -> dict:
    """The full build with `CDP_ENGINE=spark`: on a standalone master and worker started here from the pyspark
    wheel (tests/spark_cluster.py, sized by --spark-*), or on --spark-master. Its memory counts the cluster."""
    sys.path.insert(0, str(REPO / "tests"))
    from spark_cluster import start_cluster, stop_cluster

    processes, master = [], args.spark_master
    if not master:
        cluster, processes = start_cluster(data_dir.parent / "spark-cluster", args.spark_cores, args.spark_worker_memory,
                                           args.spark_executor_memory)
        master = cluster.master_url
    submit = (f"--driver-memory {args.spark_driver_memory} --conf spark.executor.memory={args.spark_executor_memory} "
              f"--conf spark.cores.max={args.spark_cores} --conf spark.sql.autoBroadcastJoinThreshold=-1 "
              "--conf spark.sql.adaptive.autoBroadcastJoinThreshold=10MB pyspark-shell")  # as measured (RESULTS.md)
    try:
        return full_build(data_dir, events, {"CDP_ENGINE": "spark", "CDP_SPARK_MASTER": master, "PYSPARK_SUBMIT_ARGS": submit},
                          tuple(process.pid for process in processes))
    finally:
        stop_cluster(processes)


# --- 2. one new hour ----------------------------------------------------------------------------------------


def land_new_hour(data_dir: Path, count: int, seed: int = 1) -> str:
    """`count` messages of known visitors, new ids, received in the hour in progress; returns its partition key."""
    rng = random.Random(seed)
    files = sorted((data_dir / "landing" / "web").glob("dt=*/hour=*/*.jsonl"))
    pool = []
    for path in rng.sample(files, min(len(files), 48)):
        for line in path.read_text().splitlines():
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and message.get("type") in ("track", "page", "identify") and isinstance(message.get("timestamp"), str) and message["timestamp"][:2] == "20":
                pool.append(message)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    hour = now.replace(minute=0, second=0, microsecond=0)
    lines = []
    for n in range(count):
        message = dict(rng.choice(pool))
        at = hour + timedelta(seconds=rng.uniform(0, max(1.0, (now - hour).total_seconds() - 1)))
        stamp = at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
        message.update(messageId=f"bench-{uuid.UUID(int=rng.getrandbits(128))}", timestamp=stamp, sentAt=stamp, receivedAt=stamp)
        lines.append(json.dumps(message, separators=(",", ":")))
    folder = data_dir / "landing" / "web" / f"dt={hour:%Y-%m-%d}" / f"hour={hour:%H}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".bench-new-hour.tmp").write_text("".join(line + "\n" for line in lines))
    os.rename(folder / ".bench-new-hour.tmp", folder / f"bench-new-hour-{uuid.uuid4().hex[:8]}.jsonl")
    return hour.strftime("%Y-%m-%d-%H:00")


INCREMENT_SCRIPT = """
import json, sys, time
from dagster import DagsterInstance
from cdp_assets.definitions import defs
from cdp_assets.sample_orders_api import orders_api_for_run
partition = sys.argv[1]
quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
seconds = {}
instance = DagsterInstance.ephemeral()
for name, key in (("web_hourly_job", partition), ("refresh_job", None), ("activation_job", None)):
    started = time.monotonic()
    result = defs.resolve_job_def(name).execute_in_process(instance=instance, partition_key=key, run_config=quiet, raise_on_error=False)
    seconds[name] = round(time.monotonic() - started, 1)
    if not result.success:
        raise SystemExit(name + " failed")
print("INCREMENT " + json.dumps(seconds))
"""


DRAIN_SCRIPT = """
from dagster import DagsterInstance
from cdp_assets.definitions import defs
quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
result = defs.resolve_job_def("activation_job").execute_in_process(instance=DagsterInstance.ephemeral(), run_config=quiet)
print("backlog delivered" if result.success else "backlog delivery failed")
"""


def one_new_hour(data_dir: Path, events: int, full_build_s: float) -> dict:
    count = max(1, events // 1000)
    partition = land_new_hour(data_dir, count)
    env = environment(data_dir)
    seconds, peak, lines = run_measured([PYTHON, "-c", INCREMENT_SCRIPT, partition], env, "  new hour | ")
    jobs = json.loads(next(line for line in lines if line.startswith("INCREMENT "))[len("INCREMENT "):])
    work = sum(jobs.values())
    return {"new_events": count, "partition": partition, "jobs_s": jobs, "jobs_total_s": round(work, 1),
            "process_s": round(seconds, 1), "peak_rss_gb": gb(peak), "ratio_to_full_build": round(work / full_build_s, 4)}


# --- 3. latency under `dagster dev` ---------------------------------------------------------------------------


class Receiver:
    """A local HTTP destination recording when each delivered item arrives."""

    def __init__(self):
        self.arrivals: list[tuple[float, dict]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                now = time.time()
                try:
                    items = json.loads(body).get("batch", [])
                except ValueError:
                    items = []
                owner.arrivals += [(now, item) for item in items]
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def first_arrival(self, person_id: str) -> float | None:
        times = [at for at, item in list(self.arrivals) if item.get("person_id") == person_id]
        return min(times) if times else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout_s: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise SystemExit(f"timed out after {timeout_s:.0f}s waiting for {what}")


def http_ok(url: str) -> bool:
    import requests

    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def read_warehouse(data_dir: Path, sql: str, params: list):
    from cdp_resources import WarehouseResource

    try:
        with WarehouseResource(path=str(data_dir / "warehouse.duckdb")).connect(timeout_s=60) as con:
            return con.execute(sql, params).fetchall()
    except Exception:  # noqa: BLE001 - a table not there yet, or the warehouse busy: ask again
        return []


def latency(data_dir: Path, samples: int, timeout_s: float) -> dict:
    from dagster import DagsterInstance, RunsFilter

    from cdp_assets.refresh import ACTIVE

    home = Path(tempfile.mkdtemp(prefix="cdp-bench-dagster-"))
    shutil.copy(REPO / ".dagster" / "dagster.yaml", home / "dagster.yaml")
    receiver = Receiver()
    write_key = "wk_bench_" + uuid.uuid4().hex[:8]
    collector_port, ui_port = free_port(), free_port()
    env = environment(
        data_dir, DAGSTER_HOME=str(home), CDP_WRITE_KEYS=write_key, CDP_MARKETING_WEBHOOK_URL=receiver.url,
        CDP_MARKETING_WEBHOOK_SECRET="whsec_" + base64.b64encode(os.urandom(24)).decode(),
    )
    # The full build delivered nothing (no URL then): its segment entries would go out in the first sample's
    # activation run. Send that backlog first, so samples measure one event's way, not the demo's history.
    run_measured([PYTHON, "-c", DRAIN_SCRIPT], {k: v for k, v in env.items() if k != "DAGSTER_HOME"}, "  backlog | ")
    backlog = len(receiver.arrivals)
    env["DAGSTER_HOME"] = str(home)
    logs = open(home / "processes.log", "w")
    processes = [
        subprocess.Popen([PYTHON, "-m", "cdp_assets.cli", "collect", "--port", str(collector_port)], env=env, cwd=REPO,
                         stdout=logs, stderr=subprocess.STDOUT, start_new_session=True),
        subprocess.Popen([str(BIN / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(ui_port)], env=env, cwd=REPO,
                         stdout=logs, stderr=subprocess.STDOUT, start_new_session=True),
    ]
    os.environ["DAGSTER_HOME"] = str(home)
    results: dict = {"samples": [], "backlog_items_delivered": backlog}
    try:
        started = time.monotonic()
        wait_for(lambda: http_ok(f"http://127.0.0.1:{collector_port}/health"), 120, "the collector")
        wait_for(lambda: http_ok(f"http://127.0.0.1:{ui_port}/server_info"), 600, "dagster dev")
        instance = DagsterInstance.get()

        def landing_ticked():
            states = [s for s in instance.all_instigator_state() if s.instigator_name == "web_landing_sensor"]
            return states and instance.get_ticks(states[0].instigator_origin_id, states[0].selector_id, limit=1)

        wait_for(landing_ticked, 600, "the landing sensor's first tick", every=2)
        time.sleep(5)
        runs_at_start = [r.dagster_run.job_name for r in instance.get_run_records()]
        results["startup_s"] = round(time.monotonic() - started, 1)
        results["runs_queued_by_first_ticks"] = len(runs_at_start)
        print(f"  latency | dagster dev up in {results['startup_s']} s; runs queued by the first ticks: {runs_at_start or 0}", flush=True)

        def idle():
            return not instance.get_run_records(filters=RunsFilter(statuses=ACTIVE), limit=1)

        import requests

        for n in range(samples):
            wait_for(idle, timeout_s, "the pipeline to be idle", every=2)
            time.sleep(12)  # past a sensor interval: the sample starts from quiet
            wait_for(idle, timeout_s, "the pipeline to be idle", every=2)
            user = f"bench_{uuid.uuid4().hex[:10]}"
            ids = [f"bench-{uuid.uuid4()}" for _ in range(3)]
            batch = {"batch": [
                {"type": "identify", "userId": user, "messageId": ids[0], "traits": {"email": f"{user}@example.com"}},
                {"type": "track", "userId": user, "messageId": ids[1], "event": "signed_up", "properties": {}},
                {"type": "track", "userId": user, "messageId": ids[2], "event": "product_added",
                 "properties": {"product_id": "sku_0001", "price": 19.5}},
            ]}
            t0 = time.time()
            answer = requests.post(f"http://127.0.0.1:{collector_port}/v1/batch", json=batch, auth=(write_key, ""), timeout=30)
            answer.raise_for_status()
            sample: dict = {"user_id": user}
            person = None
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and "delivered_s" not in sample:
                now = time.time()
                if "events_s" not in sample and read_warehouse(data_dir, "SELECT 1 FROM cdp.events WHERE event_id = ?", [ids[2]]):
                    sample["events_s"] = round(now - t0, 1)
                if person is None:
                    found = read_warehouse(data_dir, "SELECT person_id FROM cdp.id_map WHERE identifier_type = 'user_id' AND identifier_value = ?", [user])
                    person = found[0][0] if found else None
                if person and "segment_s" not in sample and read_warehouse(
                        data_dir, "SELECT 1 FROM cdp.segment_changes WHERE person_id = ? AND change = 'entered'", [person]):
                    sample["segment_s"] = round(now - t0, 1)
                arrived = receiver.first_arrival(person) if person else None
                if arrived:
                    sample["delivered_s"] = round(arrived - t0, 1)
                time.sleep(1)
            sample["runs"] = [
                {"job": r.dagster_run.job_name, "status": r.dagster_run.status.value,
                 "queued_at_s": round(r.create_timestamp.timestamp() - t0, 1),
                 "seconds": round((r.end_time or time.time()) - (r.start_time or r.create_timestamp.timestamp()), 1)}
                for r in reversed(instance.get_run_records(filters=RunsFilter(created_after=datetime.fromtimestamp(t0, timezone.utc))))
            ]
            print(f"  latency | sample {n + 1}: {json.dumps(sample)}", flush=True)
            results["samples"].append(sample)
    finally:
        for process in processes:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        receiver.server.shutdown()
        logs.close()
        os.environ.pop("DAGSTER_HOME", None)
    for key in ("events_s", "segment_s", "delivered_s"):
        values = [s[key] for s in results["samples"] if key in s]
        results[f"{key[:-2]}_p50_s"] = round(statistics.median(values), 1) if values else None
    results["dagster_home"] = str(home)
    return results


# --- main ----------------------------------------------------------------------------------------------------


def machine() -> dict:
    with open("/proc/meminfo") as f:
        ram = int(f.readline().split()[1]) * 1024
    return {"cpus": os.cpu_count(), "ram_gb": gb(ram), "load_average": os.getloadavg(), "python": sys.version.split()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="base size: full build, new hour, latency")
    parser.add_argument("--with-10m", action="store_true", help="also a full build at 10M events")
    parser.add_argument("--latency-samples", type=int, default=3)
    parser.add_argument("--latency-timeout", type=float, default=900, help="seconds per sample")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--new-hour-only", type=float, metavar="FULL_BUILD_S",
                        help="only one new hour, on the warehouse an earlier run built in --workdir at --events, "
                             "its ratio taken to that build's stages total (seconds)")
    parser.add_argument("--build-only", action="store_true",
                        help="only the full build at --events (e.g. 10M on its own; no new hour, no latency)")
    parser.add_argument("--latency-only", action="store_true",
                        help="only the latency, on the warehouse an earlier run built in --workdir (kept with --workdir)")
    parser.add_argument("--engines", default="duckdb",
                        help="comma-separated, duckdb and/or spark: the full build at --events on each (the same shop); "
                             "the new hour and the latency run on DuckDB only")
    parser.add_argument("--spark-master", default="", help="default: a standalone master and worker started here")
    parser.add_argument("--spark-cores", type=int, default=2)
    parser.add_argument("--spark-worker-memory", default="8g")
    parser.add_argument("--spark-executor-memory", default="7g")
    parser.add_argument("--spark-driver-memory", default="4g")
    parser.add_argument("--workdir", type=Path, help="default: a temporary directory, removed afterwards")
    parser.add_argument("--output", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cdp-bench-"))
    report: dict = {"machine": machine(), "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    print(f"machine: {report['machine']}; workdir {workdir}", flush=True)
    try:
        base = workdir / f"events_{args.events}"
        report["full_build"] = []
        if args.new_hour_only:
            if not (base / "warehouse.duckdb").exists():
                raise SystemExit(f"--new-hour-only: no warehouse in {base}; build it first, with --workdir")
            print(f"== one new hour on {args.events:,} events (built earlier)", flush=True)
            report["new_hour"] = one_new_hour(base, args.events, args.new_hour_only)
        elif args.latency_only:
            if not (base / "warehouse.duckdb").exists():
                raise SystemExit(f"--latency-only: no warehouse in {base}; run without it first, with --workdir")
        else:
            engines = args.engines.split(",")
            if "duckdb" in engines:
                print(f"== full build, {args.events:,} events", flush=True)
                report["full_build"].append(full_build(base, args.events))
                build_s = report["full_build"][0]["stages_total_s"]
                if not args.build_only:
                    print(f"== one new hour on {args.events:,} events", flush=True)
                    report["new_hour"] = one_new_hour(base, args.events, build_s)
            if "spark" in engines:
                print(f"== full build on Spark, {args.events:,} events", flush=True)
                report["full_build"].append(spark_build(workdir / f"events_{args.events}_spark", args.events, args))
        if not (args.skip_latency or args.build_only or args.new_hour_only or "duckdb" not in args.engines.split(",")):
            print("== latency under dagster dev", flush=True)
            report["latency"] = latency(base, args.latency_samples, args.latency_timeout)
        if args.with_10m and not (args.latency_only or args.new_hour_only):
            big = workdir / "events_10000000"
            print("== full build, 10,000,000 events", flush=True)
            report["full_build"].append(full_build(big, 10_000_000))
            shutil.rmtree(big, ignore_errors=True)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    report["load_average_at_end"] = os.getloadavg()
    print(json.dumps(report, indent=2), flush=True)
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    delivery = (report.get("latency") or {}).get("delivered_p50_s")
    ten = next((b for b in report["full_build"] if b["events"] >= 10_000_000 and b["engine"] == "duckdb"), None)
    peak = max(ten["generate_peak_rss_gb"], ten["build_peak_rss_gb"]) if ten else None
    print(f"latency_to_delivery_p50_s={delivery if delivery is not None else 'na'} "
          f"increment_ratio={report['new_hour']['ratio_to_full_build'] if 'new_hour' in report else 'na'} "
          f"peak_rss_10m_gb={peak if peak is not None else 'na'}")


if __name__ == "__main__":
    main()
