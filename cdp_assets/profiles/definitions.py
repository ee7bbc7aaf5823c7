from dagster import Definitions

from cdp_assets.profiles.checks import profiles_match_current_history


def definitions() -> Definitions:
    # The profile tables are dbt models (dbt/models/profiles); their checks live here.
    return Definitions(asset_checks=[profiles_match_current_history])
