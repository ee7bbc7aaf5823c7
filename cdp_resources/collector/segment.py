"""The Segment HTTP Tracking API: authenticate, check and unpack a request into landing lines (contract §3).

Both Python SDKs (segment-analytics-python, rudder-sdk-python) post batches to `/v1/batch`; analytics.js
uses the one-letter forms (`/v1/t`, `/v1/b`, ...), accepted too. Checks stay at the transport level
(auth, size, JSON, `type`): field-level validation is downstream, where a bad record is quarantined
with its reasons instead of being bounced to a client that cannot fix it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
from concurrent.futures import Executor
from datetime import datetime, timezone
from functools import partial

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
INLINE_BYTES = 64 * 1024  # bodies up to this size are unpacked on the event loop: a thread hop costs more
# What a client's retry of one message changes (sentAt) or what is the server's to say (receivedAt): left out of
# the content id of a message without `messageId`, so the retry gets the same id and dedupes downstream.
NOT_CONTENT = ("sentAt", "receivedAt")
SUCCESS = b'{"success":true}'
_UNAUTHORIZED = {"WWW-Authenticate": 'Basic realm="cdp collector"'}


def tracking_routes(config: CollectorConfig, writer: LandingWriter, parser: Executor) -> list[Route]:
    """The routes; bodies over `INLINE_BYTES` are unpacked on `parser`'s one thread, so that big batches queue
    there instead of holding the event loop while small requests wait."""

    def endpoint(kind: str):
        async def receive(request: Request) -> Response:
            source = _header_source(request, config)
            limit = MAX_BATCH_BYTES if kind == "batch" else MAX_MESSAGE_BYTES
            what = "a batch request" if kind == "batch" else "a message"
            raw = await read_body(request, limit, what, config.limits.body_timeout)
            unpack = partial(request_lines, raw, kind, source, config, datetime.now(timezone.utc))
            if len(raw) > INLINE_BYTES:
                lines = await asyncio.get_running_loop().run_in_executor(parser, unpack)
            else:
                lines = unpack()
            await land(writer, lines)
            return Response(SUCCESS, media_type="application/json")

        return receive

    # Batches first: the SDKs' only endpoint is matched without walking the rest.
    kinds = {"batch": "batch", "b": "batch"} | {kind: kind for kind in TYPES} | {kind[0]: kind for kind in TYPES}
    return [Route(f"/v1/{path}", endpoint(kind), methods=["POST"]) for path, kind in kinds.items()]


def request_lines(raw: bytes, kind: str, source: str | None, config: CollectorConfig, now: datetime) -> list[Line]:
    """The landing lines of one request body to `/v1/<kind>`, or the RequestError that refuses it."""
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise RequestError(400, "body must be a JSON object")
    source = source or _body_source(body, config)
    if kind == "batch":
        defaults = {key: body[key] for key in BATCH_DEFAULTS if key in body}
        return landing_lines(batch_messages(body), source, now, defaults)
    return landing_lines([single_message(body, kind)], source, now)


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
    _check_message_id(body, "the message")
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
        _check_message_id(message, f"batch[{index}]")
    return batch


def _check_message_id(message: dict, where: str) -> None:
    """A `messageId` is a string (Segment's spec). Anything else is refused rather than turned into one:
    `{"a": 1}`, `["a", 1]` and `1` have no text of their own to dedupe by, and stringifying them would make
    a number and a string that look alike one message."""
    message_id = message.get("messageId")
    if message_id is not None and not isinstance(message_id, str):
        raise RequestError(400, f"{where}.messageId must be a string, not {_json_type(message_id)}")


def _json_type(value: object) -> str:
    kinds = {dict: "an object", list: "an array", bool: "a boolean", int: "a number", float: "a number"}
    return kinds.get(type(value), type(value).__name__)


def landing_lines(messages: list[dict], source: str, now: datetime, defaults: dict | None = None) -> list[Line]:
    """Each message as received, plus batch `defaults` where absent, `messageId` when absent, `receivedAt`
    and `source`; a 413 names the first message over 32 KB as received.

    `receivedAt` is always the collector's clock, and the line lands in that hour, whatever the client says
    (as Segment's servers overwrite it): a client's own `receivedAt` is kept as `clientReceivedAt`."""
    received_at, partition = iso_z(now), partition_of(now)
    lines = []
    for index, message in enumerate(messages):
        line = dict(message)
        for key, value in (defaults or {}).items():
            line.setdefault(key, value)
        line.pop("writeKey", None)  # a credential: never written to disk
        client_received_at = line.pop("receivedAt", None)
        if line.get("messageId") in (None, ""):
            line["messageId"] = content_id(line)
        line["receivedAt"] = received_at
        if client_received_at is not None:
            line["clientReceivedAt"] = client_received_at
        line["source"] = source
        data = dumps(line)
        # What was added only makes a line longer: measure the message as received only when the line is long.
        if len(data) > MAX_MESSAGE_BYTES and (size := len(dumps(message))) > MAX_MESSAGE_BYTES:
            where = f"batch[{index}]" if defaults is not None else "the message"
            raise RequestError(413, f"{where} is {size} bytes; a message may be at most {MAX_MESSAGE_BYTES} bytes")
        lines.append(Line(source, partition, data))
    return lines


def content_id(message: dict) -> str:
    """A messageId from the content, so a client's retry of the same message (with a new `sentAt`) dedupes
    downstream."""
    content = {key: value for key, value in message.items() if key not in NOT_CONTENT}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return "cdp-" + hashlib.sha256(canonical.encode()).hexdigest()[:32]
