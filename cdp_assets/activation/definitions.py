from dagster import (
    AssetSelection,
    Definitions,
    OpExecutionContext,
    define_asset_job,
    in_process_executor,
    job,
    op,
)

from cdp_assets.activation.assets import build_destination_asset
from cdp_assets.activation.config import load_destinations
from cdp_assets.activation.deliveries import replay_dead_letters_in
from cdp_assets.refresh import backstop_schedule, follow_sensor, refresh_job
from cdp_assets.segments.definitions import daily_segments_job
from cdp_resources import WarehouseResource
from cdp_resources.settings import config_dir

activation_job = define_asset_job(
    "activation_job",
    selection=AssetSelection.groups("activation"),
    description="Deliver segment entries/exits and events to every destination.",
    # One process for the run, though deliveries are not in the warehouse pool: a process per destination costs
    # a Python start and a code-location load (20-40 s measured under `dagster dev` on the 2-core machine, most
    # of an event's way to its destination), more than a delivery that is not waiting on an outage (an outage
    # stops a destination's delivery at once, so it holds up the others little).
    executor_def=in_process_executor,
)


@op(config_schema={"destination": str}, description="Dead-lettered deliveries back to pending.", pool="warehouse")
def replay_dead_letters_op(context: OpExecutionContext, warehouse: WarehouseResource) -> int:
    name = context.op_config["destination"] or None
    count = replay_dead_letters_in(warehouse.engine(), name)
    context.log.info(f"{count} dead-lettered deliveries of {name or 'every destination'} are pending again")
    return count


@job(
    description="Make dead-lettered deliveries pending again (config: destination, '' for all); the next activation run sends them.",
    config={"ops": {"replay_dead_letters_op": {"config": {"destination": ""}}}},
    executor_def=in_process_executor,
)
def replay_dead_letters_job():
    replay_dead_letters_op()


activation_after_segments = follow_sensor(
    "activation_after_segments", activation_job, [refresh_job, daily_segments_job],
    "Deliver as soon as segments have been re-evaluated; one activation run at a time.",
)


def definitions() -> Definitions:
    destinations = load_destinations(config_dir() / "destinations.yaml")
    known_segments = {path.stem for path in (config_dir() / "segments").glob("*.yaml")}
    return Definitions(
        assets=[build_destination_asset(d, known_segments) for d in destinations.values()],
        jobs=[activation_job, replay_dead_letters_job],
        sensors=[activation_after_segments],
        # A backstop that also retries failed items when no segment run happened.
        schedules=[backstop_schedule(activation_job, "40 * * * *")],
    )
