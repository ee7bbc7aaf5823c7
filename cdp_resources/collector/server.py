"""Running the collector: `serve()` for `cdp collect`, and `python -m cdp_resources.collector.server`."""

from __future__ import annotations

import argparse
import copy
import logging
import resource
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from uvicorn.config import LOGGING_CONFIG

from cdp_resources.collector.app import create_app
from cdp_resources.collector.config import Limits
from cdp_resources.collector.connections import guarded_protocol

log = logging.getLogger("cdp_resources.collector")
RESERVED_FILES = 64  # descriptors kept for landing files, the webhook index, logs: never given to clients


def server_options(app: Starlette) -> dict:
    """uvicorn settings for `app`, with the limits of `app.state.config` enforced per connection."""
    limits = app.state.config.limits
    max_connections = min(limits.max_connections, open_files_limit() - RESERVED_FILES)
    if max_connections < limits.max_connections:
        log.warning("at most %d connections: the open-files limit (ulimit -n) leaves no more", max_connections)
    guarded = Limits(limits.header_timeout, limits.body_timeout, max(max_connections, 1))
    return dict(
        http=guarded_protocol(guarded),
        access_log=False,  # one log line per event would cost more than landing it; refusals are logged
        server_header=False,
        timeout_graceful_shutdown=10,
        log_config=log_config(),
    )


def log_config() -> dict:
    """uvicorn's own logging, plus the collector's refusal lines in the same format."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"restated": {"()": "cdp_resources.collector.connections.WithoutRestatedRefusals"}}
    config["loggers"]["uvicorn.error"]["filters"] = ["restated"]
    config["loggers"]["cdp_resources.collector"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def open_files_limit() -> int:
    """The open-files limit, raised to the hard limit first (as servers do): each connection holds one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def serve(host: str = "127.0.0.1", port: int = 8088, data_dir: str | Path | None = None) -> None:
    """Serve until SIGINT/SIGTERM; in-flight requests still get their durable answer before exit."""
    app = create_app(data_dir)
    uvicorn.run(app, host=host, port=port, **server_options(app))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="CDP event collector (Segment HTTP API + Standard Webhooks)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument("--data-dir", default=None, help="default: $CDP_DATA_DIR or ./data")
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.data_dir)


if __name__ == "__main__":
    main()
