"""Sensors that react to new files: landed collector files (per hourly partition) and CDC drops.

Extracts re-read every file of what they extract (a partition, or all change files), so a run needs
requesting whenever that file set changes, and the run_key is a digest of the set: a repeated tick,
overlapping ticks or a retried evaluation cannot start the same run twice, while a file added later to an
old hour requests that hour again. Landing files are found by their inode change time (ctime), which a
rename or copy always sets, unlike mtime (`mv` and `cp -p` keep an old one). A lookback window re-checks
the last minutes, so a file renamed while a tick was listing the directory is not skipped.

A sensor's first tick (no cursor yet: a new instance, `make dev` after `make demo`) starts at the data
already loaded: a partition whose files are exactly those `raw.<source>` holds records of is not requested
again, so a demo's month of hours does not become 720 queued runs. Only partitions with files not loaded
yet (or loaded files since removed) are requested.
"""

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SkipReason, sensor

from cdp_resources import WarehouseResource

from cdp_assets.sources.partitions import PARTITIONS
from cdp_assets.sources.store import raw_store
from cdp_resources import LandingZoneResource

LOOKBACK_NS = 300 * 10**9
# Listing the landing zone is cheap (a directory walk): ticks are frequent, so an event waits little.
INTERVAL_S = 5
LOCK_WAIT_S = 10  # a first tick waits this long for the warehouse, then tries again next tick


def file_set_digest(paths) -> str:
    return hashlib.sha256("\n".join(sorted(str(p) for p in paths)).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class LandingPlan:
    requests: list[tuple[str, str]]  # (partition key, digest of its files), in partition order
    cursor: str


def plan_landing_runs(files, cursor: str | None) -> LandingPlan:
    """The partitions whose file set changed since the cursor, and the next cursor.

    The cursor holds the newest ctime seen and the digest requested for each partition touched within
    the lookback window before it; older partitions are forgotten until a new file touches them.
    """
    state = json.loads(cursor) if cursor else {}
    since, requested = state.get("since", 0), state.get("recent", {})
    by_partition, newest_touch = defaultdict(list), {}
    for f in files:
        try:
            changed = f.path.stat().st_ctime_ns
        except FileNotFoundError:  # rejected by a running extract meanwhile
            continue
        by_partition[f.partition_key].append(f.path)
        newest_touch[f.partition_key] = max(changed, newest_touch.get(f.partition_key, 0))
    newest = max([since, *newest_touch.values()])
    horizon = min(since, newest) - LOOKBACK_NS
    recent = {key: file_set_digest(by_partition[key]) for key, touched in newest_touch.items() if touched >= horizon}
    requests = [(key, digest) for key, digest in sorted(recent.items()) if requested.get(key) != digest]
    return LandingPlan(requests, json.dumps({"since": newest, "recent": recent}, sort_keys=True))


def loaded_files(warehouse: WarehouseResource, source: str) -> dict[str, set[str]]:
    """The files (relative to the data directory) whose records `raw.<source>` holds, per partition key.
    TimeoutError when the warehouse stays busy."""
    return raw_store(warehouse.engine()).loaded_files(source, LOCK_WAIT_S)


def is_loaded(paths, loaded: set[str], base) -> bool:
    """The partition's files are those loaded: every file with content was read, and every file read is there."""
    present = {p.relative_to(base).as_posix(): p for p in paths}
    with_content = set()
    for name, path in present.items():
        try:
            if path.stat().st_size:
                with_content.add(name)
        except FileNotFoundError:
            continue
    return with_content <= loaded <= set(present)


def starting_plan(files, loaded: dict[str, set[str]], base) -> LandingPlan:
    """A first tick's plan: the cursor covers every file present; requested are the partitions not loaded as
    they are."""
    plan = plan_landing_runs(files, None)
    by_partition = defaultdict(list)
    for f in files:
        by_partition[f.partition_key].append(f.path)
    requests = [(key, digest) for key, digest in plan.requests if not is_loaded(by_partition[key], loaded.get(key, set()), base)]
    return LandingPlan(requests, plan.cursor)


def landing_sensor(source, job):
    partitions_def = PARTITIONS[source.partitions]

    @sensor(
        name=f"{source.name}_landing_sensor",
        job=job,
        minimum_interval_seconds=INTERVAL_S,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Extract the hourly partitions of {source.name} whose landing files changed.",
    )
    def _sensor(context: SensorEvaluationContext, landing_zone: LandingZoneResource, warehouse: WarehouseResource):
        files = landing_zone.landing_files(source.name)
        if context.cursor:
            plan = plan_landing_runs(files, context.cursor)
        else:
            try:
                plan = starting_plan(files, loaded_files(warehouse, source.name), landing_zone.base())
            except TimeoutError:
                return SkipReason("first tick: the warehouse is busy; the starting cursor is set at the next tick")
        runs = []
        for key, digest in plan.requests:
            if partitions_def and not partitions_def.has_partition_key(key):
                context.log.warning(f"{source.name}: files for {key}, outside the partitions; set CDP_PARTITIONS_START")
                continue
            runs.append(RunRequest(run_key=f"{key}:{digest}", partition_key=key))
        context.update_cursor(plan.cursor)
        return runs or SkipReason("no new landing files")

    return _sensor


def cdc_sensor(source, job):
    @sensor(
        name=f"{source.name}_cdc_sensor",
        job=job,
        minimum_interval_seconds=INTERVAL_S,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Apply new change files of {source.name}.",
    )
    def _sensor(context: SensorEvaluationContext, landing_zone: LandingZoneResource, warehouse: WarehouseResource):
        folder = source.path.split("/")[-1] if source.path else source.name
        files = landing_zone.cdc_files(folder)
        digest = file_set_digest(f.path for f in files)
        if not files or digest == context.cursor:
            return SkipReason("no new change files")
        if context.cursor is None:  # first tick: start at what is loaded
            try:
                loaded = loaded_files(warehouse, source.name).get("", set())
            except TimeoutError:
                return SkipReason("first tick: the warehouse is busy; the starting cursor is set at the next tick")
            if is_loaded([f.path for f in files], loaded, landing_zone.base()):
                context.update_cursor(digest)
                return SkipReason("every change file is loaded already")
        context.update_cursor(digest)
        return RunRequest(run_key=f"{source.name}:{digest}")

    return _sensor
