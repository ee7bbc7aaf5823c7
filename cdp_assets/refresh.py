"""After any source extract succeeds, refresh everything downstream of the sources.

Validation, identity, profiles and the hourly segments are unpartitioned and rebuilt from the raw layer,
so one refresh run after each extract keeps them current; daily segments have their own schedule.
An extract that succeeds while a refresh run is still waiting to start requests none: that run has read
nothing yet and will see the new data too, so a burst of extracts behind a busy queue does not pile up one
full rebuild each.
"""

from dagster import (
    AssetSelection,
    DagsterRunStatus,
    DefaultSensorStatus,
    Definitions,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    SkipReason,
    define_asset_job,
    run_status_sensor,
)

DOWNSTREAM = AssetSelection.groups("events", "identity", "profiles", "online") | (
    AssetSelection.groups("segments") & AssetSelection.tag("refresh", "hourly")
)

refresh_job = define_asset_job(
    "refresh_job",
    selection=DOWNSTREAM,
    description="Validate, resolve identities, rebuild profiles, re-evaluate hourly segments, update the online store.",
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
        waiting = context.instance.get_run_records(
            filters=RunsFilter(
                job_name=refresh_job.name, statuses=[DagsterRunStatus.NOT_STARTED, DagsterRunStatus.QUEUED]
            ),
            limit=1,
        )
        if waiting:
            return SkipReason(f"refresh run {waiting[0].dagster_run.run_id} has not started yet and will read this data")
        return RunRequest(run_key=context.dagster_run.run_id)

    return Definitions(
        jobs=[refresh_job],
        sensors=[refresh_after_extract],
        # A backstop: hourly segments with time windows change as time passes, even without new data.
        schedules=[ScheduleDefinition(job=refresh_job, cron_schedule="20 * * * *", execution_timezone="UTC")],
    )
