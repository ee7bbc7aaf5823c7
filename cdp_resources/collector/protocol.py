"""What every endpoint shares: bounded body reading, strict JSON, error answers, durable acknowledgement."""

from __future__ import annotations

import json
import zlib
from datetime import datetime

from starlette.requests import Request
from starlette.responses import JSONResponse

from cdp_resources.collector.landing import LandingWriter, Line

_CODES = {400: "invalid_request", 401: "unauthorized", 404: "not_found", 413: "payload_too_large",
          415: "unsupported_encoding", 503: "unavailable"}


class RequestError(Exception):
    """An answer other than 200, with a reason the client can act on."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


async def error_response(request: Request, exc: RequestError) -> JSONResponse:
    # `code` and `message` are what the Segment and RudderStack SDKs log on a failed upload.
    body = {"success": False, "code": _CODES.get(exc.status, "error"), "message": exc.message}
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


async def read_body(request: Request, limit: int, what: str) -> bytes:
    """The body, gunzipped when `Content-Encoding: gzip`; over `limit` bytes either way is a 413."""
    too_large = RequestError(413, f"{what} is larger than the limit of {limit} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "gzip":
        return _gunzip(body, limit, too_large)
    if encoding not in ("", "identity"):
        raise RequestError(415, f"Content-Encoding {encoding!r} is not supported; use gzip or none")
    return body


def _gunzip(data: bytes, limit: int, too_large: RequestError) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)  # bounded: a small gzip bomb cannot fill memory
    except zlib.error as exc:
        raise RequestError(400, f"body is not valid gzip: {exc}") from exc
    if len(out) > limit:
        raise too_large
    if not inflater.eof:
        raise RequestError(400, "body is not valid gzip: truncated")
    return out


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
    """Wait until `lines` are on disk; a failed write is a 503 so the client retries (nothing was acknowledged)."""
    try:
        return await writer.write(lines)
    except (OSError, RuntimeError) as exc:
        raise RequestError(503, f"could not land the data, retry later: {exc}") from exc


def iso_z(moment: datetime) -> str:
    """ISO-8601 UTC with millisecond precision and a `Z`, like Segment's own timestamps."""
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"
