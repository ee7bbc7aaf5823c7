"""Resources by environment: everything points at `CDP_DATA_DIR` unless configured otherwise."""

from dagster_dbt import DbtCliResource

from cdp_assets.dbt.project import DBT_EXECUTABLE, dbt_project
from cdp_resources import LandingZoneResource, OrdersApiResource, WarehouseResource


class DbtResource(DbtCliResource):
    """dagster-dbt's dbt resource without the in-process dbt adapter it sets up before every command: that set-up
    parses every dbt macro (4-9 s on the project's 2-core machine, at each dbt step) and serves only row counts
    and column metadata fetched through dbt, which this project does not use (it counts rows itself,
    cdp_assets/dbt/assets.py). dbt itself runs as before."""

    def _initialize_dbt_core_adapter(self, args):  # dagster-dbt 0.29: None means "no adapter", as on failure
        return None


def resources() -> dict:
    return {
        "warehouse": WarehouseResource(),
        "landing_zone": LandingZoneResource(),
        "orders_api": OrdersApiResource(),
        "dbt": DbtResource(project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE),
    }
