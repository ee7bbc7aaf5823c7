"""The privacy job: process recorded erasure requests; a sensor starts it when a request appears."""

from dagster import DefaultSensorStatus, OpExecutionContext, RunRequest, SkipReason, job, op, sensor

from cdp_assets.activation.config import load_destinations
from cdp_assets.identity.rules import load_identity_rules
from cdp_assets.privacy.erase import erase, pending_requests
from cdp_assets.privacy.suppression import privacy_salt
from cdp_resources import WarehouseResource
from cdp_resources.settings import config_dir, data_dir


def process_erasure_requests(warehouse: WarehouseResource, log=lambda message: None) -> list[dict]:
    """Each pending request erased in turn; its request file (the only copy of the identifier) removed."""
    rules = load_identity_rules(config_dir() / "identity.yaml")
    destinations = load_destinations(config_dir() / "destinations.yaml").values()
    root = data_dir()
    audits = []
    for path, request in pending_requests(root):
        with warehouse.connect() as con:
            audit = erase(con, root, request, rules, privacy_salt(root), destinations)
        path.unlink()
        log(f"erasure {audit['request_id']}: {audit['persons']} person(s), {sum(audit['rows_deleted'].values())} rows, "
            f"{audit['file_records_removed']} file records in {audit['files_rewritten']} files")
        audits.append(audit)
    return audits


@op(description="Erase every person with a pending request, in every layer; audit without personal data.")
def erase_requested_persons(context: OpExecutionContext, warehouse: WarehouseResource) -> int:
    return len(process_erasure_requests(warehouse, log=context.log.info))


@job(description="Process erasure requests (cdp erase); derived tables are rebuilt by refresh_job after it.")
def privacy_job():
    erase_requested_persons()


@sensor(job=privacy_job, minimum_interval_seconds=30, default_status=DefaultSensorStatus.RUNNING,
        description="Start the privacy job when erasure requests are waiting.")
def erasure_requests_sensor(context):
    waiting = sorted(p.name for p, _ in pending_requests(data_dir()))
    if not waiting:
        return SkipReason("no erasure request waiting")
    return RunRequest(run_key="|".join(waiting))
