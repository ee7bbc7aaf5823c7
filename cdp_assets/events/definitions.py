from dagster import Definitions

from cdp_assets.events.assets import validation_assets
from cdp_assets.events.checks import quarantine_rate_within_bounds, records_reconcile, unique_event_ids


def definitions() -> Definitions:
    return Definitions(assets=[validation_assets()], asset_checks=[unique_event_ids, records_reconcile, quarantine_rate_within_bounds])
