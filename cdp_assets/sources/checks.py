"""Checks on the sources: volumes of the partitions a run loaded, and input files that no run reads.

Volume is a warning, not a block: a sale or an outage legitimately moves volumes, but a tracking snippet
removed from a page or an export that stopped halfway shows up here first. Stray files are a warning too:
nothing is wrong with what was loaded, but a file in the wrong place (or for an hour outside the
partitions) would otherwise be skipped in silence.
"""

from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from statistics import median

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check

from cdp_assets.sources.assets import input_folder, raw_key
from cdp_assets.sources.store import raw_store
from cdp_resources import LandingZoneResource, WarehouseResource
from cdp_resources.landing import InputFolder, StrayFile

TRAILING = {"hourly": 24, "daily": 7}
STEP = {"hourly": timedelta(hours=1), "daily": timedelta(days=1)}
KEY_FORMAT = {"hourly": "%Y-%m-%d-%H:%M", "daily": "%Y-%m-%d"}
LOW, HIGH = 0.25, 4.0  # a closed partition below a quarter or above four times the trailing median
MIN_MEDIAN = 20  # too few records to judge
LISTED = 50  # files or partitions named in a check's metadata; the rest are counted


def _judge(counts: dict[str, int], partitions: str, key: str, first: str) -> dict:
    """One partition against the TRAILING ones before it (those since the first holding records; a
    partition without records in between counts 0)."""
    fmt, at = KEY_FORMAT[partitions], datetime.strptime(key, KEY_FORMAT[partitions])
    window = [(at - STEP[partitions] * n).strftime(fmt) for n in range(1, TRAILING[partitions] + 1)]
    trailing = [counts.get(k, 0) for k in window if k >= first]
    records = counts.get(key, 0)
    if not trailing:
        return {"partition": key, "records": records, "passed": True, "reason": "no partition before it yet"}
    typical = median(trailing)
    ratio = records / typical if typical else None
    passed = typical < MIN_MEDIAN or (ratio is not None and LOW <= ratio <= HIGH)
    return {"partition": key, "records": records, "trailing_median": typical,
            "ratio": round(ratio, 3) if ratio is not None else None, "passed": passed}


def volume_anomalies(counts: dict[str, int], partitions: str, now: datetime, judged: Iterable[str] | None = None) -> dict:
    """Judge each closed partition of `judged` (default: the newest closed one holding records) against
    its trailing ones; the partition in progress is not judged. Partition keys sort in time order."""
    current = now.strftime(KEY_FORMAT[partitions].replace("%M", "00"))
    held = sorted(k for k, n in counts.items() if k and n)
    if judged is None:
        judged = [k for k in held if k < current][-1:]
    keys = sorted(k for k in set(judged) if k < current)
    if not held or not keys:
        return {"passed": True, "judged": 0, "reason": "no closed partition with records to judge"}
    verdicts = [_judge(counts, partitions, key, held[0]) for key in keys]
    anomalies = [v for v in verdicts if not v["passed"]]
    newest = {k: v for k, v in verdicts[-1].items() if k != "passed"}
    return {"passed": not anomalies, "judged": len(verdicts), **newest, "anomalies": anomalies}


def _partitions_loaded(context: AssetCheckExecutionContext, newest: list[str]) -> list[str] | None:
    """The partitions this run materialized; checked on its own, those of the newest load."""
    run = context.op_execution_context
    if run.has_partition_key or run.has_partition_key_range:
        return list(run.partition_keys)
    return newest or None


def volume_check(source):
    @asset_check(
        pool="warehouse",
        asset=raw_key(source.name),
        name="volume_within_usual_range",
        description=f"Each closed {source.partitions} partition the run loaded holds {LOW:g}x-{HIGH:g}x the median "
        f"of the {TRAILING[source.partitions]} before it.",
    )
    def _check(context: AssetCheckExecutionContext, warehouse: WarehouseResource) -> AssetCheckResult:
        held = raw_store(warehouse.engine()).partition_counts(f"raw.{source.name}")
        if held is None:
            return AssetCheckResult(passed=True, severity=AssetCheckSeverity.WARN, metadata={"reason": "no records yet"})
        counts, newest = held
        judged = _partitions_loaded(context, newest)
        verdict = volume_anomalies(counts, source.partitions, datetime.now(timezone.utc), judged)
        passed, anomalies = verdict.pop("passed"), verdict.pop("anomalies", [])
        rows = [f"| {a['partition']} | {a['records']} | {a['trailing_median']:g} | {a['ratio']} |" for a in anomalies[:LISTED]]
        table_md = "\n".join(["| partition | records | trailing median | ratio |", "|---|---|---|---|", *rows])
        more = f"\n\n… and {len(anomalies) - LISTED} more" if len(anomalies) > LISTED else ""
        return AssetCheckResult(
            passed=passed, severity=AssetCheckSeverity.WARN,
            metadata={**verdict, "out_of_range": len(anomalies), "anomalies": MetadataValue.md(table_md + more if anomalies else "none")},
        )

    return _check


def strays_of(folder: InputFolder, strays: list[StrayFile]) -> list[StrayFile]:
    """The stray files shown on one source: those in its folder, and those in a folder of its area that
    no source reads (e.g. `landing/<unknown source>/` on every landing source)."""
    return [s for s in strays if s.folder == folder or (s.folder is None and s.path.startswith(f"{folder.area}/"))]


def stray_files_markdown(strays: list[StrayFile]) -> str:
    lines = [f"- `{s.path}`: {s.reason}" for s in strays[:LISTED]]
    if len(strays) > LISTED:
        lines.append(f"- … and {len(strays) - LISTED} more")
    return "\n".join(lines) or "none"


def stray_files_check(source, folders: list[InputFolder]):
    folder = input_folder(source)

    @asset_check(
        asset=raw_key(source.name),
        name="every_input_file_read",
        description=f"Every file in {folder.area}/{folder.name}/ is one that an extract reads: files in a wrong place, "
        "with a wrong name or suffix, or for a partition outside the partitions are listed with the reason.",
    )
    def _check(landing_zone: LandingZoneResource) -> AssetCheckResult:
        strays = strays_of(folder, landing_zone.stray_files(folders))
        return AssetCheckResult(
            passed=not strays, severity=AssetCheckSeverity.WARN,
            metadata={"stray_files": len(strays), "files": MetadataValue.md(stray_files_markdown(strays))},
        )

    return _check
