"""Volume checks on partitioned sources: a closed partition far from its usual size is worth a look.

A warning, not a block: a sale or an outage legitimately moves volumes, but a tracking snippet removed
from a page or an export that stopped halfway shows up here first.
"""

from datetime import datetime, timezone
from statistics import median

from dagster import AssetCheckResult, AssetCheckSeverity, asset_check

from cdp_assets.sources.assets import raw_key
from cdp_resources import WarehouseResource
from cdp_resources.warehouse import table_exists

TRAILING = {"hourly": 24, "daily": 7}
LOW, HIGH = 0.25, 4.0  # a closed partition below a quarter or above four times the trailing median
MIN_MEDIAN = 20  # too few records to judge


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
