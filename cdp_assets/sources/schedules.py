"""Hourly schedules for event streams, daily for batch sources; pulls without partitions run daily.

Every schedule is on by default (the README's promises hold after `make dev` with no click in the UI).
A partitioned schedule requests the partition that just closed (the partitions include the one in
progress, so files landing late in an hour are picked up by the sensor and then again by this run).
"""

from datetime import timedelta

from dagster import DefaultScheduleStatus, RunRequest, ScheduleDefinition, ScheduleEvaluationContext, schedule

CRON = {"hourly": "5 * * * *", "daily": "15 1 * * *"}
STEP = {"hourly": timedelta(hours=1), "daily": timedelta(days=1)}
ON = DefaultScheduleStatus.RUNNING  # the README promises these runs: on without a click in the UI


def source_schedule(source, job):
    if source.partitions == "none":
        return ScheduleDefinition(job=job, cron_schedule="30 1 * * *", execution_timezone="UTC", default_status=ON)

    @schedule(name=f"{job.name}_schedule", job=job, cron_schedule=CRON[source.partitions], execution_timezone="UTC",
              default_status=ON)
    def _schedule(context: ScheduleEvaluationContext):
        closed = context.scheduled_execution_time - STEP[source.partitions]
        key = closed.strftime("%Y-%m-%d-%H:00" if source.partitions == "hourly" else "%Y-%m-%d")
        return RunRequest(run_key=key, partition_key=key)

    return _schedule
