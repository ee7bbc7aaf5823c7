"""After any source extract succeeds, refresh everything downstream of the sources.

Validation, identity, profiles and the hourly segments are unpartitioned and rebuilt from the raw layer,
so one refresh run after each extract keeps them current; daily segments have their own schedule.
"""

from dagster import (
    AssetSelection,
    DagsterRunStatus,
    DefaultSensorStatus,
    Definitions,
    RunRequest,
    ScheduleDefinition,
    define_asset_job,
    run_status_sensor,
)

DOWNSTREAM = AssetSelection.groups("events", "identity", "profiles") | (
    AssetSelection.groups("segments") & AssetSelection.tag("refresh", "hourly")
)

refresh_job = define_asset_job(
    "refresh_job",
    selection=DOWNSTREAM,
    description="Validate, resolve identities, rebuild profiles and re-evaluate hourly segments.",
)


def definitions(source_jobs) -> Definitions:
    @run_status_sensor(
        run_status=DagsterRunStatus.SUCCESS,
        monitored_jobs=source_jobs,
        request_job=refresh_job,
        default_status=DefaultSensorStatus.RUNNING,
        name="refresh_after_extract",
    )
    def refresh_after_extract(context):
        return RunRequest(run_key=context.dagster_run.run_id)

    return Definitions(
        jobs=[refresh_job],
        sensors=[refresh_after_extract],
        # A backstop: hourly segments with time windows change as time passes, even without new data.
        schedules=[ScheduleDefinition(job=refresh_job, cron_schedule="20 * * * *", execution_timezone="UTC")],
    )
