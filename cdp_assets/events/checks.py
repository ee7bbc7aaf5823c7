"""Checks on the validated layer."""

from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check

from cdp_assets.config import load_sources
from cdp_resources import WarehouseResource
from cdp_resources.warehouse import table_exists

MIN_RECORDS = 20  # a partition this small says nothing about a source's health


@asset_check(asset=["cdp", "events"], blocking=True, description="Every event id appears once.", pool="warehouse")
def unique_event_ids(warehouse: WarehouseResource) -> AssetCheckResult:
    total, distinct, missing = event_id_counts(warehouse.engine())
    return AssetCheckResult(
        passed=total == distinct and missing == 0,
        metadata={"rows": total, "duplicates": total - distinct, "null_ids": missing},
    )


@asset_check(
    pool="warehouse",
    asset=["cdp", "quarantine"],
    blocking=True,
    description="Nothing is lost: per source and partition, the raw records equal what was written as accepted "
    "(cdp.events and its held duplicates, or validated.<source>_changes) plus what was quarantined, each counted "
    "in its own table.",
)
def records_reconcile(warehouse: WarehouseResource) -> AssetCheckResult:
    counts = reconcile_counts(warehouse.engine(), load_sources())
    problems, per_source = [], {}
    for (source, key), (raw, accepted, quarantined) in sorted(counts.items()):
        totals = per_source.setdefault(source, {"partitions": 0, "raw": 0, "accepted": 0, "quarantined": 0})
        totals["partitions"] += 1
        totals["raw"] += raw
        totals["accepted"] += accepted
        totals["quarantined"] += quarantined
        if raw != accepted + quarantined:
            what = "never judged" if accepted + quarantined == 0 else "lost" if raw > accepted + quarantined else "extra"
            problems.append(f"{source} {key or '(unpartitioned)'}: raw {raw}, accepted {accepted}, quarantined {quarantined} ({what})")
    return AssetCheckResult(
        passed=not problems,
        metadata={
            "per_source": MetadataValue.json(per_source),
            "problems": MetadataValue.md("\n".join(f"- {p}" for p in problems[:50]) or "none"),
        },
    )


@asset_check(
    pool="warehouse",
    asset=["cdp", "quarantine"],
    description="Per source and raw partition, the share of records quarantined stays at or below the source's "
    "`max_quarantine_rate` (config/sources.yaml, default 5%), judged on partitions of at least 20 records.",
)
def quarantine_rate_within_bounds(warehouse: WarehouseResource) -> AssetCheckResult:
    sources = load_sources()
    rows = reconciliation_rows(warehouse.engine(), MIN_RECORDS)
    high = [
        (source, key, quarantined / records)
        for source, key, records, quarantined in rows
        if source in sources and quarantined / records > sources[source].max_quarantine_rate
    ]
    high.sort(key=lambda row: -row[2])
    return AssetCheckResult(
        passed=not high,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "partitions_judged": len(rows),
            "partitions_above": len(high),
            "worst_rate": round(high[0][2], 4) if high else 0.0,
            "above": MetadataValue.md("\n".join(f"- {s} {k or '(unpartitioned)'}: {r:.1%}" for s, k, r in high[:50]) or "none"),
        },
    )


# What the checks read, on the warehouse's engine (the one place the checks differ by engine).

def event_id_counts(engine) -> tuple[int, int, int]:
    """(rows, distinct event ids, rows without one) of cdp.events."""
    if engine.name == "spark":
        from cdp_assets.events.spark import event_id_counts_on_spark

        return event_id_counts_on_spark(engine)
    with engine.connect() as con:
        return con.execute(
            "SELECT count(*), count(DISTINCT event_id), count(*) FILTER (WHERE event_id IS NULL) FROM cdp.events"
        ).fetchone()


def reconcile_counts(engine, sources) -> dict:
    """(source, partition_key) -> (raw, accepted, quarantined) records, each counted in its own table."""
    if engine.name == "spark":
        from cdp_assets.events.spark import reconcile_counts_on_spark

        return reconcile_counts_on_spark(engine, sources)
    with engine.connect() as con:
        counts = {}
        for source in sources.values():
            if not table_exists(con, f"raw.{source.name}"):
                continue
            written = (
                ["cdp.events", "core.event_duplicates"] if source.produces_events else [f"validated.{source.name}_changes"]
            )
            parts = [f'SELECT partition_key, count(*) AS n, 0 AS a, 0 AS q FROM raw."{source.name}" GROUP BY 1']
            where = "raw_source = $source" if source.produces_events else "true"
            parts += [f"SELECT partition_key, 0, count(*), 0 FROM {t} WHERE {where} GROUP BY 1" for t in written if table_exists(con, t)]
            parts.append("SELECT partition_key, 0, 0, count(*) FROM cdp.quarantine WHERE source = $source GROUP BY 1")
            for key, raw, accepted, quarantined in con.execute(
                f"SELECT partition_key, sum(n), sum(a), sum(q) FROM ({' UNION ALL '.join(parts)}) GROUP BY 1",
                {"source": source.name},
            ).fetchall():
                counts[(source.name, key)] = (raw, accepted, quarantined)
    return counts


def reconciliation_rows(engine, at_least: int) -> list[tuple]:
    """(source, partition_key, records, quarantined) of validated.reconciliation for partitions of `at_least` records."""
    if engine.name == "spark":
        from cdp_assets.events.spark import reconciliation_rows_on_spark

        return reconciliation_rows_on_spark(engine, at_least)
    with engine.connect() as con:
        return con.execute(
            "SELECT source, partition_key, records, quarantined FROM validated.reconciliation WHERE records >= $at_least",
            {"at_least": at_least},
        ).fetchall() if table_exists(con, "validated.reconciliation") else []
