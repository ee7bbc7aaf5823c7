"""The validated layer: `cdp.events`, `validated.<source>` tables and `cdp.quarantine`.

One asset writes all of them because the quarantine is one table for every source: each raw record ends
in exactly one place, accepted or quarantined with its reasons, and the counts reconcile. A run judges only
the raw partitions that changed since the last one (cdp_assets/events/validate.py).
"""

from datetime import timedelta

import polars as pl
from dagster import (
    AssetExecutionContext, AssetKey, AssetMaterialization, AssetObservation, AssetOut, MetadataValue, Output, multi_asset,
)

from cdp_assets.config import SourceConfig, load_sources
from cdp_assets.events.pii import load_pii_rules
from cdp_assets.events.rules import great_expectations_result, load_suite, preload_great_expectations
from cdp_assets.events.validate import validate_sources_in
from cdp_assets.metadata import markdown_preview
from cdp_assets.sources.assets import raw_key
from cdp_resources import WarehouseResource
from cdp_resources.settings import clock, config_dir

# Great Expectations' suite result (metadata) is computed on at most this many records per source judged in
# the run: the row-level verdict comes from the polars rules over every record.
GE_SAMPLE_ROWS = 100_000


def validated_key(source: SourceConfig) -> AssetKey:
    return AssetKey(["cdp", "events"]) if source.produces_events else AssetKey(["validated", source.name])


def parsed_key(source: SourceConfig) -> AssetKey:
    """The dbt view that parses the source's raw records into typed columns."""
    return AssetKey(["staging", "parsed_events" if source.produces_events else "parsed_records"])


def build_validation_asset(sources: dict[str, SourceConfig]):
    table_sources = [s for s in sources.values() if not s.produces_events]
    common = {"kinds": {"duckdb", "polars"}, "owners": ["team:data-platform"]}
    outs = {"events": AssetOut(key=["cdp", "events"], description="Every validated event, one row per messageId.", **common)}
    outs["quarantine"] = AssetOut(
        key=["cdp", "quarantine"], description="Every rejected record with its reasons; nothing is dropped silently.", **common
    )
    for source in table_sources:
        outs[source.name] = AssetOut(
            key=validated_key(source).path,
            description=f"Validated current state of {source.name} (one row per {source.primary_key}).",
            **common,
        )

    @multi_asset(
        name="validate_records",
        outs=outs,
        deps=sorted({parsed_key(s) for s in sources.values()}, key=lambda k: k.to_user_string()),
        group_name="events",
        pool="warehouse",
        can_subset=False,
    )
    def validate_records(context: AssetExecutionContext, warehouse: WarehouseResource):
        """Judge the raw partitions that changed by the suites in expectations/; merge accepted and quarantined rows."""
        now = clock()
        parameters = {"max_event_time": now + timedelta(days=1)}
        pii = load_pii_rules(config_dir() / "pii.yaml")
        preload_great_expectations()
        run = validate_sources_in(warehouse.engine(), sources, pii, parameters, now, log=context.log.info)
        if run.parse_views_rebuilt:
            for key in sorted({parsed_key(s) for s in sources.values()}, key=lambda k: k.to_user_string()):
                context.log_event(AssetMaterialization(asset_key=key, description="rebuilt: missing, or what it is built from changed"))
        batch, results, totals, reconciliation = run.batch, run.results, run.totals, run.reconciliation
        # Outside the warehouse connection: GE's suite result is CPU work and must not hold the writer.
        suite_results = {
            name: great_expectations_result(r.sample.head(GE_SAMPLE_ROWS), load_suite("events" if sources[name].produces_events else name), parameters)
            for name, r in results.items() if r.sample is not None
        }
        judged = {(name, key) for name, r in results.items() for key in r.partitions}
        for source, key, records, accepted, quarantined in reconciliation:
            if (source, key) in judged and sources[source].partitions != "none":
                # Each raw partition's page in the UI plots its own counts (only those judged in this run).
                context.log_event(AssetObservation(asset_key=raw_key(source), partition=key, metadata={
                    "accepted": accepted, "quarantined": quarantined,
                    "quarantine_rate": round(quarantined / records, 4) if records else 0.0,
                }))
        this_run = {
            name: {"partitions_judged": len(r.partitions), "records": r.records, "accepted": r.accepted,
                   "quarantined": r.quarantined, "rate": round(r.quarantined / r.records, 4) if r.records else 0.0,
                   **({"flagged": r.flagged, "violation_rate": round(r.flagged / r.records, 4) if r.records else 0.0}
                      if sources[name].produces_events else {})}
            for name, r in results.items()
        }
        events = [s.name for s in sources.values() if s.produces_events]
        judged_events = [results[n] for n in events]
        samples = [r.quarantine_sample for r in results.values() if r.quarantine_sample is not None and len(r.quarantine_sample)]
        yield Output(None, output_name="events", metadata={
            "dagster/row_count": totals["cdp.events"],
            "duplicates_held": totals["core.event_duplicates"],
            "judged_this_run": sum(r.records for r in judged_events),
            "accepted_this_run": sum(r.accepted for r in judged_events),
            "batch": batch,
            # Tracking-plan violations flagged on kept events (cdp.tracking_plan_violations), per source.
            "tracking_plan_violations": totals["cdp.tracking_plan_violations"],
            "violation_rates": MetadataValue.json(totals["violation_rates"]),
            "violations_this_run": MetadataValue.json(
                {n: {k: this_run[n][k] for k in ("records", "flagged", "violation_rate")} for n in events}),
            "great_expectations": MetadataValue.json({n: suite_results[n] for n in events if n in suite_results}),
        })
        yield Output(None, output_name="quarantine", metadata={
            "dagster/row_count": totals["cdp.quarantine"],
            "quarantined_this_run": sum(r.quarantined for r in results.values()),
            "this_run": MetadataValue.json(this_run),
            "reasons": MetadataValue.json(totals["reasons"]),
            "samples": markdown_preview(samples[0].select("source", "reasons", "record") if samples else pl.DataFrame(), rows=10),
        })
        for source in table_sources:
            r = results[source.name]
            yield Output(None, output_name=source.name, metadata={
                "dagster/row_count": totals[f"validated.{source.name}"],
                **this_run[source.name],
                "tombstones": r.tombstones,
                **({"great_expectations": MetadataValue.json(suite_results[source.name])} if source.name in suite_results else {}),
            })

    return validate_records


def validation_assets():
    return build_validation_asset(load_sources())
