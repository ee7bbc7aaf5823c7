from dagster import AssetSelection, DefaultScheduleStatus, Definitions, ScheduleDefinition, define_asset_job, in_process_executor

from cdp_assets.segments.assets import segment_assets

daily_segments_job = define_asset_job(
    "daily_segments_job",
    selection=AssetSelection.groups("segments") & AssetSelection.tag("refresh", "daily"),
    description="Re-evaluate the segments declared `refresh: daily`.",
    executor_def=in_process_executor,  # every step is in the warehouse pool: one at a time anyway
)


def definitions() -> Definitions:
    return Definitions(
        assets=segment_assets(),
        jobs=[daily_segments_job],
        schedules=[ScheduleDefinition(job=daily_segments_job, cron_schedule="15 2 * * *", execution_timezone="UTC",
                                      default_status=DefaultScheduleStatus.RUNNING)],
    )
