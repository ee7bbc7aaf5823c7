"""Sensors that react to new files: landed collector files (per hourly partition) and CDC drops.

The cursor is the newest (mtime, path) already requested, so a file is requested once even when ticks
overlap; files are immutable after their atomic rename. The run_key names the partition and the files,
so a retried tick cannot start the same run twice.
"""

import hashlib
import json
from collections import defaultdict

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SkipReason, sensor

from cdp_resources import LandingZoneResource


def _new_files(context: SensorEvaluationContext, files):
    """Files newer than the cursor, and the cursor after them."""
    last = json.loads(context.cursor) if context.cursor else [0, ""]
    stamped = sorted((f.path.stat().st_mtime_ns, str(f.path), f) for f in files if f.path.exists())
    fresh = [(mtime, path, f) for mtime, path, f in stamped if [mtime, path] > last]
    cursor = json.dumps(list(fresh[-1][:2])) if fresh else context.cursor
    return [f for _, _, f in fresh], cursor


def _run_key(prefix: str, files) -> str:
    digest = hashlib.sha256("\n".join(sorted(str(f.path) for f in files)).encode()).hexdigest()[:16]
    return f"{prefix}:{digest}"


def landing_sensor(source, job):
    @sensor(
        name=f"{source.name}_landing_sensor",
        job=job,
        minimum_interval_seconds=30,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Extract the hourly partitions of {source.name} that received new landing files.",
    )
    def _sensor(context: SensorEvaluationContext, landing_zone: LandingZoneResource):
        files, cursor = _new_files(context, landing_zone.landing_files(source.name))
        if not files:
            return SkipReason("no new landing files")
        by_partition = defaultdict(list)
        for f in files:
            by_partition[f.partition_key].append(f)
        context.update_cursor(cursor)
        return [RunRequest(run_key=_run_key(key, by_partition[key]), partition_key=key) for key in sorted(by_partition)]

    return _sensor


def cdc_sensor(source, job):
    @sensor(
        name=f"{source.name}_cdc_sensor",
        job=job,
        minimum_interval_seconds=30,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Apply new change files of {source.name}.",
    )
    def _sensor(context: SensorEvaluationContext, landing_zone: LandingZoneResource):
        folder = source.path.split("/")[-1] if source.path else source.name
        files, cursor = _new_files(context, landing_zone.cdc_files(folder))
        if not files:
            return SkipReason("no new change files")
        context.update_cursor(cursor)
        return RunRequest(run_key=_run_key(source.name, files))

    return _sensor
