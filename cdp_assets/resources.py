"""Resources by environment: everything points at `CDP_DATA_DIR` unless configured otherwise."""

import json
import os
from collections.abc import Iterator, Sequence
from functools import cached_property
from importlib import metadata
from pathlib import Path

from dagster import AssetExecutionContext, Failure
from dagster_dbt import DbtCliResource
from packaging import version

from cdp_assets.dbt.project import (
    DBT_EXECUTABLE, DBT_PROJECT_DIR, dbt_environment, dbt_failures, dbt_project, invoke_dbt, parsed_manifest,
)
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

    def build(self, args: Sequence[str], *, context: AssetExecutionContext, target_path: Path, vars_: dict,
              warehouse) -> Iterator:
        """`dbt.cli(args, context=context).stream()`, run in this process on the parsed project.

        The same selection of the step's assets and checks (dagster-dbt's own), and dbt's events turned into
        Dagster's outputs and check results by dagster-dbt's own translation; only the subprocess is gone:
        no Python start, dbt import, parse-cache read and adapter set-up per command, which cost more than
        a refresh's SQL. Falls back to the subprocess where dagster-dbt would run a temporary copy of the
        project (a selection of over 200 nodes)."""
        from dagster_dbt.asset_utils import (
            extract_runtime_selection_from_args, get_updated_cli_invocation_params_for_context,
        )
        from dagster_dbt.core.dbt_cli_event import DbtCoreCliEventMessage
        from dbt_common.events.functions import msg_to_dict

        args = [*args, "--vars", json.dumps(vars_)]
        cleaned, selects, excludes = extract_runtime_selection_from_args(args)
        params = get_updated_cli_invocation_params_for_context(
            context=context, manifest={}, dagster_dbt_translator=None,
            runtime_selects=selects, runtime_excludes=excludes,
        )
        if params.dbt_project is not None and Path(params.dbt_project.project_dir) != DBT_PROJECT_DIR:
            if warehouse.engine().name == "spark":  # dbt-spark's session method joins this process's session only
                raise Failure("dbt on Spark runs in this process; select fewer models per step (dagster-dbt would "
                              "run this selection in a subprocess)")
            # The subprocess inherits the environment `invoke_dbt` sets for dbt in process.
            os.environ.update(dbt_environment(warehouse))
            yield from self.cli(args, context=context, target_path=target_path).stream()
            return
        messages = []
        result = invoke_dbt(
            [*cleaned, *(["--target", self.target] if self.target else []), *params.selection_args], target_path,
            warehouse=warehouse, listen=messages.append, manifest=parsed_manifest(vars_, warehouse),
            environment={"DBT_INDIRECT_SELECTION": params.indirect_selection} if params.indirect_selection else None,
        )
        for message in messages:
            event = DbtCoreCliEventMessage(raw_event=msg_to_dict(message), event_history_metadata={})
            yield from event.to_default_asset_events(
                manifest=params.manifest, dagster_dbt_translator=params.dagster_dbt_translator, context=context,
                target_path=target_path, project=params.dbt_project,
            )
        if not result.success:
            raise Failure(f"dbt {cleaned[0]} failed: {dbt_failures(result)}")


def resources() -> dict:
    return {
        "warehouse": WarehouseResource(),
        "landing_zone": LandingZoneResource(),
        "orders_api": OrdersApiResource(),
        "online_store": OnlineStoreResource(),
        "dbt": DbtResource(project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE),
    }
