"""Resources by environment: everything points at `CDP_DATA_DIR` unless configured otherwise."""

from functools import cached_property
from importlib import metadata

from dagster_dbt import DbtCliResource
from packaging import version

from cdp_assets.dbt.project import DBT_EXECUTABLE, dbt_project
from cdp_resources import LandingZoneResource, OrdersApiResource, WarehouseResource
from cdp_resources.online_store import OnlineStoreResource


class DbtResource(DbtCliResource):
    """dagster-dbt's dbt resource without two costs it pays in each run's process before dbt starts: the
    in-process dbt adapter it sets up before every command (a parse of every dbt macro, 4-9 s a step on the
    project's 2-core machine), which serves only row counts and column metadata fetched through dbt, which
    this project does not use (it counts rows itself, cdp_assets/dbt/assets.py); and `dbt --version` in a
    subprocess (an import of dbt, 5-15 s) to learn the version of the dbt-core installed beside this Python.
    dbt itself runs as before."""

    def _initialize_dbt_core_adapter(self, args):  # dagster-dbt 0.29: None means "no adapter", as on failure
        return None

    @cached_property
    def _cli_version(self) -> version.Version:
        return version.parse(metadata.version("dbt-core"))


def resources() -> dict:
    return {
        "warehouse": WarehouseResource(),
        "landing_zone": LandingZoneResource(),
        "orders_api": OrdersApiResource(),
        "online_store": OnlineStoreResource(),
        "dbt": DbtResource(project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE),
    }
