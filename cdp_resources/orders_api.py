"""The shop's orders REST API, pulled with `requests`, and a local stand-in that serves the sample data.

The API answers `GET /orders?cursor=<c>&limit=<n>` with `{"data": [...], "next_cursor": "<c>" | null}`,
orders sorted by (created_at, order_id); the cursor is the position of the last order returned, so an
extract can stop anywhere and resume from the last committed position.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import requests
from dagster import ConfigurableResource

from cdp_resources.http import backoff, retry_after
from cdp_resources.settings import data_dir


class ApiError(RuntimeError):
    """The API kept failing after every retry, or answered with a client error."""


class OrdersApiResource(ConfigurableResource):
    """Base URL from `base_url_env` (default `CDP_ORDERS_API_URL`); unset, the sample API in the data dir.

    Transient failures (connection errors, timeouts, 5xx) are retried with exponential backoff and full
    jitter; 429 waits for `Retry-After`; calls are spaced to stay under `calls_per_minute`.
    """

    base_url_env: str = "CDP_ORDERS_API_URL"
    page_size: int = 500
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_attempts: int = 6
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    calls_per_minute: int = 5000

    @contextmanager
    def endpoint(self) -> Iterator[str]:
        url = os.environ.get(self.base_url_env, "")
        if url:
            yield url.rstrip("/")
            return
        with serve_sample_orders(data_dir() / "api" / "orders") as local_url:
            yield local_url

    def pages(self, base_url: str, cursor: str | None) -> Iterator[tuple[list[dict], str | None]]:
        """(orders, cursor after them) page by page, starting after `cursor`.

        After the last page the cursor stays at the one that fetched it, since the API's cursors are
        opaque: the next pull re-reads that page and picks up what was added to it. A page whose next
        cursor does not move forward ends the pull (an API repeating a page must not make us loop);
        records seen twice are deduplicated by primary key downstream.
        """
        pacer = _Pacer(self.calls_per_minute)
        with requests.Session() as session:
            while True:
                params = {"limit": self.page_size, **({"cursor": cursor} if cursor else {})}
                body = self._get_json(session, f"{base_url}/orders", params, pacer)
                orders = body.get("data") or []
                next_cursor = body.get("next_cursor")
                if orders:
                    yield orders, next_cursor or cursor
                if not orders or not next_cursor or next_cursor == cursor:
                    return
                cursor = next_cursor

    def _get_json(self, session: requests.Session, url: str, params: dict, pacer: "_Pacer") -> dict:
        for attempt in range(1, self.max_attempts + 1):
            pacer.wait()
            try:
                response = session.get(url, params=params, timeout=(self.connect_timeout_s, self.read_timeout_s))
            except (requests.ConnectionError, requests.Timeout) as exc:
                failure, delay = f"{type(exc).__name__}: {exc}", self._backoff(attempt)
            else:
                if response.status_code == 429:
                    failure, delay = "429 Too Many Requests", retry_after(response) or self._backoff(attempt)
                elif response.status_code >= 500:
                    failure, delay = f"{response.status_code} {response.reason}", self._backoff(attempt)
                elif response.status_code >= 400:
                    raise ApiError(f"GET {response.url}: {response.status_code} {response.text[:200]}")
                else:
                    return response.json()
            if attempt == self.max_attempts:
                raise ApiError(f"GET {url} failed {attempt} times, last: {failure}")
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> float:
        return backoff(attempt, self.backoff_base_s, self.backoff_max_s)


class _Pacer:
    """Spaces calls evenly so a pull never exceeds the configured calls per minute."""

    def __init__(self, calls_per_minute: int):
        self.interval = 60.0 / calls_per_minute if calls_per_minute > 0 else 0.0
        self.next_at = 0.0

    def wait(self) -> None:
        now = time.monotonic()
        if now < self.next_at:
            time.sleep(self.next_at - now)
        self.next_at = max(now, self.next_at) + self.interval



def order_position(order: dict) -> str:
    return f"{order.get('created_at', '')}|{order.get('order_id', '')}"


@contextmanager
def serve_sample_orders(folder: Path) -> Iterator[str]:
    """Serve `folder/*.jsonl` as the orders API on a free loopback port for the duration of the block."""
    lines = []
    for path in sorted(folder.glob("*.jsonl")):
        lines += [line for line in path.read_text().splitlines() if line.strip()]

    def position(line: str) -> str:
        try:
            return order_position(json.loads(line))
        except ValueError:
            return ""

    records = sorted(((position(line), line) for line in lines), key=lambda r: r[0])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            url = urlparse(self.path)
            if url.path != "/orders":
                self.send_error(404)
                return
            query = parse_qs(url.query)
            after = query.get("cursor", [""])[0]
            limit = int(query.get("limit", ["500"])[0])
            page = [r for r in records if r[0] > after][:limit]
            # Lines are served as stored, so a malformed record reaches validation as a raw string.
            data = ",".join(line if _is_json(line) else json.dumps(line) for _, line in page)
            next_cursor = json.dumps(page[-1][0]) if len(page) == limit else "null"
            body = f'{{"data":[{data}],"next_cursor":{next_cursor}}}'.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # keep run logs quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except ValueError:
        return False
