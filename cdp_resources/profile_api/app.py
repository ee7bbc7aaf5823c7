"""`cdp serve`: the Profile API (Segment's paths and shapes) and the staff 360 page, read from the online store.

Every route needs HTTP Basic auth with a token from `CDP_PROFILE_API_TOKENS` as the user name (the password is
ignored, as Segment does); the staff page too, so a browser asks for it once and its requests carry it.
Errors are Segment's: `{"error": {"code", "message"}}`. The store is read on the event loop: a look-up is a few
key reads (SQLite in WAL mode, or Redis), cheaper than a hop to a thread.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from cdp_resources.online_store import OnlineStore, open_store
from cdp_resources.profile_api import views
from cdp_resources.settings import config_dir

log = logging.getLogger("cdp_resources.profile_api")
TOKENS_ENV = "CDP_PROFILE_API_TOKENS"
PAGE_HTML = Path(__file__).with_name("staff.html")
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="cdp profile api"'}
WHAT = {"traits": views.traits, "external_ids": views.external_ids, "links": views.links, "segments": views.segments}


def tokens_from_env() -> list[str]:
    return [t.strip() for t in os.environ.get(TOKENS_ENV, "").split(",") if t.strip()]


def _error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _phone_region() -> str:
    try:
        from cdp_assets.identity.rules import load_identity_rules

        return load_identity_rules(config_dir() / "identity.yaml").default_phone_region
    except Exception:  # noqa: BLE001 (no identity rules: the contract's default region)
        return "US"


def create_app(data_dir: str | Path | None = None, store: OnlineStore | None = None, tokens: list[str] | None = None) -> Starlette:
    """The app over the store `CDP_ONLINE_STORE` names (or `store`); tokens are read now."""
    tokens = [t.encode() for t in (tokens if tokens is not None else tokens_from_env())]
    if not tokens:
        log.warning("%s is empty: every request will be refused with 401", TOKENS_ENV)
    store = store or open_store(data_dir)
    region = _phone_region()

    def authorized(request: Request) -> bool:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user = base64.b64decode(encoded.strip(), validate=True).partition(b":")[0]
        except (binascii.Error, ValueError):
            return False
        return any(hmac.compare_digest(user, token) for token in tokens)  # every token compared: no timing hint

    def refused() -> JSONResponse:
        return _error(401, "authentication_error", f"use HTTP Basic auth with a token from {TOKENS_ENV} as the user name",
                      _CHALLENGE)

    async def profile(request: Request) -> Response:
        if not authorized(request):
            return refused()
        what = request.path_params["what"]
        if what not in WHAT and what != "events":
            return _error(404, "not_found", f"no such resource {what!r}: traits, events, external_ids, links or segments")
        if request.path_params["collection"] != "users":
            return _error(404, "not_found", "only the users collection is served")
        url = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path  # as the client spelled it
        try:
            person = views.find_person(store, request.path_params["external_id"], region)
            if what == "events":
                body = views.events(store, person, request.query_params, url)
            else:
                body = WHAT[what](person, request.query_params, url)
        except views.NotFound as exc:
            return _error(404, "not_found", str(exc))
        except views.BadRequest as exc:
            return _error(400, "validation_error", str(exc))
        return JSONResponse(body)

    async def page(request: Request) -> Response:
        if not authorized(request):
            return refused()
        return HTMLResponse(PAGE_HTML.read_text(), headers={"Cache-Control": "no-store"})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "store": store.kind})

    async def not_found(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, "not_found" if exc.status_code == 404 else "invalid_request_error", str(exc.detail))

    @asynccontextmanager
    async def lifespan(app: Starlette):
        try:
            yield
        finally:
            store.close()

    routes = [
        Route("/", page),
        Route("/health", health),
        Route("/favicon.ico", lambda request: Response(status_code=204)),  # browsers ask; nothing to show
        Route("/v1/spaces/{space}/collections/{collection}/profiles/{external_id}/{what}", profile),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: not_found})
    app.state.store = store
    return app


def serve(host: str = "127.0.0.1", port: int = 8089, data_dir: str | Path | None = None, workers: int = 1) -> None:
    """Serve until stopped; `workers` > 1 runs that many processes on one port (each with its own store
    connection), for more than one core's worth of requests."""
    import uvicorn

    options = dict(host=host, port=port, access_log=False, server_header=False, log_level="info")
    if workers > 1:
        if data_dir is not None:
            os.environ["CDP_DATA_DIR"] = str(data_dir)
        uvicorn.run("cdp_resources.profile_api.app:create_app", factory=True, workers=workers, **options)
        return
    app = create_app(data_dir)
    log.info("Profile API on http://%s:%d (store: %s)", host, port, app.state.store.describe())
    uvicorn.run(app, **options)
