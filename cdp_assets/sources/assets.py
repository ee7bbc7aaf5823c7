"""One extract asset per configured source, landing records verbatim in `raw.<source>`.

Every raw table has the same shape (partition_key, file, line_no, record, loaded_at) so that validation
is the one place that interprets records. Extracts are idempotent: a file extract replaces its
partitions (or its table) at once; a pull stores a record it already holds only once. How the raw
tables are written and read back on the warehouse's engine is cdp_assets/sources/store.py's business.
"""


import hashlib
import json
import warnings
import zlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import polars as pl
from dagster import (
    AssetExecutionContext,
    BetaWarning,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    FreshnessPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
)

from cdp_assets.batching import bounded_groups
from cdp_assets.config import SourceConfig
from cdp_assets.metadata import markdown_preview
from cdp_assets.privacy.files import strip_file
from cdp_assets.privacy.suppression import Suppressions, privacy_salt
from cdp_assets.sources.partitions import PARTITIONS
from cdp_assets.sources.readers import RECORDS_SCHEMA, TEXTS_SCHEMA, UnreadableFile, csv_records, file_text, jsonl_lines
from cdp_assets.sources.store import raw_store
from cdp_resources import LandingZoneResource, OrdersApiResource, WarehouseResource
from cdp_resources.landing import InputFile, InputFolder

# Single-run backfills (one run over a range of partitions) are what makes loading months of hourly
# partitions practical; the policy is marked beta, and we accept that knowingly.
warnings.filterwarnings("ignore", message=".*backfill_policy.*", category=BetaWarning)

# A source not extracted for this long is late (warn) or stale (fail): hourly streams every hour,
# daily batches and unpartitioned pulls (scheduled daily) every day.
FRESHNESS = {
    "hourly": FreshnessPolicy.time_window(fail_window=timedelta(hours=3), warn_window=timedelta(hours=2)),
    "daily": FreshnessPolicy.time_window(fail_window=timedelta(hours=50), warn_window=timedelta(hours=26)),
    "none": FreshnessPolicy.time_window(fail_window=timedelta(hours=50), warn_window=timedelta(hours=26)),
}
RAW_SCHEMA = pl.Schema(
    {"partition_key": pl.String, "file": pl.String, "line_no": pl.Int64, "record": pl.String, "loaded_at": pl.Datetime("us")}
)
BATCH_BYTES = 64 * 2**20  # text read before it is written: memory stays bounded whatever the backfill
GZIP_RATIO = 8  # a gzip file counts as this many times its size when cutting batches
# DuckDB's rows per row group: appending whole row groups leaves no partial ones to rewrite at checkpoint
# (batches cut anywhere made the file 60% larger and its close seconds slower).
ROW_GROUP = 122_880


def raw_key(source: str) -> AssetKey:
    return AssetKey(["raw", source])


def build_source_asset(source: SourceConfig) -> AssetsDefinition:
    """The extract asset for one source, by kind."""
    partitions_def = PARTITIONS[source.partitions]
    extract = {
        "events": _extract_partitions, "webhook": _extract_partitions, "csv": _extract_partitions, "cdc": _extract_cdc, "api": _extract_api,
        "postgres": _extract_postgres,
    }[source.kind]

    @asset(
        key=raw_key(source.name),
        name=None,
        group_name="sources",
        description=source.description or f"{source.kind} source {source.name}",
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run() if partitions_def else None,
        kinds={"duckdb", "python"},
        owners=["team:data-platform"],
        pool="warehouse",
        metadata={"source_kind": source.kind, "table": f"raw.{source.name}"},
        freshness_policy=FRESHNESS[source.partitions],
    )
    def _source_asset(
        context: AssetExecutionContext,
        warehouse: WarehouseResource,
        landing_zone: LandingZoneResource,
        orders_api: OrdersApiResource,
    ) -> MaterializeResult:
        store = raw_store(warehouse.engine())
        if source.kind in ("api", "postgres"):  # commit page by page; holding the lock over the network would stall others
            return extract(context, source, store, landing_zone, orders_api)
        # File extracts list, read, reject and store under the warehouse lock, so two runs never both
        # read a file that one of them is moving to _rejected.
        with store.lock():
            return extract(context, source, store, landing_zone, orders_api)

    return _source_asset


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _records_frame(rows: list[tuple[str, str, int, str]]) -> pl.DataFrame:
    loaded_at = _now()
    return pl.DataFrame(
        [(key, file, line, record, loaded_at) for key, file, line, record in rows], schema=RAW_SCHEMA, orient="row"
    )


def _suppressions(store, landing_zone) -> Suppressions:
    return store.suppressions(privacy_salt(landing_zone.base()))


