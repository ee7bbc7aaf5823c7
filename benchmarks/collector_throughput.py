"""Collector throughput: events/second acknowledged durably (a 200 only after fsync), by batch size.

Starts the collector (`python -m cdp_resources.collector.server`) on a free 127.0.0.1 port with a temporary
data directory, then client processes, each with a pool of threads holding keep-alive `requests.Session`s,
post realistic Segment messages (~330 bytes) for a fixed time. Only 200s count; afterwards the landing
files are checked to hold at least every acknowledged message.

The peer, in the same run with the same clients, is what one would write by hand: Python's
`ThreadingHTTPServer` checking the write key, parsing the batch and writing each request's messages to a
file of its own, fsynced and renamed before the 200 (one fsync per request, no group commit).

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


def serve_peer(port: int, data_dir: Path) -> None:
    """The hand-written peer: durable, but one file and one fsync per request."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    folder = data_dir / "landing" / "web" / "dt=2026-01-15" / "hour=10"
    folder.mkdir(parents=True)

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
            except (ValueError, KeyError):
                return self._answer(400)
            name = uuid.uuid4().hex
            with open(folder / f".{name}", "wb") as handle:
                handle.write(b"".join(json.dumps(m).encode() + b"\n" for m in messages))
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(folder / f".{name}", folder / f"{name}.jsonl")
            directory = os.open(folder, os.O_RDONLY)
            os.fsync(directory)
            os.close(directory)
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
            started = time.monotonic()
            with ProcessPoolExecutor(processes) as pool:
                results = list(pool.map(client, [port] * processes, [batch_size] * processes,
                                        [threads] * processes, [seconds] * processes))
            elapsed = time.monotonic() - started
        finally:
            server.terminate()
            server.wait(30)
        events, failed = sum(r[0] for r in results), sum(r[1] for r in results)
        files = sum(1 for _ in (data_dir / "landing" / "web").glob("dt=*/hour=*/*.jsonl"))
        on_disk = landed(data_dir)
    assert on_disk >= events, f"only {on_disk} of {events} acknowledged events are on disk"
    return {"server": "peer" if peer else "cdp", "batch_size": batch_size, "clients": f"{processes}x{threads}", "events": events, "failed": failed,
            "seconds": round(elapsed, 1), "events_per_s": round(events / elapsed), "requests_per_s": round(events / batch_size / elapsed),
            "events_per_file": round(on_disk / max(files, 1), 1)}


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
