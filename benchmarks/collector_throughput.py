"""Collector throughput: events/second acknowledged durably (a 200 only after fsync), by batch size.

Starts the collector (`python -m cdp_resources.collector.server`) on a free 127.0.0.1 port with a temporary
data directory, then client processes, each with a pool of threads holding keep-alive `requests.Session`s,
post realistic Segment messages (~330 bytes) for a fixed time. Only 200s count; afterwards the landing
files are checked to hold at least every acknowledged message.

The peer, in the same run with the same clients, is what one would write by hand: Python's
`ThreadingHTTPServer` (started as a subprocess the same way) checking Basic auth, parsing the JSON and
appending the request's messages to one landing file, fsynced before the 200 (one fsync per request, no
group commit).

    .venv/bin/python benchmarks/collector_throughput.py [--seconds 10] [--batch-sizes 1,100]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import requests

KEY = "wk_bench"
HEADERS = {"Content-Type": "application/json", "Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()}
REPO = Path(__file__).resolve().parents[1]
TEMPLATE = json.dumps(
    {
        "type": "track",
        "messageId": "%s",
        "anonymousId": "anon-5f2c9a",
        "userId": "user-1234",
        "event": "product_added",
        "properties": {"product_id": "sku-829", "price": 19.99, "quantity": 2, "currency": "EUR"},
        "context": {"library": {"name": "analytics-python", "version": "2.4.0"}, "ip": "203.0.113.7",
                    "page": {"path": "/cart", "url": "https://shop.example.com/cart"}},
        "timestamp": "2026-01-15T10:30:00.000Z",
    },
    separators=(",", ":"),
)


def body(batch_size: int) -> bytes:
    messages = ",".join(TEMPLATE % uuid.uuid4() for _ in range(batch_size))
    return f'{{"batch":[{messages}]}}'.encode()


def client(port: int, batch_size: int, threads: int, seconds: float) -> tuple[int, int]:
    """One client process: (acknowledged events, failed requests)."""
    counts = [0, 0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def loop() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < deadline:
            connection.request("POST", "/v1/batch", body=body(batch_size), headers=HEADERS)
            response = connection.getresponse()
            response.read()
            ok = response.status == 200
            with lock:
                counts[0 if ok else 1] += batch_size if ok else 1
        connection.close()

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return counts[0], counts[1]


def landed(data_dir: Path) -> int:
    total = 0
    for path in (data_dir / "landing" / "web").glob("dt=*/hour=*/*.jsonl"):
        with path.open("rb") as handle:
            total += sum(1 for _ in handle)
    return total


def server_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds the server process has used so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


def serve_peer(port: int, data_dir: Path) -> None:
    """The hand-written peer: durable, one append to a single landing file and one fsync per request."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    folder = data_dir / "landing" / "web" / "dt=2026-01-15" / "hour=10"
    folder.mkdir(parents=True)
    # O_APPEND: each request's messages go in one write() call, which Linux never interleaves with another.
    landing = os.open(folder / "peer.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    directory = os.open(folder, os.O_RDONLY)
    os.fsync(directory)  # the file's directory entry is durable before the first 200
    os.close(directory)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            self._answer(200)

        def do_POST(self):
            data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Authorization") != HEADERS["Authorization"]:
                return self._answer(401)
            try:
                messages = json.loads(data)["batch"]
            except (ValueError, KeyError, TypeError):
                return self._answer(400)
            os.write(landing, b"".join(json.dumps(m).encode() + b"\n" for m in messages))
            os.fsync(landing)
            self._answer(200)

    ThreadingHTTPServer.request_queue_size = 128  # 32 client connections at once, as uvicorn accepts
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def run(batch_size: int, processes: int, threads: int, seconds: float, peer: bool = False) -> dict:
    with tempfile.TemporaryDirectory(prefix="collector-bench-", dir=REPO) as tmp:  # the repo's disk, not tmpfs
        data_dir = Path(tmp)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        command = (
            [sys.executable, __file__, "--serve-peer", str(port), str(data_dir)] if peer
            else [sys.executable, "-m", "cdp_resources.collector.server", "--port", str(port), "--data-dir", str(data_dir)]
        )
        server = subprocess.Popen(
            command,
            cwd=REPO, env={**os.environ, "CDP_WRITE_KEYS": KEY}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(600):
                try:
                    requests.get(f"http://127.0.0.1:{port}/health", timeout=1)
                    break
                except requests.ConnectionError:
                    time.sleep(0.05)
            cpu_before, started = server_cpu_seconds(server.pid), time.monotonic()
            with ProcessPoolExecutor(processes) as pool:
                results = list(pool.map(client, [port] * processes, [batch_size] * processes,
                                        [threads] * processes, [seconds] * processes))
            elapsed = time.monotonic() - started
            cpu_after = server_cpu_seconds(server.pid)
            cpu = None if cpu_before is None or cpu_after is None else round(cpu_after - cpu_before, 2)
        finally:
            server.terminate()
            server.wait(30)
        events, failed = sum(r[0] for r in results), sum(r[1] for r in results)
        files = sum(1 for _ in (data_dir / "landing" / "web").glob("dt=*/hour=*/*.jsonl"))
        on_disk = landed(data_dir)
    assert on_disk >= events, f"only {on_disk} of {events} acknowledged events are on disk"
    return {"server": "peer" if peer else "cdp", "batch_size": batch_size, "clients": f"{processes}x{threads}", "events": events, "failed": failed,
            "seconds": round(elapsed, 1), "events_per_s": round(events / elapsed), "requests_per_s": round(events / batch_size / elapsed),
            "events_per_file": round(on_disk / max(files, 1), 1),
            "server_cpu_s": cpu, "server_cpu_us_per_event": round(cpu / max(events, 1) * 1e6, 1) if cpu is not None else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--batch-sizes", default="1,100")
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--threads", type=int, default=16, help="threads per client process")
    parser.add_argument("--serve-peer", nargs=2, metavar=("PORT", "DATA_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_peer:
        return serve_peer(int(args.serve_peer[0]), Path(args.serve_peer[1]))
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}")
    for size in (int(s) for s in args.batch_sizes.split(",")):
        ours = run(size, args.processes, args.threads, args.seconds)
        peer = run(size, args.processes, args.threads, args.seconds, peer=True)
        print(json.dumps(ours), flush=True)
        print(json.dumps(peer), flush=True)
        print(f"batch {size}: cdp / peer = {ours['events_per_s'] / max(peer['events_per_s'], 1):.1f}x", flush=True)


if __name__ == "__main__":
    main()
