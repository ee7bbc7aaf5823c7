"""What every HTTP client here shares: backoff with full jitter, and honouring `Retry-After`."""

from __future__ import annotations

import random
import time
from email.utils import parsedate_to_datetime

import requests


def backoff(attempt: int, base_s: float, cap_s: float) -> float:
    """Exponential backoff with full jitter (AWS architecture blog's recommendation)."""
    return random.uniform(0, min(cap_s, base_s * 2 ** (attempt - 1)))


def retry_after(response: requests.Response) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
