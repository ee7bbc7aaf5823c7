"""Crash safety: SIGKILL the collector under load, restart it, and lose none of the acknowledged events."""

from __future__ import annotations

import json
import os
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
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(port: int, data_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "CDP_WRITE_KEYS": KEY}
    command = [sys.executable, "-m", "cdp_resources.collector.server", "--port", str(port), "--data-dir", str(data_dir)]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode()
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except requests.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError("collector did not start within 30 s")


class Sender(threading.Thread):
    """Sends batches of 10 until told to stop (or 20k messages), remembering every id that got a 200."""

    def __init__(self, url: str, acked: set[str], lock: threading.Lock, stop: threading.Event):
        super().__init__(daemon=True)
        self.url, self.acked, self.lock, self.stop = url, acked, lock, stop
        self.sent = self.failed = 0

    def run(self) -> None:
        session = requests.Session()
        session.auth = (KEY, "")
        deadline = time.monotonic() + 20
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
        wait_for(lambda: len(acked) >= acked_before_kill + 2000, 10)
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
    assert acked - landed == set()
