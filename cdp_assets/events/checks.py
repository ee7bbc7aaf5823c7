"""Checks on the validated layer."""

from dagster import AssetCheckResult, MetadataValue, asset_check

from cdp_resources import WarehouseResource
from cdp_resources.warehouse import table_exists


@asset_check(asset=["cdp", "events"], blocking=True, description="Every event id appears once.")
def unique_event_ids(warehouse: WarehouseResource) -> AssetCheckResult:
    with warehouse.connect() as con:
        total, distinct, missing = con.execute(
            "SELECT count(*), count(DISTINCT event_id), count(*) FILTER (WHERE event_id IS NULL) FROM cdp.events"
        ).fetchone()
    return AssetCheckResult(
        passed=total == distinct and missing == 0,
        metadata={"rows": total, "duplicates": total - distinct, "null_ids": missing},
    )


@asset_check(
    asset=["cdp", "quarantine"],
    blocking=True,
    description="Nothing is lost: per source, raw records = accepted + quarantined, and the tables agree.",
)
def records_reconcile(warehouse: WarehouseResource) -> AssetCheckResult:
    problems, per_source = [], {}
    with warehouse.connect() as con:
        for source, records, accepted, quarantined, kind in con.execute("SELECT * FROM validated.reconciliation").fetchall():
            raw = con.execute(f'SELECT count(*) FROM raw."{source}"').fetchone()[0] if table_exists(con, f"raw.{source}") else 0
            stored = con.execute("SELECT count(*) FROM cdp.quarantine WHERE source = ?", [source]).fetchone()[0]
            per_source[source] = {"raw": raw, "accepted": accepted, "quarantined": quarantined}
            if records != accepted + quarantined or raw != records or stored != quarantined:
                problems.append(f"{source}: raw {raw}, judged {records}, accepted {accepted}, quarantined {quarantined} (stored {stored})")
    return AssetCheckResult(
        passed=not problems,
        metadata={"per_source": MetadataValue.json(per_source), "problems": MetadataValue.md("\n".join(problems) or "none")},
    )
