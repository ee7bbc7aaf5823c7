"""After new data lands, refresh everything downstream of the sources: exactly one refresh per change.

Validation, identity, profiles and the hourly segments read what changed since their last run, so one
refresh run after any number of extracts brings them current. The sensor `refresh_after_extract` follows the
extract (and privacy) runs and never overlaps itself: while a refresh run is queued or in progress, or an
upstream run is still queued or running, it requests nothing; once all is quiet, it requests one refresh if
any upstream run succeeded after the last refresh started. A burst of extracts behind a busy queue is
therefore one refresh, and an extract that finishes while a refresh runs gets one more after it (that run
may have read before the extract wrote). `activation_after_segments` follows refresh and daily segment runs
the same way (cdp_assets/activation/definitions.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from dagster import (
    AssetSelection,
    DagsterInstance,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Definitions,
    RunRequest,
    RunsFilter,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SkipReason,
    define_asset_job,
    in_process_executor,
    schedule,
    sensor,
)

# The dbt parse views are rebuilt by validation itself, only when missing or when what they are built from
# changed (cdp_assets/events/validate.py `ensure_parse_views`), not by a dbt command in every refresh.
PARSE_VIEWS = AssetSelection.assets(["staging", "parsed_events"], ["staging", "parsed_records"])
DOWNSTREAM = (
    AssetSelection.groups("events", "identity", "profiles", "online")
    | (AssetSelection.groups("segments") & AssetSelection.tag("refresh", "hourly"))
) - PARSE_VIEWS

refresh_job = define_asset_job(
    "refresh_job",
    selection=DOWNSTREAM,
    description="Validate, resolve identities, rebuild profiles, re-evaluate hourly segments, update the online store.",
    # Every step is in the warehouse pool, so steps run one at a time anyway: one process for the whole run
    # instead of one per step (each paying Python start-up and a code-location load).
    executor_def=in_process_executor,
)

ACTIVE = [
    DagsterRunStatus.NOT_STARTED, DagsterRunStatus.QUEUED, DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING,
]
FOLLOW_INTERVAL_S = 5


def active_run(instance: DagsterInstance, job_name: str):
    """A run of `job_name` that is queued, starting or in progress, or None."""
    records = instance.get_run_records(filters=RunsFilter(job_name=job_name, statuses=ACTIVE), limit=1)
    return records[0].dagster_run if records else None


def follow_up(instance: DagsterInstance, job_name: str, upstream_jobs: Sequence[str]) -> RunRequest | SkipReason:
    """One run of `job_name` when an upstream run succeeded after its last run started, and nothing is
    queued or running on either side; otherwise why not."""
    busy = active_run(instance, job_name)
    if busy is not None:
        return SkipReason(f"{job_name} run {busy.run_id} is queued or running; whatever lands now waits for it to end")
    for upstream in upstream_jobs:
        waiting = active_run(instance, upstream)
        if waiting is not None:
            return SkipReason(f"{upstream} run {waiting.run_id} is queued or running; one {job_name} after it")
    last = instance.get_run_records(filters=RunsFilter(job_name=job_name), limit=1)
    since = None
    if last:
        started = last[0].start_time or last[0].create_timestamp.timestamp()
        since = datetime.fromtimestamp(started, timezone.utc)
    newest = None
    for upstream in upstream_jobs:
        for record in instance.get_run_records(
            filters=RunsFilter(job_name=upstream, statuses=[DagsterRunStatus.SUCCESS], updated_after=since), limit=20
        ):
            ended = record.end_time or record.update_timestamp.timestamp()
            if (since is None or ended >= since.timestamp()) and (newest is None or ended > newest[0]):
                newest = (ended, record.dagster_run.run_id)
    if newest is None:
        return SkipReason(f"no upstream run succeeded since the last {job_name} started")
    return RunRequest(run_key=f"after:{newest[1]}")


def follow_sensor(name: str, job, upstream_jobs: Sequence, description: str):
    """A sensor requesting `job` after upstream runs succeed, by `follow_up`, on by default."""
    upstream = [j.name for j in upstream_jobs]

    @sensor(name=name, job=job, minimum_interval_seconds=FOLLOW_INTERVAL_S, default_status=DefaultSensorStatus.RUNNING,
            description=description)
    def _sensor(context: SensorEvaluationContext):
        return follow_up(context.instance, job.name, upstream)

    return _sensor


def backstop_schedule(job, cron: str, name: str | None = None):
    """A schedule for `job`, on by default, that skips while a run of it is queued or in progress."""

    @schedule(name=name or f"{job.name}_schedule", job=job, cron_schedule=cron, execution_timezone="UTC",
              default_status=DefaultScheduleStatus.RUNNING)
    def _schedule(context: ScheduleEvaluationContext):
        busy = active_run(context.instance, job.name)
        if busy is not None:
            return SkipReason(f"{job.name} run {busy.run_id} is queued or running")
        return RunRequest()

    return _schedule


def definitions(source_jobs) -> Definitions:
    refresh_after_extract = follow_sensor(
        "refresh_after_extract", refresh_job, source_jobs,
        "One refresh after extracts (or erasures) succeed; never while a refresh or an extract is queued or running.",
    )
    return Definitions(
        jobs=[refresh_job],
        sensors=[refresh_after_extract],
        # A backstop: hourly segments with time windows change as time passes, even without new data.
        schedules=[backstop_schedule(refresh_job, "20 * * * *")],
    )
