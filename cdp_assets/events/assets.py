"""The validated layer: `cdp.events`, `validated.<source>` tables and `cdp.quarantine`.

One asset writes all of them because the quarantine is one table for every source: each raw record ends
in exactly one place, accepted or quarantined with its reasons, and the counts reconcile.
"""


from datetime import datetime, timedelta, timezone

import polars as pl
from dagster import AssetExecutionContext, AssetKey, AssetObservation, AssetOut, MetadataValue, Output, multi_asset

from cdp_assets.config import SourceConfig, load_sources
from cdp_assets.events.parse import parse_changes, parse_events, parse_table
from cdp_assets.events.pii import load_pii_rules, protect_columns, protect_events
from cdp_assets.events.rules import apply_rules, great_expectations_result, load_suite, suite_rules
from cdp_assets.metadata import markdown_preview
from cdp_assets.sources.assets import raw_key
from cdp_resources import WarehouseResource
from cdp_resources.settings import config_dir
from cdp_resources.warehouse import replace_table, table_exists

EVENT_COLUMNS = [
    "event_id", "event_type", "event_name", "anonymous_id", "user_id", "previous_id", "group_id",
    "occurred_at", "received_at", "source", "properties", "traits", "context",
]
# Great Expectations' suite result (metadata) is computed on at most this many records per source: the
# row-level verdict comes from the polars rules over every record.
GE_SAMPLE_ROWS = 100_000
QUARANTINE_SCHEMA = {
    "source": pl.String, "record": pl.String, "reasons": pl.List(pl.String),
    "received_at": pl.Datetime("us"), "file": pl.String, "line_no": pl.Int64, "partition_key": pl.String,
}


def validated_key(source: SourceConfig) -> AssetKey:
    return AssetKey(["cdp", "events"]) if source.kind == "events" else AssetKey(["validated", source.name])


