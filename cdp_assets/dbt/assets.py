"""dbt models as Dagster assets: keys from schema and name, groups from the model's folder."""


from collections.abc import Mapping
from typing import Any

from dagster import AssetExecutionContext, AssetKey, AssetMaterialization, Config, Output
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, dbt_assets

from cdp_assets.dbt.project import command_target, dbt_project, parse_cache, writer_lock
from cdp_assets.dbt.row_counts import table_row_counts
from cdp_assets.dbt.vars import dbt_vars
from cdp_assets.resources import DbtResource
from cdp_resources import WarehouseResource

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


class DbtBuildConfig(Config):
    full_refresh: bool = False  # rebuild incremental models (computed traits) from scratch


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=translator,
    pool="warehouse",
)
def cdp_dbt_models(
    context: AssetExecutionContext, dbt: DbtResource, warehouse: WarehouseResource, config: DbtBuildConfig
):
    """Build (run + test) the selected dbt models while holding the warehouse lock.

    dbt runs in this process on the project parsed once per process (`DbtResource.build`), on the warehouse's
    engine (`engine_target`). Row counts are added once dbt has finished: while it runs, it holds the DuckDB file.
    """
    args = ["build"] + (["--full-refresh"] if config.full_refresh else [])
    with writer_lock(warehouse):
        with parse_cache(command_target(f"build-{context.run.run_id[:8]}")) as target:
            events, failure = [], None
            try:
                for event in dbt.build(args, context=context, target_path=target, vars_=dbt_vars(), warehouse=warehouse):
                    events.append(event)
            except Exception as error:  # noqa: BLE001 - raised below, once what dbt did is recorded
                failure = error
        keys = {id(event): _table_of(context, event) for event in events}
        rows = table_row_counts(warehouse, sorted({key for key in keys.values() if key is not None}))
        for event in events:
            key = keys[id(event)]
            yield event if key not in rows else event.with_metadata({**event.metadata, "dagster/row_count": rows[key]})
    if failure is not None:
        # The models built and the tests judged before the failure are materializations and check results.
        raise failure


def _table_of(context: AssetExecutionContext, event) -> tuple[str, str] | None:
    """The (schema, name) an output or materialization of a model names; None for other events."""
    if isinstance(event, Output):
        key = context.asset_key_for_output(event.output_name)
    elif isinstance(event, AssetMaterialization):
        key = event.asset_key
    else:
        return None
    return (key.path[0], key.path[1]) if len(key.path) == 2 else None
