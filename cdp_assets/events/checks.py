"""Checks on the validated layer."""

from dagster import AssetCheckResult, AssetCheckSeverity, asset_check

from cdp_resources import WarehouseResource


@asset_check(asset=["cdp", "events"], blocking=True, description="Every event id appears once.")
def unique_event_ids(warehouse: WarehouseResource) -> AssetCheckResult:
    with warehouse.connect() as con:
        total, distinct, missing = con.execute(
            "SELECT count(*), count(DISTINCT event_id), count(*) FILTER (WHERE event_id IS NULL) FROM cdp.events"
        ).fetchone()
    return AssetCheckResult(
        passed=total == distinct and missing == 0,
        severity=AssetCheckSeverity.ERROR,
        metadata={"rows": total, "duplicates": total - distinct, "null_ids": missing},
    )
