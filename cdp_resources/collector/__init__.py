"""The event collector: Segment HTTP Tracking API and Standard Webhooks in, durable landing files out.

Every 200 means the data is fsynced under `landing/<source>/dt=YYYY-MM-DD/hour=HH/*.jsonl` (contract §3).
"""

from cdp_resources.collector.app import create_app
from cdp_resources.collector.server import serve

__all__ = ["create_app", "serve"]
