"""One asset per destination in config/destinations.yaml, downstream of the segments it delivers."""

import os
from datetime import datetime, timezone

from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, MaterializeResult, MetadataValue, asset

from cdp_assets.activation.config import Destination, unknown_segments
from cdp_assets.activation.deliveries import deliver_in
from cdp_assets.activation.exports import export_segment_files, segment_members_in, write_back_tags
from cdp_assets.config import ConfigError
from cdp_assets.segments.assets import segment_key
from cdp_resources import WarehouseResource
from cdp_resources.destinations import HttpDelivery
from cdp_resources.settings import data_dir


def destination_key(name: str) -> AssetKey:
    return AssetKey(["activation", name])


def build_destination_asset(destination: Destination, known_segments: set[str] | None = None) -> AssetsDefinition:
    """`known_segments`: the segment names defined in config; a destination naming another one shows up
    as INVALID and its runs fail saying which name is unknown (instead of quietly delivering nothing)."""
    unknown = unknown_segments(destination, known_segments) if known_segments is not None else []
    deps = [segment_key(s) for s in destination.segments if s not in unknown]
    if destination.events:
        deps.append(AssetKey(["core", "person_events"]))
    what = ", ".join([*destination.segments, *(f"event {e}" for e in destination.events)])
    problem = f"destinations.{destination.name}.segments: no segment named {', '.join(unknown)} in config/segments/" if unknown else ""

    @asset(
        key=destination_key(destination.name),
        deps=deps,
        group_name="activation",
        description=(f"INVALID {problem}. " if problem else "") + f"{destination.kind} destination {destination.name}: {what}.",
        kinds={"python", "duckdb", "postgres" if destination.kind == "postgres" else destination.kind},
        owners=["team:marketing-ops"],
        metadata={"kind": destination.kind},
    )
    # No pool: HTTP calls never hold the warehouse; each short connection takes the warehouse lock.
    def _destination(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult:
        if problem:
            raise ConfigError(problem)
        return {"http": _http, "file": _file, "postgres": _postgres}[destination.kind](context, destination, warehouse)

    return _destination


def _skipped(context, destination: Destination, variable: str) -> MaterializeResult:
    context.log.warning(f"{destination.name}: {variable} is not set, nothing delivered")
    return MaterializeResult(metadata={"skipped": f"{variable} is not set"})


def _http(context, destination: Destination, warehouse: WarehouseResource) -> MaterializeResult:
    url = os.environ.get(destination.url_env, "")
    if not url:
        return _skipped(context, destination, destination.url_env)
    secret = os.environ.get(destination.secret_env) if destination.secret_env else None
    if destination.secret_env and not secret:
        context.log.warning(f"{destination.name}: {destination.secret_env} is not set, deliveries are not signed")
    client = HttpDelivery(url, secret, timeout_s=destination.timeout_s)
    lock = warehouse.file().with_name(f"deliveries.{destination.name}.lock")
    report = deliver_in(warehouse.engine(), destination, client, log=context.log.info, lock_path=lock)
    if report.failed or report.stopped:
        context.log.warning(f"{destination.name}: {report.failed} refused this run; {report.stopped or 'retried next run'}")
    return MaterializeResult(
        metadata={
            # this run
            "enqueued": report.enqueued,
            "sent": report.sent,
            "retried": report.retried,
            "waited": report.waited,
            "failed": report.failed,
            "dead_lettered": report.dead_lettered,
            "held_behind_earlier": report.held,
            "deferred": report.deferred,
            "retry_at": f"{report.retry_at:%Y-%m-%d %H:%M:%S} UTC" if report.retry_at else "no",
            # the ledger after this run
            "open_total": report.open_total,
            "dead_total": report.dead_total,
            "stopped": report.stopped or "no",
            # The status or error class only: a destination's answer may echo the payload, and Dagster keeps
            # metadata where an erasure cannot reach it (the full text is in cdp.deliveries.last_error).
            "errors": MetadataValue.md("\n".join(f"- {e.split(':', 1)[0]}" for e in report.errors[:20]) or "none"),
        }
    )


def _file(context, destination: Destination, warehouse: WarehouseResource) -> MaterializeResult:
    members = segment_members_in(warehouse.engine(), destination, destination.segments)
    folder = data_dir() / "exports" / destination.name
    written = export_segment_files(members, destination, folder, datetime.now(timezone.utc), context.run.run_id)
    context.log.info(f"{destination.name}: {written} into {folder}")
    return MaterializeResult(metadata={"rows": sum(written.values()), "per_segment": MetadataValue.json(written),
                                       "folder": MetadataValue.path(str(folder))})


def _postgres(context, destination: Destination, warehouse: WarehouseResource) -> MaterializeResult:
    dsn = os.environ.get(destination.dsn_env, "")
    if not dsn:
        return _skipped(context, destination, destination.dsn_env)
    members = segment_members_in(warehouse.engine(), destination, destination.segments)
    counts = write_back_tags(members, destination, dsn)
    return MaterializeResult(metadata={"persons_tagged": counts["persons"], "persons_cleared": counts["cleared"],
                                       "table": destination.table})
