"""Resources by environment: everything points at `CDP_DATA_DIR` unless configured otherwise."""

from dagster_dbt import DbtCliResource

from cdp_assets.dbt.project import DBT_EXECUTABLE, dbt_project
from cdp_resources import LandingZoneResource, OrdersApiResource, WarehouseResource
from cdp_resources.online_store import OnlineStoreResource


def resources() -> dict:
    return {
        "warehouse": WarehouseResource(),
        "landing_zone": LandingZoneResource(),
        "orders_api": OrdersApiResource(),
        "online_store": OnlineStoreResource(),
        "dbt": DbtCliResource(project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE),
    }
