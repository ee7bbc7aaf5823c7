from dagster import Definitions

from cdp_assets.profiles.assets import trait_observations_asset
from cdp_assets.profiles.checks import one_profile_per_person, profiles_match_current_history


def definitions() -> Definitions:
    return Definitions(assets=[trait_observations_asset], asset_checks=[one_profile_per_person, profiles_match_current_history])