def split_accepted(frame: pl.DataFrame, rules, source: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(accepted rows, quarantine rows) of a parsed frame judged by `rules`."""
    judged = apply_rules(frame, rules)
    rejected = judged.filter(pl.col("reasons").list.len() > 0)
    quarantine = rejected.select(
        pl.lit(source).alias("source"), "record", "reasons", "received_at", "file", "line_no", "partition_key"
    ).cast(QUARANTINE_SCHEMA)
    return judged.filter(pl.col("reasons").list.len() == 0), quarantine


def latest_per_key(frame: pl.DataFrame, key: str, order: list[str]) -> pl.DataFrame:
    """One row per key: the last by `order` (a replayed record counts once)."""
    return frame.sort(order, nulls_last=False).unique(subset=[key], keep="last", maintain_order=True)


def without_tombstones(changes: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Debezium tombstones (a `null` line or a null payload) carry nothing to apply: the delete before
    them already ended the row. They are counted, not judged, so they never reach the quarantine."""
    tombstone = (pl.col("op") == "t").fill_null(False) | (pl.col("record").str.strip_chars() == "null")
    return changes.filter(~tombstone), changes.filter(tombstone).height


def build_validation_asset(sources: dict[str, SourceConfig]):
    table_sources = [s for s in sources.values() if s.kind != "events"]
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
        deps=[raw_key(name) for name in sources],
        group_name="events",
        pool="warehouse",
        can_subset=False,
    )
    def validate_records(context: AssetExecutionContext, warehouse: WarehouseResource):
        """Parse raw records, judge them by the suites in expectations/, write accepted and quarantined rows."""
        parameters = {"max_event_time": datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(days=1)}
        results, quarantines, events, tombstones, partitions, suite_inputs = {}, [], [], {}, {}, {}
        with warehouse.connect() as con:
            con.execute("SET TimeZone = 'UTC'")
            for source in sources.values():
                if not table_exists(con, f"raw.{source.name}"):
                    context.log.info(f"{source.name}: no raw table yet, nothing to validate")
                    frame = None
                elif source.kind == "events":
                    suite = load_suite("events")
                    frame = parse_events(con, source, suite.get("meta", {}).get("typed_properties", []))
                elif source.kind == "cdc":
                    suite = load_suite(source.name)
                    frame = parse_changes(con, source)
                else:
                    suite = load_suite(source.name)
                    frame = parse_table(con, source)
                if frame is None:
                    accepted, quarantine, total = None, pl.DataFrame(schema=QUARANTINE_SCHEMA), 0
                    partitions[source.name] = pl.DataFrame(schema={"partition_key": pl.String, "len": pl.UInt32})
                else:
                    partitions[source.name] = frame.group_by("partition_key").len()
                    if source.kind == "cdc":
                        frame, tombstones[source.name] = without_tombstones(frame)
                    rules = suite_rules(suite, parameters, frame.columns, f"expectations/{suite['name']}.json")
                    accepted, quarantine = split_accepted(frame, rules, source.name)
                    if len(frame):
                        suite_inputs[source.name] = (frame.head(GE_SAMPLE_ROWS), suite)
                    total = len(frame) + tombstones.get(source.name, 0)  # tombstones count as accepted
                quarantines.append(quarantine)
                results[source.name] = (total, accepted, quarantine)
                if source.kind == "events" and accepted is not None:
                    events.append(accepted)
                context.log.info(f"{source.name}: {total} records, {len(quarantine)} quarantined")

            pii = load_pii_rules(config_dir() / "pii.yaml")
            event_frame = protect_events(_events(events), pii)
            event_rows = replace_table(con, "cdp.events", event_frame)
            quarantine_frame = pl.concat(quarantines)
            quarantine_rows = replace_table(con, "cdp.quarantine", quarantine_frame)
            reconciliation = _reconciliation(results, partitions, sources)
            previous = (
                con.sql("SELECT * FROM validated.reconciliation").pl()
                if table_exists(con, "validated.reconciliation") else reconciliation.clear()
            )
            replace_table(con, "validated.reconciliation", reconciliation)
            table_rows = {}
            for source in table_sources:
                accepted = results[source.name][1]
                if accepted is not None:
                    accepted = protect_columns(accepted, source.name, pii)
                table_rows[source.name] = _write_table_source(con, source, accepted)

        # Outside the warehouse connection: GE's suite result is CPU work and must not hold the writer.
        suite_results = {name: great_expectations_result(sample, suite, parameters) for name, (sample, suite) in suite_inputs.items()}
        for observation in _partition_observations(reconciliation, previous, sources):
            context.log_event(observation)
        per_source = {
            name: {"records": total, "quarantined": len(q), "rate": round(len(q) / total, 4) if total else 0.0}
            for name, (total, _, q) in results.items()
        }
        yield Output(
            None,
            output_name="events",
            metadata={
                "dagster/row_count": event_rows,
                "duplicates_dropped": sum(len(f) for f in events) - event_rows,
                "preview": markdown_preview(event_frame.select("event_id", "event_type", "event_name", "user_id", "occurred_at")),
                "great_expectations": MetadataValue.json(
                    {s.name: suite_results[s.name] for s in sources.values() if s.kind == "events" and s.name in suite_results}
                ),
            },
        )
        yield Output(
            None,
            output_name="quarantine",
            metadata={
                "dagster/row_count": quarantine_rows,
                "quarantine_rate": round(quarantine_rows / max(1, sum(t for t, _, _ in results.values())), 4),
                "per_source": MetadataValue.json(per_source),
                "reasons": MetadataValue.json(_reason_counts(quarantine_frame)),
                "samples": markdown_preview(quarantine_frame.select("source", "reasons", "record"), rows=10),
            },
        )
        for source in table_sources:
            total, _, quarantine = results[source.name]
            yield Output(
                None,
                output_name=source.name,
                metadata={
                    "dagster/row_count": table_rows[source.name],
                    "records": total,
                    "quarantined": len(quarantine),
                    "quarantine_rate": per_source[source.name]["rate"],
                    **({"tombstones": tombstones[source.name]} if source.name in tombstones else {}),
                    **({"great_expectations": MetadataValue.json(suite_results[source.name])} if source.name in suite_results else {}),
                },
            )

    return validate_records


