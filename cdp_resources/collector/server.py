"""Running the collector: `serve()` for `cdp collect`, and `python -m cdp_resources.collector.server`."""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from cdp_resources.collector.app import create_app


def serve(host: str = "127.0.0.1", port: int = 8088, data_dir: str | Path | None = None) -> None:
    """Serve until SIGINT/SIGTERM; in-flight requests still get their durable answer before exit."""
    uvicorn.run(
        create_app(data_dir),
        host=host,
        port=port,
        access_log=False,  # one log line per event would cost more than landing it
        server_header=False,
        timeout_graceful_shutdown=10,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="CDP event collector (Segment HTTP API + Standard Webhooks)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument("--data-dir", default=None, help="default: $CDP_DATA_DIR or ./data")
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.data_dir)


if __name__ == "__main__":
    main()
