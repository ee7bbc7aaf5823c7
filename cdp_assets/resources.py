"""Resources by environment: everything points at `CDP_DATA_DIR` unless configured otherwise."""

import shutil
import sys
from pathlib import Path

from dagster_dbt import DbtCliResource

from cdp_assets.dbt.project import dbt_project
from cdp_resources import LandingZoneResource, OrdersApiResource, WarehouseResource


def dbt_executable() -> str:
    """The dbt installed beside this Python (the project's virtualenv), even when it is not on PATH."""
    beside = Path(sys.executable).parent / "dbt"
    return str(beside) if beside.exists() else (shutil.which("dbt") or "dbt")


def resources() -> dict:
    return {
        "warehouse": WarehouseResource(),
        "landing_zone": LandingZoneResource(),
        "orders_api": OrdersApiResource(),
        "dbt": DbtCliResource(project_dir=dbt_project, dbt_executable=dbt_executable()),
    }