def input_folder(source: SourceConfig) -> InputFolder | None:
    """Where a file source's extract reads; None for sources that are pulled (api, postgres)."""
    area = {"events": "landing", "webhook": "landing", "csv": "imports", "cdc": "cdc"}.get(source.kind)
    if area is None:
        return None
    name = source.path.split("/")[-1] if source.kind == "cdc" and source.path else source.name
    return InputFolder(area, name, PARTITIONS[source.partitions])


def input_folders(sources) -> list[InputFolder]:
    return [folder for folder in map(input_folder, sources) if folder]


def _batches(files: list[InputFile]) -> Iterator[list[InputFile]]:
    """Files in order, cut into groups of about BATCH_BYTES of text."""
    return bounded_groups(files, _text_size, BATCH_BYTES)


def _text_size(file: InputFile) -> int:
    try:
        return file.path.stat().st_size * (GZIP_RATIO if file.path.suffix == ".gz" else 1)
    except FileNotFoundError:
        return 0


@dataclass
class _PartitionTally:
    """What an extract loaded into one partition, for its materialization metadata."""

    records: int = 0
    files: int = 0
    suppressed: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)
    preview: pl.DataFrame | None = None

    def metadata(self) -> dict:
        return {
            "records_loaded": self.records,
            "files": self.files,
            "rejected_files": len(self.rejected),
            "suppressed_records": self.suppressed,
            "dagster/row_count": self.records,
            "rejected": MetadataValue.md("\n".join(f"- `{f}`: {r}" for f, r in self.rejected) or "none"),
            "preview": markdown_preview(self.preview if self.preview is not None else pl.DataFrame()),
        }


def _read_batch(context, landing_zone, files, csv_required, suppressions, tally) -> pl.DataFrame:
    """The records of a batch of files (partition_key, file, line_no, record). Records of erased persons
    are first removed from the file itself (counted, not stored); an unreadable file is moved to _rejected."""
    texts, frames = [], []
    for file in files:
        relative = file.path.relative_to(landing_zone.base()).as_posix()
        partition = tally[file.partition_key]
        try:
            removed = strip_file(file.path, suppressions)
        except zlib.error:  # a gzip body corrupt past its header: file_text below rejects it, with the reason
            removed = 0
        if removed:
            partition.suppressed += removed
            context.log.info(f"{relative}: removed {removed} record(s) of erased persons")
        try:
            if file.path.suffix == ".csv":
                rows = [(file.partition_key, relative, line, record) for line, record in csv_records(file.path, csv_required)]
                frames.append(pl.DataFrame(rows, schema=RECORDS_SCHEMA, orient="row"))
            else:
                texts.append((file.partition_key, relative, file_text(file.path)))
        except UnreadableFile as exc:
            landing_zone.reject(file.path, str(exc))
            partition.rejected.append((relative, str(exc)))
            context.log.warning(f"rejected {relative}: {exc}")
            continue
        partition.files += 1
    frames.append(jsonl_lines(pl.DataFrame(texts, schema=TEXTS_SCHEMA, orient="row")))
    records = pl.concat(frames)
    counts = records.group_by("partition_key").len()
    for key, count in counts.iter_rows():
        tally[key].records += count
    for (key,), head in records.group_by("partition_key", maintain_order=True).head(5).group_by("partition_key", maintain_order=True):
        head, held = head.select("file", "line_no", "record"), tally[key].preview
        tally[key].preview = head if held is None else pl.concat([held, head]).head(5)
    return records


def _extract_files(context, source, store, landing_zone, files, csv_required, keys: list[str] | None):
    """Replace the partitions `keys` (the whole table when None) with the records of `files`, at once
    (cdp_assets/sources/store.py), reading and writing about BATCH_BYTES at a time so memory stays bounded."""
    table = f"raw.{source.name}"
    suppressions = _suppressions(store, landing_zone)
    tally: defaultdict[str, _PartitionTally] = defaultdict(_PartitionTally)
    loaded_at, read = _now(), 0
    with store.replacing(table, keys, loaded_at) as raw:
        pending = pl.DataFrame(schema=RECORDS_SCHEMA)
        for batch in _batches(files):
            pending = pl.concat([pending, _read_batch(context, landing_zone, batch, csv_required, suppressions, tally)])
            whole = len(pending) // ROW_GROUP * ROW_GROUP  # whole row groups, the rest carried to the next batch
            raw.append(pending.head(whole))
            pending = pending.slice(whole)
            read += len(batch)
            context.log.info(f"{source.name}: read {read}/{len(files)} files, {sum(t.records for t in tally.values())} records")
        raw.append(pending)
        raw.reject([(source.name, f, r, loaded_at) for t in tally.values() for f, r in t.rejected])
    total = raw.total
    if keys is None:
        whole = tally[""]
        return MaterializeResult(metadata={**whole.metadata(), "dagster/row_count": total})
    for key in keys:  # each partition shows its own records and files, even in a single-run backfill
        context.add_asset_metadata(tally[key].metadata(), partition_key=key)
    return MaterializeResult()


