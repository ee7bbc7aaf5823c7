"""Collector fairness: how long a small request waits while big batches arrive at the same time.

Starts the collector as shipped (`python -m cdp_resources.collector.server`) on a free 127.0.0.1 port with a
temporary data directory. A client process keeps `--big-clients` connections busy posting ~467 KB
`/v1/batch` requests (1,160 messages of ~411 bytes, just under Segment's 500 KB limit) back to back; meanwhile
this process posts one small request (a single `track`) every 50 ms on its own keep-alive connection and
records how long each took to be acknowledged. The same probe first runs alone, as the baseline.

    .venv/bin/python benchmarks/collector_fairness.py [--seconds 10] [--big-clients 4]
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collector_throughput import HEADERS, KEY, REPO, body  # noqa: E402

BIG_BATCH = 1160  # messages of ~411 bytes: ~467 KB, under the 500 KB limit


def start_collector(data_dir: Path) -> tuple[subprocess.Popen, int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "cdp_resources.collector.server", "--port", str(port), "--data-dir", str(data_dir)]
    server = subprocess.Popen(command, cwd=REPO, env={**os.environ, "CDP_WRITE_KEYS": KEY}, stdout=subprocess.DEVNULL)
    for _ in range(600):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return server, port
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise SystemExit("the collector did not start")


def big_sender(port: int, seconds: float, counts) -> None:
    payload = body(BIG_BATCH)
    deadline = time.monotonic() + seconds
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while time.monotonic() < deadline:
        connection.request("POST", "/v1/batch", body=payload, headers=HEADERS)
        response = connection.getresponse()
        response.read()
        with counts.get_lock():
            counts.value += 1 if response.status == 200 else 0


def probe(port: int, seconds: float) -> list[float]:
    """Milliseconds to acknowledge one small request, one every 50 ms."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    latencies, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        connection.request("POST", "/v1/batch", body=body(1), headers=HEADERS)
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status
        latencies.append((time.perf_counter() - started) * 1000)
        time.sleep(0.05)
    return latencies


def summary(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    return f"n={len(ordered)} median {statistics.median(ordered):.1f} ms, p95 {p95:.1f} ms, max {ordered[-1]:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--big-clients", type=int, default=4)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="collector-bench-", dir=REPO) as tmp:  # the repo's disk, not tmpfs
        server, port = start_collector(Path(tmp))
        try:
            alone = probe(port, min(args.seconds, 3))
            counts = multiprocessing.Value("i", 0)
            senders = [multiprocessing.Process(target=big_sender, args=(port, args.seconds, counts))
                       for _ in range(args.big_clients)]
            for sender in senders:
                sender.start()
            time.sleep(0.5)
            loaded = probe(port, args.seconds - 1)
            for sender in senders:
                sender.join()
        finally:
            server.terminate()
            server.wait(30)
    print(f"small request alone:                 {summary(alone)}")
    print(f"small request with {args.big_clients} big senders:   {summary(loaded)}")
    print(f"big batches acknowledged: {counts.value} ({counts.value * BIG_BATCH / args.seconds:,.0f} events/s)")


if __name__ == "__main__":
    main()
