"""One job per source extract, named after the source and its partitioning.

Its one step writes the warehouse, so it runs in the run's own process (no process per step).
"""

from dagster import AssetSelection, define_asset_job, in_process_executor

from cdp_assets.config import SourceConfig
from cdp_assets.sources.assets import raw_key


def source_job(source: SourceConfig):
    suffix = {"hourly": "hourly", "daily": "daily", "none": "extract"}[source.partitions]
    return define_asset_job(
        f"{source.name}_{suffix}_job",
        selection=AssetSelection.assets(raw_key(source.name)),
        description=f"Extract source {source.name} into raw.{source.name}.",
        executor_def=in_process_executor,
    )
