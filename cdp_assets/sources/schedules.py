"""Hourly schedules for event streams, daily for batch sources; pulls without partitions run daily."""

from dagster import ScheduleDefinition, build_schedule_from_partitioned_job


def source_schedule(source, job):
    if source.partitions in ("hourly", "daily"):
        # Runs just after each partition closes, for that partition.
        return build_schedule_from_partitioned_job(job, minute_of_hour=5, hour_of_day=1 if source.partitions == "daily" else None)
    return ScheduleDefinition(job=job, cron_schedule="30 1 * * *", execution_timezone="UTC")
