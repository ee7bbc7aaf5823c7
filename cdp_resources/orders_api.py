"""The shop's orders REST API, pulled with `requests`, and a local stand-in that serves the sample data.

The API answers `GET /orders?cursor=<c>&limit=<n>` with `{"data": [...], "next_cursor": "<c>" | null}`,
orders sorted by (created_at, order_id); the cursor is the position of the last order returned, so an
extract can stop anywhere and resume from the last committed position.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import requests
from dagster import ConfigurableResource

from cdp_resources.settings import data_dir


class OrdersApiResource(ConfigurableResource):
    """Base URL from `base_url_env` (default `CDP_ORDERS_API_URL`); unset, the sample API in the data dir."""

    base_url_env: str = "CDP_ORDERS_API_URL"
    page_size: int = 500
    timeout_s: float = 30.0

    @contextmanager
    def endpoint(self) -> Iterator[str]:
        url = os.environ.get(self.base_url_env, "")
        if url:
            yield url.rstrip("/")
            return
        with serve_sample_orders(data_dir() / "api" / "orders") as local_url:
            yield local_url

    def pages(self, base_url: str, cursor: str | None) -> Iterator[tuple[list[dict], str | None]]:
        """(orders, cursor after them) page by page, starting after `cursor`."""
        with requests.Session() as session:
            while True:
                params = {"limit": self.page_size, **({"cursor": cursor} if cursor else {})}
                response = session.get(f"{base_url}/orders", params=params, timeout=self.timeout_s)
                response.raise_for_status()
                body = response.json()
                orders = body.get("data") or []
                if orders:
                    cursor = body.get("next_cursor") or cursor
                    yield orders, cursor
                if not orders or not body.get("next_cursor"):
                    return


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
