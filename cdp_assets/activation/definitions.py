from dagster import AssetSelection, Definitions, OpExecutionContext, ScheduleDefinition, define_asset_job, job, op

from cdp_assets.activation.assets import build_destination_asset
from cdp_assets.activation.config import load_destinations
from cdp_assets.activation.deliveries import replay_dead_letters
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


def definitions() -> Definitions:
    destinations = load_destinations(config_dir() / "destinations.yaml")
    return Definitions(
        assets=[build_destination_asset(d) for d in destinations.values()],
        jobs=[activation_job, replay_dead_letters_job],
        schedules=[ScheduleDefinition(job=activation_job, cron_schedule="40 * * * *", execution_timezone="UTC")],
    )
