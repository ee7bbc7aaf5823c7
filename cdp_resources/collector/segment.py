"""The Segment HTTP Tracking API: authenticate, check and unpack a request into landing lines (contract §3).

Both Python SDKs (segment-analytics-python, rudder-sdk-python) post batches to `/v1/batch`; analytics.js
uses the one-letter forms (`/v1/t`, `/v1/b`, ...), accepted too. Checks stay at the transport level
(auth, size, JSON, `type`): field-level validation is downstream, where a bad record is quarantined
with its reasons instead of being bounced to a client that cannot fix it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from datetime import datetime, timezone

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cdp_resources.collector.config import CollectorConfig
from cdp_resources.collector.landing import LandingWriter, Line, partition_of
from cdp_resources.collector.protocol import RequestError, dumps, iso_z, land, parse_json, read_body

TYPES = ("track", "identify", "page", "screen", "group", "alias")
MAX_MESSAGE_BYTES = 32 * 1024  # Segment's limits
MAX_BATCH_BYTES = 500 * 1024
BATCH_DEFAULTS = ("context", "integrations", "sentAt")  # batch-level fields each message inherits when absent
SUCCESS = b'{"success":true}'
_UNAUTHORIZED = {"WWW-Authenticate": 'Basic realm="cdp collector"'}


def tracking_routes(config: CollectorConfig, writer: LandingWriter) -> list[Route]:
    def endpoint(kind: str):
        async def receive(request: Request) -> Response:
            source = _header_source(request, config)
            limit = MAX_BATCH_BYTES if kind == "batch" else MAX_MESSAGE_BYTES
            raw = await read_body(request, limit, "a batch request" if kind == "batch" else "a message")
            body = parse_json(raw)
            if not isinstance(body, dict):
                raise RequestError(400, "body must be a JSON object")
            source = source or _body_source(body, config)
            now = datetime.now(timezone.utc)
            if kind == "batch":
                defaults = {key: body[key] for key in BATCH_DEFAULTS if key in body}
                lines = landing_lines(batch_messages(body), source, now, defaults)
            else:
                lines = landing_lines([single_message(body, kind)], source, now)
            await land(writer, lines)
            return Response(SUCCESS, media_type="application/json")

        return receive

    # Batches first: the SDKs' only endpoint is matched without walking the rest.
    kinds = {"batch": "batch", "b": "batch"} | {kind: kind for kind in TYPES} | {kind[0]: kind for kind in TYPES}
    return [Route(f"/v1/{path}", endpoint(kind), methods=["POST"]) for path, kind in kinds.items()]


def _header_source(request: Request, config: CollectorConfig) -> str | None:
    """The source of the Basic-auth write key; None when there is no Authorization header at all."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        raise RequestError(401, "use HTTP Basic auth with the write key as user name", _UNAUTHORIZED)
    try:
        write_key = base64.b64decode(token.strip(), validate=True).decode().partition(":")[0]
    except (binascii.Error, UnicodeDecodeError):
        raise RequestError(401, "Authorization header is not valid Basic auth", _UNAUTHORIZED) from None
    return _source_of(write_key, config)


def _body_source(body: dict, config: CollectorConfig) -> str:
    write_key = body.get("writeKey")
    if not isinstance(write_key, str):
        raise RequestError(401, "no write key: send it as the Basic auth user name or as `writeKey`", _UNAUTHORIZED)
    return _source_of(write_key, config)


def _source_of(write_key: str, config: CollectorConfig) -> str:
    source = config.source_of(write_key)
    if source is None:
        raise RequestError(401, "unknown write key", _UNAUTHORIZED)
    return source


def single_message(body: dict, kind: str) -> dict:
    """`/v1/track` and friends: the endpoint names the type, which the body may repeat but not contradict."""
    body.setdefault("type", kind)
    if body["type"] != kind:
        raise RequestError(400, f"type {body['type']!r} does not match the endpoint /v1/{kind}")
    return body


def batch_messages(body: dict) -> list[dict]:
    """The messages of a batch, or a 400 naming the first bad index (the whole batch is refused)."""
    batch = body.get("batch")
    if not isinstance(batch, list):
        raise RequestError(400, "a batch request needs a `batch` list of messages")
    for index, message in enumerate(batch):
        if not isinstance(message, dict):
            raise RequestError(400, f"batch[{index}] is not a JSON object")
        kind = message.get("type")
        if kind not in TYPES:
            problem = "has no `type`" if kind is None else f"has unknown type {kind!r}"
            raise RequestError(400, f"batch[{index}] {problem}; expected one of {', '.join(TYPES)}")
    return batch


def landing_lines(messages: list[dict], source: str, now: datetime, defaults: dict | None = None) -> list[Line]:
    """Each message as received, plus batch `defaults` where absent, `messageId` and `receivedAt` when absent,
    and `source`; a 413 names the first message over 32 KB as received."""
    received_at, default_partition = iso_z(now), partition_of(now)
    lines = []
    for index, message in enumerate(messages):
        line = dict(message)
        for key, value in (defaults or {}).items():
            line.setdefault(key, value)
        line.pop("writeKey", None)  # a credential: never written to disk
        if line.get("messageId") in (None, ""):
            line["messageId"] = content_id(line)
        if line.get("receivedAt") is None:
            line["receivedAt"] = received_at
            partition = default_partition
        else:
            partition = _partition_of_text(line["receivedAt"]) or default_partition
        line["source"] = source
        data = dumps(line)
        # What was added only makes a line longer: measure the message as received only when the line is long.
        if len(data) > MAX_MESSAGE_BYTES and (size := len(dumps(message))) > MAX_MESSAGE_BYTES:
            where = f"batch[{index}]" if defaults is not None else "the message"
            raise RequestError(413, f"{where} is {size} bytes; a message may be at most {MAX_MESSAGE_BYTES} bytes")
        lines.append(Line(source, partition, data))
    return lines


def content_id(message: dict) -> str:
    """A messageId from the content, so a client's retry of the same message dedupes downstream."""
    canonical = json.dumps(message, sort_keys=True, separators=(",", ":"))
    return "cdp-" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _partition_of_text(value: object) -> str | None:
    """The hour of a client-supplied `receivedAt`, or None when it is not an ISO-8601 time."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
        return partition_of(moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc))
    except (ValueError, OverflowError):
        return None
