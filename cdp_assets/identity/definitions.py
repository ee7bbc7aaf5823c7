from dagster import Definitions

from cdp_assets.identity.assets import id_map_asset
from cdp_assets.identity.checks import one_person_per_identifier


def definitions() -> Definitions:
    # Sightings, edges and identifiers are dbt models (dbt/models/identity); resolving persons is Python.
    return Definitions(assets=[id_map_asset], asset_checks=[one_person_per_identifier])