def _extract_partitions(context, source, store, landing_zone, orders_api):
    """The selected partitions of a landing (events) or import (csv) source, replaced."""
    keys = list(context.partition_keys)
    wanted = set(keys)
    files = [f for f in landing_zone.input_files(input_folder(source)) if f.partition_key in wanted]
    return _extract_files(context, source, store, landing_zone, files, list(source.columns), keys)


def _extract_cdc(context, source, store, landing_zone, orders_api):
    """All change files are re-read: state is decided by source position, not by file arrival."""
    files = landing_zone.input_files(input_folder(source))
    return _extract_files(context, source, store, landing_zone, files, ["Op"], None)


def _pulled_result(frame: pl.DataFrame, total: int, **extra) -> MaterializeResult:
    """Metadata of a pull (api, postgres): what this run stored."""
    return MaterializeResult(
        metadata={
            "records_loaded": len(frame),
            "dagster/row_count": total,
            "preview": markdown_preview(frame.select("file", "line_no", "record")),
            **extra,
        }
    )


def _extract_api(context, source, store, landing_zone, orders_api: OrdersApiResource):
    """Pull pages from the stored cursor; each page's new records and the cursor after it commit together.

    The API's last page is read again on the next pull, on purpose (orders added to it are picked up),
    and an API may serve a page twice: a record already held, the same text (so the same order id and
    content), is not stored again, while a changed version of an order is.
    """
    table = f"raw.{source.name}"
    base_url = orders_api.base_url()
    cursor = store.stored_cursor(table, source.name)
    held = store.record_digests(table)
    loaded, read, already_held = [], 0, 0
    suppressions = _suppressions(store, landing_zone)
    for page, next_cursor in orders_api.pages(base_url, cursor):
        page_rows = []
        for order in page:
            record = json.dumps(order) if isinstance(order, dict) else str(order)
            digest = hashlib.md5(record.encode()).hexdigest()  # the warehouse's md5() of the same UTF-8 text
            if digest in held:
                already_held += 1
            elif not suppressions.matches_record(record):
                held.add(digest)
                page_rows.append(("", base_url, 0, record))
        read += len(page)
        frame = _records_frame(page_rows)
        store.commit_page(table, source.name, frame, next_cursor, _now())
        loaded.append(frame)
        cursor = next_cursor
        context.log.info(f"{source.name}: read {read} records, {sum(len(f) for f in loaded)} new, cursor {cursor}")
    frame = pl.concat(loaded) if loaded else _records_frame([])
    total = store.row_count(table)
    return _pulled_result(frame, total, cursor=str(cursor), records_read=read, already_held=already_held)


def _extract_postgres(context, source, store, landing_zone, orders_api):
    """Rows changed since the stored `updated_at` cursor, page by page, each page with its cursor.

    The read starts at the cursor itself so ties are not lost; rows already held at exactly that
    (key, updated_at) are skipped, so a re-run or a resumed run never loads a row version twice.
    """
    from cdp_resources.postgres import connection_string, table_pages

    table, key, column = f"raw.{source.name}", source.primary_key, source.time_column
    cursor = store.stored_cursor(table, source.name)
    held = store.keys_at(table, key, column, cursor) if cursor else set()
    dsn, read, loaded = connection_string(source.dsn_env), 0, []
    suppressions = _suppressions(store, landing_zone)
    for page in table_pages(dsn, source.table, key, column, cursor, source.page_size):
        read += len(page)
        fresh = [row for row in page if not (row[column] == cursor and str(row[key]) in held)]
        fresh = [row for row in fresh if not suppressions.matches_record(json.dumps(row, default=str))]
        previous, cursor = cursor, page[-1][column]
        held = {str(row[key]) for row in page if row[column] == cursor} | (held if previous == cursor else set())
        frame = _records_frame([("", source.table, 0, json.dumps(row, default=str)) for row in fresh])
        store.commit_page(table, source.name, frame, cursor, _now())
        loaded.append(frame)
        context.log.info(f"{source.name}: read {read} rows, {sum(len(f) for f in loaded)} new, cursor {cursor}")
    frame = pl.concat(loaded) if loaded else _records_frame([])
    total = store.row_count(table)
    return _pulled_result(frame, total, cursor=str(cursor), rows_read=read)
