"""Configurable resources: warehouse, file inputs, HTTP clients, the collector app."""

from cdp_resources.landing import LandingZoneResource
from cdp_resources.orders_api import OrdersApiResource
from cdp_resources.warehouse import WarehouseResource

__all__ = ["LandingZoneResource", "OrdersApiResource", "WarehouseResource"]
