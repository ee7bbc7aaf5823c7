"""Posting to an HTTP destination: signed per Standard Webhooks, with an Idempotency-Key, retried.

A batch is retried a few times within a delivery run: connection errors, timeouts, 408/425 and 5xx with
exponential backoff and full jitter, a 429 after its `Retry-After`. What the answer says is in the result:
- `judged`: the destination looked at this payload and refused it (a 4xx about the request: 400, 409,
  413, 422...). Only such an answer spends one of an item's attempts; `permanent` ones (400, 413, 422)
  will never be accepted as they are.
- otherwise the destination was not taking deliveries (unreachable, timing out, 5xx, throttling, or
  refusing us with 401/403/404/405/407/410, which is our configuration, not the payload): the items
  wait, with no attempt spent. `stop` says the rest of the run should wait too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

import requests
from standardwebhooks import Webhook

from cdp_resources.http import backoff, retry_after

PAYLOAD_REFUSED = {400, 413, 422}  # judged, and never accepted as it is
NOT_US = {401, 403, 404, 405, 407, 410}  # the destination refuses us (credentials, URL), not the payload
TRANSIENT = {408, 425}


@dataclass(frozen=True)
class PostResult:
    ok: bool
    error: str | None = None
    judged: bool = False  # the answer was about this payload: an attempt is spent
    permanent: bool = False  # judged, and retrying the same payload will not help
    stop: bool = False  # the destination is away: leave the rest of the run for later
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
                elif status in NOT_US:
                    return PostResult(False, error, stop=True, retries=attempt - 1)
                elif 400 <= status < 500 and status not in TRANSIENT:
                    return PostResult(False, error, judged=True, permanent=status in PAYLOAD_REFUSED, retries=attempt - 1)
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
