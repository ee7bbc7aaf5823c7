"""The whole platform in one screen: each stage contributes its own Definitions, merged here."""

from dagster import Definitions, in_process_executor

from cdp_assets import refresh
from cdp_assets.activation import definitions as activation_defs
from cdp_assets.dbt import definitions as dbt_defs
from cdp_assets.events import definitions as events_defs
from cdp_assets.identity import definitions as identity_defs
from cdp_assets.online import definitions as online_defs
from cdp_assets.privacy import definitions as privacy_defs
from cdp_assets.profiles import definitions as profiles_defs
from cdp_assets.resources import resources
from cdp_assets.segments import definitions as segments_defs
from cdp_assets.sources import definitions as sources_defs


def build_definitions() -> Definitions:
    sources = sources_defs.definitions()
    return Definitions.merge(
        sources,
        events_defs.definitions(),
        identity_defs.definitions(),
        dbt_defs.definitions(),
        profiles_defs.definitions(),
        segments_defs.definitions(),
        online_defs.definitions(),
        activation_defs.definitions(),
        privacy_defs.definitions(),
        refresh.definitions([*sources.jobs, privacy_defs.privacy_job]),
        # Jobs without an executor of their own (a materialization launched from the UI) run their steps in
        # one process: nearly every asset is in the warehouse pool, whose steps run one at a time anyway.
        Definitions(resources=resources(), executor=in_process_executor),
    )


defs = build_definitions()
