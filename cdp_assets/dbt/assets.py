"""dbt models as Dagster assets: keys from schema and name, groups from the model's folder."""


import os
from collections.abc import Mapping
from typing import Any

from dagster import AssetExecutionContext, AssetKey
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, dbt_assets

from cdp_assets.dbt.project import dbt_project
from cdp_resources import WarehouseResource
from cdp_resources.settings import data_dir

# dbt folder → the platform stage it belongs to
FOLDER_GROUPS = {"staging": "events", "identity": "identity", "profiles": "profiles", "segments": "segments"}


class CdpTranslator(DagsterDbtTranslator):
    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> AssetKey:
        meta_key = dbt_resource_props.get("meta", {}).get("dagster", {}).get("asset_key")
        if meta_key:
            return AssetKey(meta_key)
        return AssetKey([dbt_resource_props["schema"], dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        folder = dbt_resource_props.get("fqn", ["", ""])[1] if len(dbt_resource_props.get("fqn", [])) > 2 else ""
        return FOLDER_GROUPS.get(folder, "profiles")

    def get_owners(self, dbt_resource_props: Mapping[str, Any]):
        return ["team:data-platform"]


translator = CdpTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=translator,
    pool="warehouse",
)
def cdp_dbt_models(context: AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource):
    """Build (run + test) the selected dbt models while holding the warehouse lock."""
    os.environ["CDP_DATA_DIR"] = str(data_dir())  # dbt's profile reads the same, absolute, data dir
    with warehouse.lock():
        yield from dbt.cli(["build"], context=context).stream()
