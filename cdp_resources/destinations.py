"""Posting to an HTTP destination: signed per Standard Webhooks, with an Idempotency-Key, retried.

A batch is retried a few times within a delivery run: connection errors, timeouts, 408/425 and 5xx with
exponential backoff and full jitter, a 429 after its `Retry-After`. What the answer says about the rest of
the run is in the result:
- `permanent`: the destination refused this payload (400, 409, 410, 413, 422); retrying will not help.
- `stop`: the destination as a whole is not taking deliveries now (unreachable, still throttling us, or
  refusing us with 401/403/404/405... which is a configuration problem, not the payload's): the caller
  should leave the rest for the next run rather than spend attempts on it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

import requests
from standardwebhooks import Webhook

from cdp_resources.http import backoff, retry_after

PAYLOAD_REFUSED = {400, 409, 410, 413, 422}
TRANSIENT = {408, 425}


@dataclass(frozen=True)
class PostResult:
    ok: bool
    error: str | None = None
    permanent: bool = False
    stop: bool = False
    retries: int = 0


@dataclass
class HttpDelivery:
    url: str
    secret: str | None = None  # whsec_... ; unsigned when None
    tries: int = 3
    timeout_s: float = 10.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    # A Retry-After longer than this is not slept through inside a run: the run stops and the next one
    # picks the items up.
    max_retry_after_s: float = 60.0

    def post(self, session: requests.Session, key: str, body: bytes) -> PostResult:
        """POST `body` with `key` as Idempotency-Key and webhook-id; the same key on every retry."""
        error, stop = None, False
        for attempt in range(1, self.tries + 1):
            headers = {"Content-Type": "application/json", "Idempotency-Key": key, **self._signature(key, body)}
            delay = backoff(attempt, self.backoff_base_s, self.backoff_max_s)
            try:
                response = session.post(self.url, data=body, headers=headers, timeout=self.timeout_s)
            except requests.ConnectionError as exc:  # refused, DNS, connect timeout: the destination is away
                error, stop = f"{type(exc).__name__}: {exc}"[:300], True
            except requests.Timeout as exc:  # read timeout: the payload may or may not have been accepted
                error, stop = f"{type(exc).__name__}: {exc}"[:300], False
            else:
                if response.ok:
                    return PostResult(True, retries=attempt - 1)
                error = f"{response.status_code} {response.reason}: {response.text[:200]}".strip()
                status = response.status_code
                if status == 429:
                    wait = retry_after(response)
                    stop = True
                    if wait is not None and wait > self.max_retry_after_s:
                        return PostResult(False, f"{error} (Retry-After {wait:.0f}s)", stop=True, retries=attempt - 1)
                    delay = delay if wait is None else wait
                elif status in PAYLOAD_REFUSED:
                    return PostResult(False, error, permanent=True, retries=attempt - 1)
                elif 400 <= status < 500 and status not in TRANSIENT:
                    return PostResult(False, error, stop=True, retries=attempt - 1)
                else:
                    stop = False
            if attempt < self.tries:
                time.sleep(delay)
        return PostResult(False, error, stop=stop, retries=self.tries - 1)

    def _signature(self, key: str, body: bytes) -> dict[str, str]:
        if not self.secret:
            return {}
        now = datetime.now(timezone.utc)
        signature = Webhook(self.secret).sign(key, now, body.decode())
        return {"webhook-id": key, "webhook-timestamp": str(int(now.timestamp())), "webhook-signature": signature}
