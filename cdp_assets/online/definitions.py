from dagster import Definitions

from cdp_assets.online.assets import online_store_asset


def definitions() -> Definitions:
    return Definitions(assets=[online_store_asset()])
