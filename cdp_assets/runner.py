"""`cdp run`: materialize every asset over the data present, stage by stage, with progress.

Partitioned source extracts run once per source over the whole range of partitions that have input
(a single-run backfill), then each downstream stage runs in dependency order. Runs go to the Dagster
instance of `DAGSTER_HOME` when set (so the UI shows them), else to an ephemeral one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dagster import AssetCheckSeverity, AssetSelection, DagsterInstance, materialize
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from cdp_assets.config import load_sources
from cdp_assets.refresh import PARSE_VIEWS
from cdp_assets.sample_orders_api import orders_api_for_run
from cdp_assets.sources.assets import input_folder, input_folders, raw_key
from cdp_assets.sources.checks import stray_files_markdown
from cdp_resources import LandingZoneResource, WarehouseResource
from cdp_resources.landing import StrayFile

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
PUBLIC_TABLES = [
    "events", "quarantine", "tracking_plan_violations", "identity_edges", "id_map", "identity_merges", "relationships",
    "profiles", "profile_history", "segment_membership", "segment_changes", "deliveries",
]
DOWNSTREAM_STAGES = ["events", "identity", "profiles", "segments", "online", "activation"]


@dataclass
class RunSummary:
    success: bool = True
    failures: list[str] = field(default_factory=list)
    tables: dict[str, int] = field(default_factory=dict)
    persons: int = 0
    segments: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    rejected_files: int = 0
    stray_files: list[StrayFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def partitions_present(source, landing_zone: LandingZoneResource) -> list[str]:
    """Partition keys of a source that have input files and exist in its partitions definition."""
    return sorted({f.partition_key for f in landing_zone.input_files(input_folder(source))})


def run_everything(progress: Callable[[str], None] = print) -> RunSummary:
    from cdp_assets.definitions import defs

    instance = DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()
    assets = list(defs.assets) + list(defs.asset_checks)
    resources = defs.resources
    summary = RunSummary()
    if not _erase_pending(instance, resources, summary, progress):
        return summary  # a person who asked to be erased must not flow on to profiles and destinations
    sources = load_sources()
    steps: list[tuple[str, AssetSelection, dict]] = []
    for source in sources.values():
        selection = AssetSelection.assets(raw_key(source.name))
        if source.partitions == "none":
            steps.append((f"source {source.name}", selection, {}))
            continue
        keys = partitions_present(source, resources["landing_zone"])
        if not keys:
            progress(f"  source {source.name}: no input files, skipped")
            continue
        tags = {ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]}
        steps.append((f"source {source.name} ({len(keys)} {source.partitions} partitions {keys[0]} … {keys[-1]})", selection, tags))
    # Validation builds the parse views itself, when missing or changed (cdp_assets/events/validate.py).
    steps += [(stage, AssetSelection.groups(stage) - PARSE_VIEWS, {}) for stage in DOWNSTREAM_STAGES]

    with orders_api_for_run(resources["orders_api"], resources["landing_zone"].base()) as (orders_api, note):
        if any(source.kind == "api" for source in sources.values()):
            progress(f"  {note}")
        _run_steps(steps, assets, {**resources, "orders_api": orders_api}, instance, summary, progress)
    _fill_summary(summary, resources["warehouse"])
    summary.stray_files = resources["landing_zone"].stray_files(input_folders(sources.values()))
    return summary


def _run_steps(steps, assets, resources, instance, summary: RunSummary, progress: Callable[[str], None]) -> None:
    for number, (name, selection, tags) in enumerate(steps, start=1):
        started = time.monotonic()
        progress(f"[{number}/{len(steps)}] {name} …")
        result = materialize(
            assets, selection=selection, resources=resources, instance=instance, tags=tags,
            run_config=QUIET, raise_on_error=False,
        )
        failed = [_step_error(e) for e in result.all_events if e.is_step_failure]
        failed += [
            f"check {c.check_name} on {c.asset_key.to_user_string()} failed"
            for c in result.get_asset_check_evaluations() if not c.passed
        ]
        summary.warnings += [
            f"{name}: check {c.check_name} on {c.asset_key.to_user_string()} warns"
            for c in result.get_asset_check_evaluations() if not c.passed and c.severity == AssetCheckSeverity.WARN
        ]
        status = "ok" if result.success else "FAILED"
        progress(f"[{number}/{len(steps)}] {name}: {status} in {time.monotonic() - started:.1f}s")
        if not result.success:
            summary.success = False
            summary.failures += [f"{name}: {message}" for message in failed] or [f"{name}: run failed"]
            blocked = any(not c.passed and getattr(c, "blocking", False) for c in result.get_asset_check_evaluations())
            # A source or a segment that fails fails alone: the others' data still flows and is delivered.
            # A failed stage in between, or a blocking check, stops what would build on it.
            if blocked or not (name.startswith("source ") or name == "segments"):
                break


def _erase_pending(instance, resources, summary: RunSummary, progress: Callable[[str], None]) -> bool:
    """Pending erasure requests first, as a `privacy_job` run; False (and the run stops) if it fails."""
    from cdp_assets.privacy.erase import pending_requests
    from cdp_assets.privacy.jobs import privacy_job
    from cdp_resources.settings import data_dir

    waiting = len(pending_requests(data_dir()))
    if not waiting:
        return True
    started = time.monotonic()
    progress(f"[0] privacy: {waiting} erasure request(s) …")
    result = privacy_job.execute_in_process(
        instance=instance, resources={"warehouse": resources["warehouse"]}, run_config=QUIET, raise_on_error=False,
    )
    progress(f"[0] privacy: {'ok' if result.success else 'FAILED'} in {time.monotonic() - started:.1f}s")
    if not result.success:
        summary.success = False
        summary.failures += [f"privacy: {_step_error(e)}" for e in result.all_events if e.is_step_failure] or ["privacy: run failed"]
    return result.success


def _step_error(event) -> str:
    """The root cause of a step failure (a segment's `file:line: ...`), not Dagster's wrapper around it."""
    error = getattr(event.event_specific_data, "error", None)
    while error is not None and error.cause is not None:
        error = error.cause
    return error.message.strip() if error is not None else event.message


def _fill_summary(summary: RunSummary, warehouse: WarehouseResource) -> None:
    """The tables' rows, persons, segment sizes, quarantine and rejected files, read on the configured engine."""
    engine = warehouse.engine()
    if engine.name == "spark":
        _fill_summary_on_spark(summary, engine)
        return
    with engine.connect() as con:
        tables = {r[0] for r in con.execute("SELECT table_schema || '.' || table_name FROM information_schema.tables").fetchall()}
        for name in PUBLIC_TABLES:
            if f"cdp.{name}" in tables:
                summary.tables[f"cdp.{name}"] = con.execute(f"SELECT count(*) FROM cdp.{name}").fetchone()[0]
        if "cdp.profiles" in tables:
            summary.persons = con.execute("SELECT count(*) FROM cdp.profiles").fetchone()[0]
        if "cdp.segment_membership" in tables:
            summary.segments = dict(con.execute(
                "SELECT segment, count(*) FROM cdp.segment_membership GROUP BY segment ORDER BY segment").fetchall())
        if "cdp.quarantine" in tables:
            summary.quarantined = dict(con.execute(
                "SELECT source, count(*) FROM cdp.quarantine GROUP BY source ORDER BY source").fetchall())
        if "raw.rejected_files" in tables:
            summary.rejected_files = con.execute("SELECT count(*) FROM raw.rejected_files").fetchone()[0]


def _fill_summary_on_spark(summary: RunSummary, engine) -> None:
    """The same counts over the Spark warehouse's Parquet tables, those that exist."""
    for name in PUBLIC_TABLES:
        if engine.table_exists(f"cdp.{name}"):
            summary.tables[f"cdp.{name}"] = engine.table(f"cdp.{name}").count()
    summary.persons = summary.tables.get("cdp.profiles", 0)

    def sizes(table: str, column: str) -> dict[str, int]:
        if not engine.table_exists(table):
            return {}
        rows = engine.table(table).groupBy(column).count().collect()
        return dict(sorted((tuple(row) for row in rows), key=lambda row: (row[0] is None, row[0] or "")))

    summary.segments = sizes("cdp.segment_membership", "segment")
    summary.quarantined = sizes("cdp.quarantine", "source")
    if engine.table_exists("raw.rejected_files"):
        summary.rejected_files = engine.table("raw.rejected_files").count()


def format_summary(summary: RunSummary) -> str:
    lines = ["", "Public tables (rows):"]
    lines += [f"  {name:<28} {rows:>10,}" for name, rows in summary.tables.items()]
    lines.append(f"Persons: {summary.persons:,}")
    lines.append("Segments: " + (", ".join(f"{k} {v:,}" for k, v in summary.segments.items()) or "none"))
    lines.append("Quarantined: " + (", ".join(f"{k} {v:,}" for k, v in summary.quarantined.items()) or "none"))
    lines.append(f"Rejected files (data/landing/_rejected): {summary.rejected_files}")
    lines.append(f"Files no run reads: {len(summary.stray_files)}")
    if summary.stray_files:
        lines += [f"  {line[2:]}" for line in stray_files_markdown(summary.stray_files).splitlines()]
    if summary.warnings:
        lines.append("Warnings:")
        lines += [f"  {warning}" for warning in summary.warnings]
    if summary.failures:
        lines.append("FAILED:")
        lines += [f"  {failure}" for failure in summary.failures]
    return "\n".join(lines)
