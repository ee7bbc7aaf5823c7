"""CORS on the Tracking API, so that browser SDKs on a site's own origin can send to the collector's.

analytics.js / `@segment/analytics-next` and `@rudderstack/analytics-js` post with an `Authorization` header
(and RudderStack an `AnonymousId` one), so browsers ask first (`OPTIONS` preflight). Starlette's
`CORSMiddleware` answers; around it, an origin outside `CDP_COLLECTOR_ALLOWED_ORIGINS` is refused with 403 for
preflights and posts alike (a `sendBeacon` post needs no preflight), and every refusal is logged.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from cdp_resources.collector.protocol import RequestError, error_response, log_refusal

PREFIX = "/v1/"


class BrowserAccess(CORSMiddleware):
    def __init__(self, app: ASGIApp, allowed_origins: tuple[str, ...]):
        # Any request header: the SDKs add their own (X-Retry-Count, AnonymousId), and with no cookies
        # (no credentials) allowing them exposes nothing. A day's preflight cache spares a round trip per page.
        super().__init__(app, allow_origins=allowed_origins, allow_methods=["POST"], allow_headers=["*"],
                         allow_private_network=True, max_age=86400)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None:  # not a browser: nothing to add
            await self.app(scope, receive, send)
            return
        if not self.is_allowed_origin(origin):
            refusal = RequestError(403, f"origin {origin} may not send events: it is not in CDP_COLLECTOR_ALLOWED_ORIGINS")
            await (await error_response(Request(scope), refusal))(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            response = self.preflight_response(request_headers=headers)
            if response.status_code != 200:
                log_refusal(response.status_code, response.body.decode(), scope.get("client"), "OPTIONS", scope["path"])
            await response(scope, receive, send)
            return
        await self.simple_response(scope, receive, send, request_headers=headers)
