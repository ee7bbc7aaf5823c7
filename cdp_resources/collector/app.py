"""The collector's ASGI app: Segment Tracking API, Standard Webhooks receiver and health, on Starlette."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cdp_resources.collector.config import CollectorConfig
from cdp_resources.collector.landing import LandingWriter
from cdp_resources.collector.protocol import RequestError, error_response
from cdp_resources.collector.segment import tracking_routes
from cdp_resources.collector.webhooks import webhook_route
from cdp_resources.settings import data_dir as default_data_dir

log = logging.getLogger(__name__)


def create_app(data_dir: str | Path | None = None) -> Starlette:
    """The app landing into `<data_dir>/landing` (default `$CDP_DATA_DIR`); keys and secrets are read now."""
    config = CollectorConfig.from_env()
    if not config.write_keys:
        log.warning("CDP_WRITE_KEYS is empty: every event request will be refused with 401")
    root = Path(data_dir).resolve() if data_dir else default_data_dir()
    writer = LandingWriter(root / "landing")

    @asynccontextmanager
    async def lifespan(app: Starlette):
        await writer.start()
        try:
            yield
        finally:
            await writer.stop()

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "landing": str(writer.root)})

    routes = [*tracking_routes(config, writer), webhook_route(config, writer), Route("/health", health)]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={RequestError: error_response})
