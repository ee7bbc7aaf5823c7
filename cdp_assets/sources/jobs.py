"""One job per source extract, named after the source and its partitioning."""

from dagster import AssetSelection, define_asset_job

from cdp_assets.config import SourceConfig
from cdp_assets.sources.assets import raw_key


def source_job(source: SourceConfig):
    suffix = {"hourly": "hourly", "daily": "daily", "none": "extract"}[source.partitions]
    return define_asset_job(
        f"{source.name}_{suffix}_job",
        selection=AssetSelection.assets(raw_key(source.name)),
        description=f"Extract source {source.name} into raw.{source.name}.",
    )
