"""The shop's orders REST API, pulled with `requests`.

The API answers `GET /orders?cursor=<c>&limit=<n>` with `{"data": [...], "next_cursor": "<c>" | null}`,
orders sorted by (created_at, order_id); the cursor is the position of the last order returned, so an
extract can stop anywhere and resume from the last committed position. The API's address is configuration:
without it the pull fails, naming the variable (the demo's stand-in API is `cdp_assets.sample_orders_api`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import requests
from dagster import ConfigurableResource

from cdp_resources.http import backoff, retry_after


class ApiError(RuntimeError):
    """The API kept failing after every retry, or answered with a client error."""


class OrdersApiNotConfigured(ApiError):
    """No base URL: the environment variable that should hold it is unset."""


class OrdersApiResource(ConfigurableResource):
    """Base URL from `url`, else from the environment variable `base_url_env` (default `CDP_ORDERS_API_URL`).

    Transient failures (connection errors, timeouts, 5xx) are retried with exponential backoff and full
    jitter; 429 waits for `Retry-After`; calls are spaced to stay under `calls_per_minute`.
    """

    url: str = ""
    base_url_env: str = "CDP_ORDERS_API_URL"
    page_size: int = 500
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_attempts: int = 6
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    calls_per_minute: int = 5000

    def base_url(self) -> str:
        url = (self.url or os.environ.get(self.base_url_env, "")).strip()
        if not url:
            raise OrdersApiNotConfigured(
                f"{self.base_url_env} is not set: it must hold the orders API's base URL (e.g. https://shop.example.com/api)"
            )
        return url.rstrip("/")

    def pages(self, base_url: str, cursor: str | None) -> Iterator[tuple[list[dict], str | None]]:
        """(orders, cursor after them) page by page, starting after `cursor`.

        After the last page the cursor stays at the one that fetched it, since the API's cursors are
        opaque: the next pull re-reads that page and picks up what was added to it. A page whose next
        cursor does not move forward ends the pull (an API repeating a page must not make us loop);
        a record already held is not stored twice (the extract compares each record with what it holds).
        """
        pacer = _Pacer(self.calls_per_minute)
        with requests.Session() as session:
            while True:
                params = {"limit": self.page_size, **({"cursor": cursor} if cursor else {})}
                body = self._get_json(session, f"{base_url}/orders", params, pacer)
                orders = body.get("data") or []
                next_cursor = body.get("next_cursor")
                if orders:
                    yield orders, next_cursor or cursor
                if not orders or not next_cursor or next_cursor == cursor:
                    return
                cursor = next_cursor

    def _get_json(self, session: requests.Session, url: str, params: dict, pacer: "_Pacer") -> dict:
        for attempt in range(1, self.max_attempts + 1):
            pacer.wait()
            try:
                response = session.get(url, params=params, timeout=(self.connect_timeout_s, self.read_timeout_s))
            except (requests.ConnectionError, requests.Timeout) as exc:
                failure, delay = f"{type(exc).__name__}: {exc}", self._backoff(attempt)
            else:
                if response.status_code == 429:
                    failure, delay = "429 Too Many Requests", retry_after(response) or self._backoff(attempt)
                elif response.status_code >= 500:
                    failure, delay = f"{response.status_code} {response.reason}", self._backoff(attempt)
                elif response.status_code >= 400:
                    raise ApiError(f"GET {response.url}: {response.status_code} {response.text[:200]}")
                else:
                    return response.json()
            if attempt == self.max_attempts:
                raise ApiError(f"GET {url} failed {attempt} times, last: {failure}")
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> float:
        return backoff(attempt, self.backoff_base_s, self.backoff_max_s)


class _Pacer:
    """Spaces calls evenly so a pull never exceeds the configured calls per minute."""

    def __init__(self, calls_per_minute: int):
        self.interval = 60.0 / calls_per_minute if calls_per_minute > 0 else 0.0
        self.next_at = 0.0

    def wait(self) -> None:
        now = time.monotonic()
        if now < self.next_at:
            time.sleep(self.next_at - now)
        self.next_at = max(now, self.next_at) + self.interval
