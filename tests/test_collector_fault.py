"""Crash safety: SIGKILL the collector under load, restart it, and lose none of the acknowledged events."""

from __future__ import annotations

import base64
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

KEY = "wk_fault"
KEY_BASIC = base64.b64encode(f"{KEY}:".encode()).decode()
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(port: int, data_dir: Path, env: dict | None = None, stderr: Path | None = None,
          open_files: int | None = None) -> subprocess.Popen:
    """`python -m cdp_resources.collector.server`, optionally with its log in `stderr` and at most
    `open_files` descriptors (soft and hard, so it cannot raise them)."""
    env = {**os.environ, "CDP_WRITE_KEYS": KEY, **(env or {})}
    command = [sys.executable, "-m", "cdp_resources.collector.server", "--port", str(port), "--data-dir", str(data_dir)]
    limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))) if open_files else None
    log = open(stderr, "wb") if stderr else subprocess.PIPE
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log, preexec_fn=limit)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, stderr.read_text() if stderr else process.stderr.read().decode()
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except requests.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError("collector did not start within 30 s")


class Sender(threading.Thread):
    """Sends batches of 10 until told to stop (or 20k messages, or 90 s), remembering every id that got a 200."""

    def __init__(self, url: str, acked: set[str], lock: threading.Lock, stop: threading.Event):
        super().__init__(daemon=True)
        self.url, self.acked, self.lock, self.stop = url, acked, lock, stop
        self.sent = self.failed = 0

    def run(self) -> None:
        session = requests.Session()
        session.auth = (KEY, "")
        deadline = time.monotonic() + 90  # a safety net: the test stops them; a restart under load takes seconds
        while not self.stop.is_set() and self.sent < 20_000 and time.monotonic() < deadline:
            batch = [{"type": "track", "event": "tick", "anonymousId": "a", "messageId": str(uuid.uuid4())} for _ in range(10)]
            self.sent += len(batch)
            try:
                response = session.post(self.url, json={"batch": batch}, timeout=5)
            except requests.RequestException:
                response = None
            if response is not None and response.status_code == 200:
                with self.lock:
                    self.acked.update(m["messageId"] for m in batch)
            else:
                self.failed += 1
                time.sleep(0.02)


