"""The privacy job: process recorded erasure requests; a sensor starts it when a request appears."""

from dagster import DefaultSensorStatus, OpExecutionContext, RunRequest, SkipReason, in_process_executor, job, op, sensor

from cdp_assets.activation.config import load_destinations
from cdp_assets.identity.rules import load_identity_rules
from cdp_assets.privacy.erase import erasure_on, pending_requests
from cdp_assets.privacy.suppression import privacy_salt
from cdp_resources import WarehouseResource
from cdp_resources.settings import config_dir, data_dir


def process_erasure_requests(warehouse: WarehouseResource, log=lambda message: None) -> list[dict]:
    """Each pending request erased in turn, then the warehouse compacted; only then are the request files
    (the only copies of the identifiers) removed."""
    rules = load_identity_rules(config_dir() / "identity.yaml")
    destinations = load_destinations(config_dir() / "destinations.yaml").values()
    root = data_dir()
    erasure = erasure_on(warehouse)
    audits = []
    with erasure.lock():  # held until the warehouse is compacted: nobody reads it half-erased
        requests = pending_requests(root)
        for _, request in requests:
            audit = erasure.erase(root, request, rules, privacy_salt(root), destinations)
            log(f"erasure {audit['request_id']}: {audit['persons']} person(s), {sum(audit['rows_deleted'].values())} rows, "
                f"{sum(audit['values_scrubbed'].values())} values scrubbed, "
                f"{audit['file_records_removed']} file records in {audit['files_rewritten']} files")
            audits.append(audit)
        if audits:
            erasure.compact(log)
        for path, _ in requests:  # only now: a crash before this re-runs the (idempotent) erasure
            path.unlink()
    return audits


@op(description="Erase every person with a pending request, in every layer; audit without personal data.", pool="warehouse")
def erase_requested_persons(context: OpExecutionContext, warehouse: WarehouseResource) -> int:
    return len(process_erasure_requests(warehouse, log=context.log.info))


@job(description="Process erasure requests (cdp erase); derived tables are rebuilt by refresh_job after it.",
     executor_def=in_process_executor)
def privacy_job():
    erase_requested_persons()


@sensor(job=privacy_job, minimum_interval_seconds=30, default_status=DefaultSensorStatus.RUNNING,
        description="Start the privacy job when erasure requests are waiting.")
def erasure_requests_sensor(context):
    waiting = sorted(p.name for p, _ in pending_requests(data_dir()))
    if not waiting:
        return SkipReason("no erasure request waiting")
    return RunRequest(run_key="|".join(waiting))
