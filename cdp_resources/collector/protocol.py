"""What every endpoint shares: bounded body reading, strict JSON, error answers, durable acknowledgement."""

from __future__ import annotations

import asyncio
import json
import logging
import zlib
from datetime import datetime

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from cdp_resources.collector.landing import LandingWriter, Line

log = logging.getLogger("cdp_resources.collector")

_CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 408: "request_timeout", 413: "payload_too_large", 415: "unsupported_encoding",
          431: "headers_too_large", 499: "client_closed_request", 503: "unavailable"}
CLOSE = {"Connection": "close"}  # the rest of the request is not read: the connection cannot carry another


class RequestError(Exception):
    """An answer other than 200, with a reason the client can act on."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


async def error_response(request: Request, exc: RequestError) -> JSONResponse:
    # `code` and `message` are what the Segment and RudderStack SDKs log on a failed upload.
    log_refusal(exc.status, exc.message, request.client, request.method, request.url.path)
    return JSONResponse(refusal_body(exc.status, exc.message), status_code=exc.status, headers=exc.headers)


def refusal_body(status: int, message: str) -> dict:
    return {"success": False, "code": _CODES.get(status, "error"), "message": message}


async def http_error_response(request: Request, exc: HTTPException) -> JSONResponse:
    """The router's own refusals (no such path, wrong method) answered and logged like ours."""
    return await error_response(request, RequestError(exc.status_code, exc.detail, exc.headers))


def log_refusal(status: int, reason: str, client, method: str | None, path: str | None) -> None:
    """One line per refused request: status, what, who and why. Never a body, a query string or a header
    value other than `Origin`: write keys travel in those. A client that left (499) was not refused."""
    address = f"{client[0]}:{client[1]}" if client else "unknown"
    what = f"{method} {_printable(path, 200)}" if method else "connection"
    level = logging.DEBUG if status == 499 else logging.WARNING
    log.log(level, "refused %s %s from %s: %s", status, what, address, _printable(reason, 300))


def _printable(text: str | None, limit: int) -> str:
    """One line of bounded length whatever a client put in it."""
    text = "" if text is None else str(text)
    text = text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "…"


async def read_body(request: Request, limit: int, what: str, timeout: float) -> bytes:
    """The body, gunzipped when `Content-Encoding: gzip`; over `limit` bytes either way is a 413, and not
    all there within `timeout` seconds a 408 (a client trickling a body holds the connection no longer)."""
    too_large = RequestError(413, f"{what} is larger than the limit of {limit} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
    except TimeoutError:
        raise RequestError(408, f"{what} did not arrive within {timeout:g} s", CLOSE) from None
    except ClientDisconnect:
        raise RequestError(499, f"the client closed the connection before sending all of {what}") from None
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "gzip":
        return _gunzip(body, limit, too_large)
    if encoding not in ("", "identity"):
        raise RequestError(415, f"Content-Encoding {encoding!r} is not supported; use gzip or none")
    return body


def _gunzip(data: bytes, limit: int, too_large: RequestError) -> bytes:
    """Every member of a gzip stream (RFC 1952 allows several, concatenated), or a 400 saying what is wrong."""
    out, size, member = [], 0, 1
    while True:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            part = inflater.decompress(data, limit + 1 - size)  # bounded: a small gzip bomb cannot fill memory
        except zlib.error as exc:
            raise RequestError(400, f"body is not valid gzip (member {member}): {exc}") from exc
        size += len(part)
        if size > limit:
            raise too_large
        if not inflater.eof:
            raise RequestError(400, f"body is not valid gzip (member {member}): truncated")
        out.append(part)
        data = inflater.unused_data
        if not data.strip(b"\0"):  # the end, or the zero padding gzip(1) also tolerates
            return b"".join(out)
        member += 1


def parse_json(data: bytes) -> object:
    """Strict JSON: NaN/Infinity and invalid UTF-8 are errors, as they would be for every reader downstream."""
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RequestError(400, f"body is not valid JSON: {exc}") from exc


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)  # reused: cheaper per call


def dumps(value: object) -> bytes:
    """One compact UTF-8 JSON line."""
    try:
        return _ENCODER.encode(value).encode()
    except UnicodeEncodeError as exc:  # a lone surrogate escape like "\\ud800" has no UTF-8 form
        raise RequestError(400, f"body holds a string that is not valid Unicode: {exc.reason}") from exc
    except ValueError as exc:  # 1e999 parses as infinity, which JSON cannot write back
        raise RequestError(400, f"body holds a number out of range: {exc}") from exc


async def land(writer: LandingWriter, lines: list[Line]) -> list[bool]:
    """Wait until `lines` are on disk; a failed write is a 503 so the client retries (nothing was acknowledged).

    Every endpoint lands through here: when this returns, `lines` are durable (those marked True new), which
    makes it the one place to hand acknowledged lines on to anything else."""
    try:
        landed = await writer.write(lines)
    except (OSError, RuntimeError) as exc:
        raise RequestError(503, f"could not land the data, retry later: {exc}") from exc
    fresh = [line.data for line, new in zip(lines, landed) if new]
    for listener in writer.listeners:
        try:
            listener(fresh)
        except Exception as exc:  # noqa: BLE001 (what listens is a view; the lines are durable and acknowledged)
            log.warning("a listener of landed lines failed: %s", exc)
    return landed


def iso_z(moment: datetime) -> str:
    """ISO-8601 UTC with millisecond precision and a `Z`, like Segment's own timestamps."""
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"
