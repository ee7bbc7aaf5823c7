from dagster import Definitions

from cdp_assets.profiles.checks import one_profile_per_person


def definitions() -> Definitions:
    return Definitions(asset_checks=[one_profile_per_person])