def wait_for(condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.mark.slow
def test_sigkill_under_load_loses_no_acknowledged_event(tmp_path):
    data_dir, port = tmp_path / "data", free_port()
    acked: set[str] = set()
    lock, stop = threading.Lock(), threading.Event()
    server = start(port, data_dir)
    senders = [Sender(f"http://127.0.0.1:{port}/v1/batch", acked, lock, stop) for _ in range(4)]
    try:
        for sender in senders:
            sender.start()
        wait_for(lambda: len(acked) >= 3000, 10)
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        acked_before_kill = len(acked)
        server = start(port, data_dir)
        wait_for(lambda: len(acked) >= acked_before_kill + 2000, 30)
    finally:
        stop.set()
        for sender in senders:
            sender.join(10)
        server.terminate()
        server.wait(10)

    assert acked_before_kill >= 1000 and len(acked) > acked_before_kill
    assert sum(sender.failed for sender in senders) > 0  # requests were refused or cut while it was down
    landed = set()
    for path in (data_dir / "landing").rglob("*"):
        if path.is_file() and not path.name.startswith("."):  # dot files are unacknowledged temp files
            assert path.suffix == ".jsonl", path
            landed.update(json.loads(line)["messageId"] for line in path.read_text().splitlines())
    print(f"\nSIGKILL under load: {acked_before_kill} acknowledged before the kill, {len(acked)} in all, "
          f"{len(acked - landed)} of them missing on disk; {len(landed - acked)} stored but not acknowledged")
    assert acked - landed == set()


class Trickler(threading.Thread):
    """Keeps `count` connections open for `seconds`, each sending one byte at a time: half never finish their
    headers, half finish them (announcing a 10 KB body) and trickle the body. A connection the server closes
    is replaced by a new one; afterwards the open ones keep trickling until the server has closed them all.
    Records when each was opened and closed."""

    def __init__(self, port: int, count: int, seconds: float):
        super().__init__(daemon=True)
        self.port, self.count, self.seconds = port, count, seconds
        self.opened: list[float] = []
        self.closed: dict[int, float] = {}

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.setblocking(False)
        head = f"POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {KEY_BASIC}\r\n"
        if len(self.opened) % 2:
            head += "Content-Type: application/json\r\nContent-Length: 10000\r\n\r\n{"
        try:
            sock.send(head.encode())
        except OSError:
            pass  # closed at once (dropped for being over the limit): seen below
        self.opened.append(time.monotonic())
        return sock

    def run(self) -> None:
        live = {}
        stop_opening = time.monotonic() + self.seconds
        give_up = stop_opening + 30
        while time.monotonic() < give_up and (live or time.monotonic() < stop_opening):
            while len(live) < self.count and time.monotonic() < stop_opening:
                index = len(self.opened)
                live[index] = self.connect()
            for i, sock in list(live.items()):
                try:
                    if sock.recv(4096) == b"":  # an answer (408/503) may come first; then the end
                        raise ConnectionResetError
                    continue
                except BlockingIOError:
                    try:
                        sock.send(b"x")
                        continue
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        pass
                except OSError:
                    pass
                self.closed[i] = time.monotonic()
                live.pop(i).close()
            time.sleep(0.2)
        for sock in live.values():
            sock.close()


@pytest.mark.slow
def test_slowloris_and_a_flood_are_cut_off_while_a_real_sdk_is_served(tmp_path):
    """300 connections trickling headers or bodies, replaced as they are closed, for 4 s, at a collector
    allowed 256 open files (so at most 192 connections): each is closed within its deadline (or earlier,
    dropped for a newcomer), each refusal is one log line and no traceback, and the Segment SDK's requests
    meanwhile are acknowledged promptly."""
    from segment.analytics import Client

    data_dir, port, log_path = tmp_path / "data", free_port(), tmp_path / "collector.log"
    limits = {"CDP_COLLECTOR_HEADER_TIMEOUT": "1", "CDP_COLLECTOR_BODY_TIMEOUT": "2"}
    server = start(port, data_dir, env=limits, stderr=log_path, open_files=256)
    attack = Trickler(port, 300, seconds=4)
    flush_ms, sent, errors = [], [], []
    try:
        attack.start()
        # upload_interval: the SDK's consumer posts at once instead of waiting 0.5 s to fill a batch.
        client = Client(KEY, host=f"http://127.0.0.1:{port}", max_retries=0, upload_interval=0.01,
                        on_error=lambda e, b: errors.append(e))
        time.sleep(0.5)
        while attack.is_alive():
            for _ in range(5):
                sent.append(client.track("legit-user", "product_viewed", {"n": len(sent)})[1]["messageId"])
            began = time.perf_counter()
            client.flush()
            flush_ms.append((time.perf_counter() - began) * 1000)
            time.sleep(0.05)
        client.shutdown()
    finally:
        server.terminate()
        server.wait(10)

    log = log_path.read_text()
    lifetimes = sorted(attack.closed[i] - attack.opened[i] for i in attack.closed)
    flush_ms.sort()
    print(f"\nslowloris: {len(attack.opened)} trickling connections, {len(attack.closed)} closed by the server, "
          f"longest held {lifetimes[-1]:.2f} s; SDK flushes n={len(flush_ms)} median {flush_ms[len(flush_ms) // 2]:.0f} ms, "
          f"max {flush_ms[-1]:.0f} ms; {log.count('refused ')} refusal lines")
    assert len(attack.closed) == len(attack.opened) >= 300
    assert lifetimes[-1] < 2 + 1.5  # the body deadline (the longer), plus slack for a loaded machine
    assert not errors and len(flush_ms) >= 10
    assert flush_ms[len(flush_ms) // 2] < 250 and flush_ms[-1] < 1500
    assert "Traceback" not in log and "Exception" not in log
    assert log.count("refused ") == len(attack.opened), log[-3000:]
    kinds = {line.split(" from ")[0].split("refused ", 1)[1] for line in log.splitlines() if "refused " in line}
    assert {"408 connection", "408 POST /v1/batch", "503 connection"} <= kinds, kinds
    landed = set()
    for path in (data_dir / "landing").rglob("*.jsonl"):
        landed.update(json.loads(line)["messageId"] for line in path.read_text().splitlines())
    assert landed == set(sent)
