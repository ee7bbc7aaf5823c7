"""Profile API latency under 32 concurrent clients, and event-to-visible latency, on SQLite and on Redis.

    .venv/bin/python benchmarks/profile_api_benchmark.py --profiles 1000000 --seconds 20

For each store: a synthetic store of N profiles shaped like the demo's (34 traits, their sources, 7 identifiers,
segments, `--events` events each) is written through the store's own writer (the refresh's path), then
`cdp serve` runs as a subprocess and 32 clients (asyncio, one keep-alive connection each, in this process)
ask for random persons' `traits` (by user_id) and `events` (by email, limit 10) for `--seconds`. Meanwhile
`cdp collect` (a subprocess on the same store) receives a `track` message every 100 ms for a random person
and a probe polls the API every 5 ms until the message shows in that person's events: event-to-visible is the
time from the collector's 200 to the first API answer holding it. Peak memory: the API server's VmHWM, the
loader's max RSS, Redis' used_memory_peak.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cdp_resources.online_store import PersonRecord, open_store  # noqa: E402

TOKEN = "bench_token"
WRITE_KEY = "bench_write_key"
SEGMENTS = ["vip_buyers", "cart_abandoners", "lapsed_customers", "new_signups", "rfm_champions"]
CITIES = ["Dublin", "Lyon", "Berlin", "Austin", "Osaka", "Porto", "Oslo"]


def person(n: int, events: int) -> PersonRecord:
    rnd = random.Random(n)
    pid = f"p_{n:016x}"
    traits = {"email": f"user{n}@example.com", "phone": f"+1201555{n % 10000:04d}", "first_name": f"First{n}",
              "last_name": f"Last{n}", "gender": rnd.choice(["female", "male", None]), "city": rnd.choice(CITIES),
              "first_seen_at": "2026-10-01T10:00:00", "last_seen_at": "2026-11-20T10:00:00"}
    for i in range(26):
        traits[f"computed_{i:02d}"] = rnd.random() * 100 if i % 3 else rnd.randint(0, 50)
    document = {"person_id": pid, "created_at": "2026-10-01T10:00:00", "traits": traits,
                "trait_sources": {k: {"value": traits[k], "source": "crm_customers", "observed_at": "2026-10-01T10:00:00"}
                                  for k in ("email", "phone", "first_name", "last_name", "gender", "city")},
                "computed_traits": [f"computed_{i:02d}" for i in range(26)],
                "segments": [{"segment": s, "entered_at": "2026-11-01T00:00:00"} for s in rnd.sample(SEGMENTS, 2)],
                "relationships": []}
    identifiers = [{"type": "user_id", "id": f"u_{n}"}, {"type": "email", "id": traits["email"]},
                   {"type": "phone", "id": traits["phone"]}, {"type": "crm_id", "id": f"crm_{n}"},
                   *({"type": "anonymous_id", "id": f"anon-{n}-{k}"} for k in range(3))]
    for i in identifiers:
        i |= {"source_id": "web", "created_at": "2026-10-01T10:00:00"}
    base = 1_790_000_000_000_000 + n * 1000
    evs = [(base + k * 60_000_000, f"m-{n}-{k}", {
        "event": "product_viewed", "type": "track", "timestamp": "2026-11-01T10:00:00.000Z", "message_id": f"m-{n}-{k}",
        "properties": {"product_id": f"sku_{k:04d}", "price": 19.9, "category": "shirts"}, "source_id": "web",
        "context": {"library": {"name": "analytics.js", "version": "5.2.0"}, "page": {"path": "/p"}}})
        for k in range(events)]
    return PersonRecord(pid, document, identifiers, evs)


def load(store, profiles: int, events: int) -> float:
    started = time.monotonic()
    with store.writer(full=True) as writer:
        for start in range(0, profiles, 10_000):
            writer.put([person(n, events) for n in range(start, min(profiles, start + 10_000))])
            if start % 200_000 == 0:
                print(f"  loaded {start:,} persons ({time.monotonic() - started:.0f}s)", flush=True)
        writer.set_meta({"batch": "0"})
    return time.monotonic() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(args: list[str], env: dict, port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "cdp_assets.cli", *args, "--port", str(port)], env=env, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return process
        except requests.RequestException:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{args[0]} did not start")


async def client(port: int, paths, until: float, latencies: dict) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = base64.b64encode(f"{TOKEN}:".encode()).decode()
    while time.monotonic() < until:
        kind, path = paths()
        started = time.perf_counter()
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        body = await reader.readexactly(length)
        latencies[kind].append(time.perf_counter() - started)
        assert head.startswith(b"HTTP/1.1 200"), head + body
    writer.close()


def probe_visibility(api_port: int, collector_port: int, profiles: int, until: float, out: list) -> None:
    """A track message every 100 ms; the time from the collector's 200 to the API showing it."""
    session, api = requests.Session(), requests.Session()
    api.auth = (TOKEN, "")
    n = 0
    while time.monotonic() < until - 3:
        who = random.randrange(profiles)
        message_id = f"probe-{os.getpid()}-{n}"
        n += 1
        response = session.post(f"http://127.0.0.1:{collector_port}/v1/track", auth=(WRITE_KEY, ""), timeout=10,
                                json={"userId": f"u_{who}", "event": "probe", "messageId": message_id})
        assert response.status_code == 200
        acked = time.perf_counter()
        while True:
            data = api.get(f"http://127.0.0.1:{api_port}/v1/spaces/s/collections/users/profiles/user_id:u_{who}/events",
                           params={"limit": 1}, timeout=10).json()["data"]
            if data and data[0]["message_id"] == message_id:
                out.append(time.perf_counter() - acked)
                break
            if time.perf_counter() - acked > 10:
                out.append(float("inf"))
                break
            time.sleep(0.005)
        time.sleep(0.1)


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] * 1000 if values else float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def family(pid: int) -> list[int]:
    """A process and its children (uvicorn's workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [pid, *(int(c) for c in children.read_text().split())] if children.exists() else [pid]


def vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) // 1024
    return 0


def run(kind: str, setting: str, args, data_dir: Path) -> dict:
    env = {**os.environ, "CDP_DATA_DIR": str(data_dir), "CDP_ONLINE_STORE": setting, "CDP_PROFILE_API_TOKENS": TOKEN,
           "CDP_WRITE_KEYS": WRITE_KEY}
    os.environ.update({"CDP_DATA_DIR": str(data_dir), "CDP_ONLINE_STORE": setting})
    store = open_store(data_dir)
    if kind == "redis":
        store.drop_everything()
    print(f"{kind}: loading {args.profiles:,} persons …", flush=True)
    load_s = load(store, args.profiles, args.events)
    size = store.client.info("memory")["used_memory"] if kind == "redis" else 0
    store.close()
    if kind == "sqlite":  # closed: the WAL is checkpointed into the file and removed
        size = sum(p.stat().st_size for p in (data_dir / "online").glob("*"))
    api_port, collector_port = free_port(), free_port()
    api = start(["serve", "--workers", str(args.workers)], env, api_port)
    collector = start(["collect"], env, collector_port)
    latencies = {"traits": [], "events": []}
    rnd = random.Random(1)

    def paths():
        n = rnd.randrange(args.profiles)
        if rnd.random() < 0.5:
            return "traits", f"/v1/spaces/s/collections/users/profiles/user_id:u_{n}/traits"
        return "events", f"/v1/spaces/s/collections/users/profiles/email:user{n}@example.com/events?limit=10"

    time.sleep(2 if args.workers > 1 else 0)  # the workers start after the supervisor answers
    cpu_before = sum(cpu_seconds(p) for p in family(api.pid))
    until = time.monotonic() + args.seconds
    visible: list[float] = []
    probe = threading.Thread(target=probe_visibility, args=(api_port, collector_port, args.profiles, until, visible))
    probe.start()

    async def main():
        await asyncio.gather(*(client(api_port, paths, until, latencies) for _ in range(args.clients)))

    asyncio.run(main())
    probe.join()
    peak_api = max(vm_hwm(p) for p in family(api.pid))
    cpu = sum(cpu_seconds(p) for p in family(api.pid)) - cpu_before
    for process in (api, collector):
        process.terminate()
        process.wait(20)
    result = {
        "store": kind, "profiles": args.profiles, "load_s": round(load_s, 1), "store_bytes": size,
        "requests": sum(len(v) for v in latencies.values()),
        "rps": round(sum(len(v) for v in latencies.values()) / args.seconds),
        "traits_p50_ms": round(percentile(latencies["traits"], 50), 2), "traits_p99_ms": round(percentile(latencies["traits"], 99), 2),
        "events_p50_ms": round(percentile(latencies["events"], 50), 2), "events_p99_ms": round(percentile(latencies["events"], 99), 2),
        "visible_p50_ms": round(percentile(visible, 50), 1), "visible_max_ms": round(max(visible) * 1000, 1) if visible else None,
        "visible_samples": len(visible), "api_peak_mib": peak_api,
        "api_cpu_per_request_us": round(cpu / max(1, sum(len(v) for v in latencies.values())) * 1e6),
        "load_avg_after": round(os.getloadavg()[0], 2),
        "loader_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    }
    if kind == "redis":
        store = open_store(data_dir)
        result["redis_peak_mib"] = store.client.info("memory")["used_memory_peak"] // 2**20
        store.drop_everything()
        store.close()
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10, help="events per person in the store")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--workers", type=int, default=1, help="cdp serve --workers")
    parser.add_argument("--stores", default="sqlite,redis")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0?prefix=bench")
    args = parser.parse_args()
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, {platform.python_version()}, load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="profile-api-bench-") as folder:
        for kind in args.stores.split(","):
            data_dir = Path(folder) / kind / "data"
            data_dir.mkdir(parents=True)
            run(kind, "sqlite" if kind == "sqlite" else args.redis, args, data_dir)
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
