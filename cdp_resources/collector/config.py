"""What the collector accepts, read once from the environment when the app is created (contract §5).

`CDP_WRITE_KEYS` is a comma-separated list of `key` (events land in source `web`) or `key:source`.
`CDP_WEBHOOK_SECRET_<SOURCE>` holds the Standard Webhooks secret (`whsec_<base64>`) of one webhook source.
A bad entry fails at start-up, naming the variable, rather than as 401s later.
"""

from __future__ import annotations

import hmac
import os
import re
from dataclasses import dataclass, field

from standardwebhooks import Webhook

DEFAULT_SOURCE = "web"
SECRET_PREFIX = "CDP_WEBHOOK_SECRET_"
# A source is a directory under landing/; names starting with '_' or '.' are the collector's own.
SOURCE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


@dataclass(frozen=True)
class CollectorConfig:
    write_keys: dict[str, str] = field(default_factory=dict)  # write key -> source
    webhooks: dict[str, Webhook] = field(default_factory=dict)  # env suffix (WEB, CRM_X) -> verifier

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> CollectorConfig:
        environ = os.environ if environ is None else environ
        write_keys = parse_write_keys(environ.get("CDP_WRITE_KEYS", ""))
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
        return cls(write_keys, webhooks)

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


def secret_suffix(source: str) -> str:
    return source.upper().replace("-", "_")
