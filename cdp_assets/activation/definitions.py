from dagster import (
    AssetSelection,
    DagsterRunStatus,
    DefaultSensorStatus,
    Definitions,
    OpExecutionContext,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    SkipReason,
    define_asset_job,
    job,
    op,
    run_status_sensor,
)

from cdp_assets.activation.assets import build_destination_asset
from cdp_assets.activation.config import load_destinations
from cdp_assets.activation.deliveries import replay_dead_letters
from cdp_assets.refresh import refresh_job
from cdp_assets.segments.definitions import daily_segments_job
from cdp_resources import WarehouseResource
from cdp_resources.settings import config_dir

activation_job = define_asset_job(
    "activation_job",
    selection=AssetSelection.groups("activation"),
    description="Deliver segment entries/exits and events to every destination.",
)


@op(config_schema={"destination": str}, description="Dead-lettered deliveries back to pending.")
def replay_dead_letters_op(context: OpExecutionContext, warehouse: WarehouseResource) -> int:
    name = context.op_config["destination"] or None
    with warehouse.connect() as con:
        count = replay_dead_letters(con, name)
    context.log.info(f"{count} dead-lettered deliveries of {name or 'every destination'} are pending again")
    return count


@job(
    description="Make dead-lettered deliveries pending again (config: destination, '' for all); the next activation run sends them.",
    config={"ops": {"replay_dead_letters_op": {"config": {"destination": ""}}}},
)
def replay_dead_letters_job():
    replay_dead_letters_op()


@run_status_sensor(
    run_status=DagsterRunStatus.SUCCESS,
    monitored_jobs=[refresh_job, daily_segments_job],
    request_job=activation_job,
    default_status=DefaultSensorStatus.RUNNING,
    name="activation_after_segments",
    description="Deliver as soon as segments have been re-evaluated.",
)
def activation_after_segments(context):
    # A queued activation run has not read the ledger yet: it will deliver these changes too.
    waiting = context.instance.get_run_records(
        filters=RunsFilter(job_name=activation_job.name, statuses=[DagsterRunStatus.NOT_STARTED, DagsterRunStatus.QUEUED]),
        limit=1,
    )
    if waiting:
        return SkipReason(f"activation run {waiting[0].dagster_run.run_id} is still queued and will deliver these changes")
    return RunRequest(run_key=context.dagster_run.run_id)


def definitions() -> Definitions:
    destinations = load_destinations(config_dir() / "destinations.yaml")
    known_segments = {path.stem for path in (config_dir() / "segments").glob("*.yaml")}
    return Definitions(
        assets=[build_destination_asset(d, known_segments) for d in destinations.values()],
        jobs=[activation_job, replay_dead_letters_job],
        sensors=[activation_after_segments],
        # A backstop that also retries failed items when no segment run happened.
        schedules=[ScheduleDefinition(job=activation_job, cron_schedule="40 * * * *", execution_timezone="UTC")],
    )
