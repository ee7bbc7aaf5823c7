"""The collector's ASGI app: Segment Tracking API, Standard Webhooks receiver and health, on Starlette."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cdp_resources.collector.config import CollectorConfig
from cdp_resources.collector.cors import BrowserAccess
from cdp_resources.collector.landing import LandingWriter
from cdp_resources.collector.protocol import RequestError, error_response, http_error_response
from cdp_resources.collector.segment import tracking_routes
from cdp_resources.collector.webhooks import webhook_route
from cdp_resources.settings import data_dir as default_data_dir

log = logging.getLogger(__name__)


def live_feed(root: Path):
    """The online store's recent-event log fed with every acknowledged message (contract §8: visible in the
    Profile API within seconds); without a store (Redis unreachable) the collector still collects."""
    from cdp_resources.online_store import open_store
    from cdp_resources.online_store.live import LiveFeed

    try:
        from cdp_assets.identity.rules import load_identity_rules
        from cdp_resources.settings import config_dir

        rules = load_identity_rules(config_dir() / "identity.yaml")
    except Exception:  # noqa: BLE001 (no identity rules here: the contract's normalization, nothing blocked)
        rules = None
    try:
        store = open_store(root)
        if store.kind == "redis":
            store.client.ping()  # unreachable: say so now, not once per message
    except Exception as exc:  # noqa: BLE001
        log.warning("no online store (%s): acknowledged messages reach the Profile API only after a refresh", exc)
        return None
    return LiveFeed(store, rules.default_phone_region if rules else "US", rules, lambda: _salt(root))


def _salt(root: Path) -> str | None:
    """The instance's privacy salt (as cdp_assets.privacy.suppression keeps it), read, never created: without
    one no erasure has happened, so nothing is suppressed."""
    import os

    if os.environ.get("CDP_PII_SALT"):
        return os.environ["CDP_PII_SALT"]
    path = root / "privacy" / "salt"
    return path.read_text().strip() if path.exists() else None


def create_app(data_dir: str | Path | None = None) -> Starlette:
    """The app landing into `<data_dir>/landing` (default `$CDP_DATA_DIR`); keys, secrets and limits are read
    now (`app.state.config`)."""
    config = CollectorConfig.from_env()
    if not config.write_keys:
        log.warning("CDP_WRITE_KEYS is empty: every event request will be refused with 401")
    root = Path(data_dir).resolve() if data_dir else default_data_dir()
    writer = LandingWriter(root / "landing")
    parser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parse")
    feed = live_feed(root)
    if feed is not None:
        writer.listeners.append(feed.offer)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        await writer.start()
        try:
            yield
        finally:
            await writer.stop()
            parser.shutdown()
            if feed is not None:
                feed.close()

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "landing": str(writer.root)})

    routes = [*tracking_routes(config, writer, parser), webhook_route(config, writer), Route("/health", health)]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(BrowserAccess, allowed_origins=config.allowed_origins)],
        exception_handlers={RequestError: error_response, HTTPException: http_error_response},
    )
    app.state.config = config
    return app
