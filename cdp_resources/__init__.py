"""Configurable resources: warehouse, file inputs, HTTP clients, the collector app.

Imported lazily: Spark executors import `cdp_resources.settings` (through the identity rules) and should
not pay for Dagster on every Python worker."""

__all__ = ["LandingZoneResource", "OrdersApiResource", "WarehouseResource"]
_MODULES = {"LandingZoneResource": "landing", "OrdersApiResource": "orders_api", "WarehouseResource": "warehouse"}


def __getattr__(name: str):
    if name in _MODULES:
        import importlib

        return getattr(importlib.import_module(f"cdp_resources.{_MODULES[name]}"), name)
    raise AttributeError(f"module 'cdp_resources' has no attribute {name!r}")
