from dagster import Definitions

from cdp_assets.identity.assets import id_map_asset, identity_edges_asset, relationships_asset
from cdp_assets.identity.checks import one_person_per_identifier


def definitions() -> Definitions:
    return Definitions(assets=[identity_edges_asset, id_map_asset, relationships_asset], asset_checks=[one_person_per_identifier])
