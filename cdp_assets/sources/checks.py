"""Checks on the sources: the volume of the newest closed partition, and input files that no run reads.

Volume is a warning, not a block: a sale or an outage legitimately moves volumes, but a tracking snippet
removed from a page or an export that stopped halfway shows up here first. Stray files are a warning too:
nothing is wrong with what was loaded, but a file in the wrong place (or for an hour outside the
partitions) would otherwise be skipped in silence.
"""

from datetime import datetime, timezone
from statistics import median

from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check

from cdp_assets.sources.assets import input_folder, raw_key
from cdp_resources import LandingZoneResource, WarehouseResource
from cdp_resources.landing import InputFolder, StrayFile
from cdp_resources.warehouse import table_exists

TRAILING = {"hourly": 24, "daily": 7}
LOW, HIGH = 0.25, 4.0  # a closed partition below a quarter or above four times the trailing median
MIN_MEDIAN = 20  # too few records to judge
LISTED = 50  # files named in a check's metadata; the rest are counted


def volume_anomalies(counts: dict[str, int], partitions: str, now: datetime) -> dict:
    """Judge the newest closed partition against the trailing ones (partition keys sort in time order)."""
    current = now.strftime("%Y-%m-%d-%H:00" if partitions == "hourly" else "%Y-%m-%d")
    closed = sorted(k for k in counts if k and k < current)
    if len(closed) < 2:
        return {"passed": True, "reason": "not enough closed partitions yet"}
    latest, trailing = closed[-1], [counts[k] for k in closed[-1 - TRAILING[partitions] : -1]]
    typical = median(trailing)
    ratio = counts[latest] / typical if typical else None
    passed = typical < MIN_MEDIAN or (ratio is not None and LOW <= ratio <= HIGH)
    return {"passed": passed, "partition": latest, "records": counts[latest], "trailing_median": typical,
            "ratio": round(ratio, 3) if ratio is not None else None}


def volume_check(source):
    @asset_check(
        asset=raw_key(source.name),
        name="volume_within_usual_range",
        description=f"The newest closed {source.partitions} partition holds {LOW:g}x-{HIGH:g}x the median "
        f"of the {TRAILING[source.partitions]} before it.",
    )
    def _check(warehouse: WarehouseResource) -> AssetCheckResult:
        with warehouse.connect() as con:
            counts = (
                dict(con.execute(f'SELECT partition_key, count(*) FROM raw."{source.name}" GROUP BY 1').fetchall())
                if table_exists(con, f"raw.{source.name}") else {}
            )
        verdict = volume_anomalies(counts, source.partitions, datetime.now(timezone.utc))
        passed = verdict.pop("passed")
        return AssetCheckResult(passed=passed, severity=AssetCheckSeverity.WARN, metadata=verdict)

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
