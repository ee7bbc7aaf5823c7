"""The online store: what the Profile API serves, kept beside the warehouse and never blocked by a run.

`CDP_ONLINE_STORE` chooses the backend: `sqlite` (default: files under `<data dir>/online/`), or a Redis URL
(`redis://127.0.0.1:6379/0`, optionally `?prefix=name` for the key prefix, default `cdp`).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

from cdp_resources.online_store.base import FORMAT, LiveEvent, OnlineStore, PersonRecord, StoreWriter
from cdp_resources.settings import data_dir as default_data_dir

SETTING = "CDP_ONLINE_STORE"
FOLDER = "online"  # under the data directory


def open_store(data_dir: str | Path | None = None, setting: str | None = None) -> OnlineStore:
    """The store `CDP_ONLINE_STORE` (or `setting`) names, for the instance at `data_dir` (default `CDP_DATA_DIR`)."""
    setting = (setting if setting is not None else os.environ.get(SETTING, "")).strip() or "sqlite"
    if setting == "sqlite":
        from cdp_resources.online_store.sqlite_store import SqliteStore

        return SqliteStore(Path(data_dir).resolve() / FOLDER if data_dir else default_data_dir() / FOLDER)
    if setting.startswith(("redis://", "rediss://", "unix://")):
        from cdp_resources.online_store.redis_store import RedisStore

        parts = urlsplit(setting)
        prefix = parse_qs(parts.query).get("prefix", ["cdp"])[0]
        query = "&".join(p for p in parts.query.split("&") if p and not p.startswith("prefix="))
        return RedisStore(urlunsplit(parts._replace(query=query)), prefix=prefix)
    raise ValueError(f"{SETTING}={setting!r}: expected `sqlite` or a redis:// URL")


__all__ = ["FORMAT", "LiveEvent", "OnlineStore", "OnlineStoreResource", "PersonRecord", "StoreWriter", "open_store", "SETTING"]


from dagster import ConfigurableResource  # noqa: E402


class OnlineStoreResource(ConfigurableResource):
    """The online store for assets: `setting` as `CDP_ONLINE_STORE` takes it (empty: read that variable)."""

    setting: str = ""

    def open(self) -> OnlineStore:
        return open_store(setting=self.setting or None)
