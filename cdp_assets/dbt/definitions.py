from dagster import Definitions

from cdp_assets.dbt.assets import cdp_dbt_models


def definitions() -> Definitions:
    return Definitions(assets=[cdp_dbt_models])
