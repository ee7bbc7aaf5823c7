from dagster import Definitions

from cdp_assets.profiles.checks import one_profile_per_person, profiles_match_current_history


def definitions() -> Definitions:
    # The profile tables are dbt models (dbt/models/profiles); their checks live here.
    return Definitions(asset_checks=[one_profile_per_person, profiles_match_current_history])
