"""What the collector accepts, read once from the environment when the app is created (contract §5).

`CDP_WRITE_KEYS` is a comma-separated list of `key` (events land in source `web`) or `key:source`.
`CDP_WEBHOOK_SECRET_<SOURCE>` holds the Standard Webhooks secret (`whsec_<base64>`) of one webhook source.
`CDP_COLLECTOR_ALLOWED_ORIGINS` lists the web origins whose pages may send events (`*`, the default: any,
since a browser's write key is public anyway, as with Segment). `CDP_COLLECTOR_HEADER_TIMEOUT`,
`CDP_COLLECTOR_BODY_TIMEOUT` (seconds) and `CDP_COLLECTOR_MAX_CONNECTIONS` bound what one client can hold.
A bad entry fails at start-up, naming the variable, rather than as 401s later.
"""

from __future__ import annotations

import hmac
import os
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from standardwebhooks import Webhook

DEFAULT_SOURCE = "web"
SECRET_PREFIX = "CDP_WEBHOOK_SECRET_"
# A source is a directory under landing/; names starting with '_' or '.' are the collector's own.
SOURCE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
ANY_ORIGIN = "*"


@dataclass(frozen=True)
class Limits:
    """How long and how many: what a slow or hostile client can hold of the server."""

    header_timeout: float = 10.0  # from connecting (or the previous answer) to the end of the request headers
    body_timeout: float = 30.0  # to read a whole body (500 KB at 17 KB/s)
    max_connections: int = 1000  # open at once; above it the oldest unfinished request is dropped

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Limits:
        environ = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            header_timeout=_positive(environ, "CDP_COLLECTOR_HEADER_TIMEOUT", defaults.header_timeout, float),
            body_timeout=_positive(environ, "CDP_COLLECTOR_BODY_TIMEOUT", defaults.body_timeout, float),
            max_connections=_positive(environ, "CDP_COLLECTOR_MAX_CONNECTIONS", defaults.max_connections, int),
        )


@dataclass(frozen=True)
class CollectorConfig:
    write_keys: dict[str, str] = field(default_factory=dict)  # write key -> source
    webhooks: dict[str, Webhook] = field(default_factory=dict)  # env suffix (WEB, CRM_X) -> verifier
    allowed_origins: tuple[str, ...] = (ANY_ORIGIN,)  # web origins whose pages may send events
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> CollectorConfig:
        environ = os.environ if environ is None else environ
        write_keys = parse_write_keys(environ.get("CDP_WRITE_KEYS", ""))
        origins = parse_origins(environ.get("CDP_COLLECTOR_ALLOWED_ORIGINS", ANY_ORIGIN))
        webhooks = {}
        for name, secret in environ.items():
            if name.startswith(SECRET_PREFIX) and secret.strip():
                try:
                    webhooks[name[len(SECRET_PREFIX) :]] = Webhook(secret.strip())
                except Exception as exc:
                    raise ValueError(f"{name} is not a Standard Webhooks secret (whsec_<base64>): {exc}") from exc
        for source in set(write_keys.values()):
            if secret_suffix(source) in webhooks:
                raise ValueError(
                    f"source {source!r} gets both Segment events and webhooks; give the webhooks a source of their own"
                )
        return cls(write_keys, webhooks, origins, Limits.from_env(environ))

    def source_of(self, write_key: str | None) -> str | None:
        """The source a write key lands in, or None. Compares every key in constant time."""
        if not write_key:
            return None
        found = None
        for key, source in self.write_keys.items():
            if hmac.compare_digest(key.encode(), write_key.encode()):
                found = source
        return found

    def webhook(self, source: str) -> Webhook | None:
        return self.webhooks.get(secret_suffix(source)) if SOURCE_NAME.fullmatch(source) else None


def parse_write_keys(value: str) -> dict[str, str]:
    keys = {}
    for entry in filter(None, (part.strip() for part in value.split(","))):
        key, _, source = (part.strip() for part in entry.partition(":"))
        source = source or DEFAULT_SOURCE
        if not key:
            raise ValueError(f"CDP_WRITE_KEYS: entry {entry!r} has no key")
        if not SOURCE_NAME.fullmatch(source):
            raise ValueError(f"CDP_WRITE_KEYS: source {source!r} must match {SOURCE_NAME.pattern}")
        keys[key] = source
    return keys


def parse_origins(value: str) -> tuple[str, ...]:
    """`*`, or origins as browsers send them in `Origin`: `scheme://host[:port]`, no path, no trailing slash."""
    origins = tuple(filter(None, (part.strip().lower() for part in value.split(","))))
    if not origins or ANY_ORIGIN in origins:
        return (ANY_ORIGIN,)
    for origin in origins:
        parts = urlsplit(origin)
        if origin != "null" and (parts.scheme not in ("http", "https") or not parts.hostname
                                 or parts.path or parts.query or parts.fragment or parts.username):
            raise ValueError(
                f"CDP_COLLECTOR_ALLOWED_ORIGINS: {origin!r} is not an origin like https://shop.example.com"
            )
    return origins


def _positive(environ, name: str, default, kind):
    value = environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = kind(value)
    except ValueError:
        number = 0
    if not number > 0 or number == float("inf"):
        raise ValueError(f"{name}: {value!r} is not a positive {kind.__name__}")
    return number


def secret_suffix(source: str) -> str:
    return source.upper().replace("-", "_")