def _reconciliation(results: dict, partitions: dict[str, pl.DataFrame], sources: dict[str, SourceConfig]) -> pl.DataFrame:
    """Per source and partition: records judged, accepted, quarantined (the reconciliation check reads this)."""
    frames = []
    for name, (_, _, quarantine) in results.items():
        quarantined = quarantine.group_by("partition_key").len().rename({"len": "quarantined"})
        frames.append(
            partitions[name].rename({"len": "records"})
            .join(quarantined, on="partition_key", how="left")
            .select(
                pl.lit(name).alias("source"), "partition_key", pl.col("records").cast(pl.Int64),
                (pl.col("records") - pl.col("quarantined").fill_null(0)).cast(pl.Int64).alias("accepted"),
                pl.col("quarantined").fill_null(0).cast(pl.Int64), pl.lit(sources[name].kind).alias("kind"),
            )
        )
    schema = {"source": pl.String, "partition_key": pl.String, "records": pl.Int64, "accepted": pl.Int64,
              "quarantined": pl.Int64, "kind": pl.String}
    return pl.concat(frames).sort("source", "partition_key") if frames else pl.DataFrame(schema=schema)


def _partition_observations(reconciliation: pl.DataFrame, previous: pl.DataFrame, sources: dict[str, SourceConfig]):
    """Accepted/quarantined counts and the quarantine rate, observed on each raw partition whose counts
    changed: the partition's page in the UI plots them, without re-observing a year of unchanged hours."""
    columns = ["source", "partition_key", "records", "quarantined"]
    if set(columns) <= set(previous.columns):
        changed = reconciliation.join(previous.select(columns), on=columns, how="anti")
    else:
        changed = reconciliation
    for row in changed.iter_rows(named=True):
        if sources[row["source"]].partitions == "none":
            continue
        yield AssetObservation(
            asset_key=raw_key(row["source"]),
            partition=row["partition_key"],
            metadata={
                "accepted": row["accepted"],
                "quarantined": row["quarantined"],
                "quarantine_rate": round(row["quarantined"] / row["records"], 4) if row["records"] else 0.0,
            },
        )


def _events(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """Accepted messages of every events source, a `messageId` delivered twice counting once."""
    if not frames:
        times = {"occurred_at": pl.Datetime("us"), "received_at": pl.Datetime("us")}
        return pl.DataFrame(schema={c: times.get(c, pl.String) for c in EVENT_COLUMNS})
    events = pl.concat([f.select(EVENT_COLUMNS) for f in frames], how="vertical_relaxed")
    return events.sort(["received_at", "event_id"]).unique(subset=["event_id"], keep="first", maintain_order=True)


def _write_table_source(con, source: SourceConfig, accepted: pl.DataFrame | None) -> int:
    table = f"validated.{source.name}"
    columns = list(source.columns)
    if accepted is None:
        return replace_table(con, table, pl.DataFrame(schema={**_schema(source), "received_at": pl.Datetime("us")}))
    if source.kind == "cdc":
        changes = accepted.select(*columns, "op", "source_lsn", "source_ts_ms", "file", "line_no", "received_at")
        replace_table(con, f"{table}_changes", changes)
        current = latest_per_key(changes, source.primary_key, ["source_lsn", "source_ts_ms", "file", "line_no"])
        return replace_table(con, table, current.filter(pl.col("op") != "d").select(*columns, "received_at"))
    # A row's versions are ordered by its own time column where it has one (a CRM row's updated_at).
    order = [source.time_column, "received_at"] if source.time_column in columns else ["received_at"]
    current = latest_per_key(accepted.select(*columns, "received_at"), source.primary_key, order)
    return replace_table(con, table, current)


def _schema(source: SourceConfig) -> dict:
    polars_type = {"string": pl.String, "number": pl.Float64, "timestamp": pl.Datetime("us"),
                   "boolean": pl.Boolean, "list": pl.List(pl.String)}
    return {name: polars_type[kind] for name, kind in source.columns.items()}


def _reason_counts(quarantine: pl.DataFrame) -> dict[str, int]:
    if quarantine.is_empty():
        return {}
    codes = quarantine.select(pl.col("reasons").list.first().str.split(":").list.first().alias("code"))
    return {row["code"]: row["len"] for row in codes.group_by("code").len().sort("code").iter_rows(named=True)}


def validation_assets():
    return build_validation_asset(load_sources())
