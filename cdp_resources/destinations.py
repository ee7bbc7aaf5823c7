"""Posting to an HTTP destination: signed per Standard Webhooks, with an Idempotency-Key, retried.

A batch is retried a few times within a delivery run (connection errors, timeouts, 5xx; a 429 waits for its
`Retry-After`). A 4xx other than 408/429 will not get better by retrying and is reported as permanent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

import requests
from standardwebhooks import Webhook

from cdp_resources.http import backoff, retry_after


@dataclass(frozen=True)
class PostResult:
    ok: bool
    error: str | None = None
    permanent: bool = False
    retries: int = 0


@dataclass
class HttpDelivery:
    url: str
    secret: str | None = None  # whsec_... ; unsigned when None
    tries: int = 3
    timeout_s: float = 10.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0

    def post(self, session: requests.Session, key: str, body: bytes) -> PostResult:
        error = None
        for attempt in range(1, self.tries + 1):
            headers = {"Content-Type": "application/json", "Idempotency-Key": key, **self._signature(key, body)}
            delay = backoff(attempt, self.backoff_base_s, self.backoff_max_s)
            try:
                response = session.post(self.url, data=body, headers=headers, timeout=self.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
            else:
                if response.ok:
                    return PostResult(True, retries=attempt - 1)
                error = f"{response.status_code} {response.reason}: {response.text[:200]}"
                if response.status_code == 429:
                    delay = retry_after(response) or delay
                elif response.status_code < 500 and response.status_code != 408:
                    return PostResult(False, error, permanent=True, retries=attempt - 1)
            if attempt < self.tries:
                time.sleep(delay)
        return PostResult(False, error, retries=self.tries - 1)

    def _signature(self, key: str, body: bytes) -> dict[str, str]:
        if not self.secret:
            return {}
        now = datetime.now(timezone.utc)
        signature = Webhook(self.secret).sign(key, now, body.decode())
        return {"webhook-id": key, "webhook-timestamp": str(int(now.timestamp())), "webhook-signature": signature}
