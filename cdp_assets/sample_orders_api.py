"""The sample data set's orders API: a local stand-in that serves `data/api/orders/*.jsonl` as the shop's
API would (contract of `cdp_resources.orders_api`).

It belongs to the demo and the tests, never to a deployment: `cdp run` (and so `cdp demo`) starts it for
the duration of a run only when the orders API's URL is not configured and the data directory is the
demo's (it holds `sample_manifest.json`, which only the sample generator writes); `cdp sample-api` serves
it in the foreground, for pulls started from the UI. Anywhere else an unset URL fails the pull, naming
the variable.
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

from cdp_resources.orders_api import OrdersApiResource

MANIFEST = "sample_manifest.json"


def order_position(order: dict) -> str:
    return f"{order.get('created_at', '')}|{order.get('order_id', '')}"


def sample_orders_server(folder: Path, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving) for `folder/*.jsonl` as the orders API, on `port` (0: a free one)."""
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

    return ThreadingHTTPServer((host, port), Handler)


@contextmanager
def serve_sample_orders(folder: Path) -> Iterator[str]:
    """Serve `folder/*.jsonl` as the orders API on a free loopback port for the duration of the block."""
    server = sample_orders_server(folder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def orders_api_for_run(orders_api: OrdersApiResource, data_dir: Path) -> Iterator[tuple[OrdersApiResource, str]]:
    """The orders API resource a `cdp run` uses, and a line saying which API it pulls from: as configured,
    or, with no URL configured and the demo's data directory, the sample API served for the run."""
    configured = orders_api.url or os.environ.get(orders_api.base_url_env, "")
    if configured or not (data_dir / MANIFEST).exists():
        yield orders_api, f"orders API: {configured or f'{orders_api.base_url_env} is not set'}"
        return
    with serve_sample_orders(data_dir / "api" / "orders") as url:
        note = f"orders API: {orders_api.base_url_env} is not set and this is the demo's data: sample API at {url}"
        # A new instance: Dagster resolves a resource from its constructor arguments, not from model_copy.
        yield type(orders_api)(**{**orders_api.model_dump(), "url": url}), note


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except ValueError:
        return False
