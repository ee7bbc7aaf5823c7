"""Resources by environment: everything points at `CDP_DATA_DIR` unless configured otherwise."""

from dagster_dbt import DbtCliResource

from cdp_assets.dbt.project import DBT_EXECUTABLE, dbt_project
from cdp_resources import LandingZoneResource, OrdersApiResource, WarehouseResource


def resources() -> dict:
    return {
        "warehouse": WarehouseResource(),
        "landing_zone": LandingZoneResource(),
        "orders_api": OrdersApiResource(),
        "dbt": DbtCliResource(project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE),
    }
