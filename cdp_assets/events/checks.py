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
    description="Nothing is lost: per source and partition, raw records = accepted + quarantined, and the tables agree.",
)
def records_reconcile(warehouse: WarehouseResource) -> AssetCheckResult:
    problems, per_source = [], {}
    with warehouse.connect() as con:
        judged = con.execute("SELECT source, partition_key, records, accepted, quarantined FROM validated.reconciliation").fetchall()
        raw, stored = {}, {}
        for source in {row[0] for row in judged}:
            if table_exists(con, f"raw.{source}"):
                raw |= {(source, k): n for k, n in con.execute(f'SELECT partition_key, count(*) FROM raw."{source}" GROUP BY 1').fetchall()}
        stored = {(s, k): n for s, k, n in con.execute("SELECT source, partition_key, count(*) FROM cdp.quarantine GROUP BY 1, 2").fetchall()}
    seen = set()
    for source, partition, records, accepted, quarantined in judged:
        key = (source, partition)
        seen.add(key)
        totals = per_source.setdefault(source, {"partitions": 0, "raw": 0, "accepted": 0, "quarantined": 0})
        totals["partitions"] += 1
        totals["raw"] += raw.get(key, 0)
        totals["accepted"] += accepted
        totals["quarantined"] += quarantined
        if records != accepted + quarantined or raw.get(key, 0) != records or stored.get(key, 0) != quarantined:
            problems.append(
                f"{source} {partition or '(unpartitioned)'}: raw {raw.get(key, 0)}, judged {records}, "
                f"accepted {accepted}, quarantined {quarantined} (stored {stored.get(key, 0)})"
            )
    problems += [f"{s} {k}: {n} raw records never judged" for (s, k), n in raw.items() if (s, k) not in seen]
    return AssetCheckResult(
        passed=not problems,
        metadata={
            "per_source": MetadataValue.json(per_source),
            "problems": MetadataValue.md("\n".join(f"- {p}" for p in problems[:50]) or "none"),
        },
    )
