"""`POST /webhooks/<source>`: Standard Webhooks verification, then a durable landing at most once per id.

A source without a configured secret answers 404: nothing is listening there, which tells an operator
"configure CDP_WEBHOOK_SECRET_<SOURCE>" rather than "your signature is wrong". Replays (same
`webhook-id`) answer 200 and land nothing: the landing writer keeps the ids in a durable index.
"""

from __future__ import annotations

from datetime import datetime, timezone

from standardwebhooks.webhooks import WebhookVerificationError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cdp_resources.collector.config import CollectorConfig
from cdp_resources.collector.landing import LandingWriter, Line, partition_of
from cdp_resources.collector.protocol import RequestError, dumps, iso_z, land, parse_json, read_body

MAX_WEBHOOK_BYTES = 1024 * 1024


def webhook_route(config: CollectorConfig, writer: LandingWriter) -> Route:
    async def receive(request: Request) -> JSONResponse:
        source = request.path_params["source"]
        verifier = config.webhook(source)
        if verifier is None:
            raise RequestError(404, f"no webhook secret is configured for source {source!r}")
        if not request.headers.get("webhook-id", "x").strip():  # a missing header is the verifier's 401
            raise RequestError(400, "webhook-id header is empty: it is what replays are deduplicated by")
        raw = await read_body(request, MAX_WEBHOOK_BYTES, "a webhook body", config.limits.body_timeout)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(400, "webhook body is not UTF-8 JSON") from None
        try:
            # Checks the three headers, the 5-minute timestamp tolerance and the HMAC-SHA256 signature.
            verifier.verify(text, dict(request.headers), json_parse=False)
        except WebhookVerificationError as exc:
            raise RequestError(401, f"webhook rejected: {exc}") from None
        except ValueError:  # a signature header that is not "v1,<base64>"
            raise RequestError(401, "webhook rejected: malformed webhook-signature header") from None
        body = parse_json(raw)
        webhook_id = request.headers["webhook-id"]
        now = datetime.now(timezone.utc)
        record = {"webhook_id": webhook_id, "source": source, "receivedAt": iso_z(now), "body": body}
        [landed] = await land(writer, [Line(source, partition_of(now), dumps(record), dedupe_key=webhook_id)])
        return JSONResponse({"success": True, "duplicate": not landed})

    return Route("/webhooks/{source}", receive, methods=["POST"])
