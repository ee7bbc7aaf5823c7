"""Activation on Spark: the delivery ledger (`cdp.deliveries`, `cdp.delivery_batches`, `cdp.destination_outages`)
as Parquet tables of the Spark warehouse, and the members that file and CRM destinations read.

The posting itself (batches, order per person, retries, splits, outages) is deliveries.py's code; only the
ledger's reads and writes differ. Parquet has no UPDATE, so what a run learns per batch (the batch's key before
it is posted, the outcome after) is appended to a journal, `core.delivery_journal`, under the warehouse's writer
lock: a small append per batch, as durable as DuckDB's short transaction, instead of rewriting the ledger per
batch. The journal is folded into the ledger when a run starts (what a crashed run left) and when it ends, in
one `replace_tables` with the journal emptied. Journal rows carry absolute values (the status, the attempts
after the outcome), so folding a row twice changes nothing.

Payloads are the same JSON as DuckDB's `json_object` (same fields, times as DuckDB prints them, nulls kept);
only the order of keys inside an event's `properties` differs (Spark's VARIANT keeps object keys sorted).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from cdp_assets.activation.config import Destination
from cdp_assets.activation.deliveries import (
    IDENTIFIER_COLUMNS,
    OPEN,
    Item,
    PostResult,
    _now,
    outage_retry_at,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

LEDGER = "cdp.deliveries"
BATCHES = "cdp.delivery_batches"
OUTAGES = "cdp.destination_outages"
JOURNAL = "core.delivery_journal"
LEDGER_SCHEMA = ("destination STRING, idempotency_key STRING, person_id STRING, item_kind STRING, payload STRING, "
                 "ordered_at TIMESTAMP, status STRING, attempts INT, last_error STRING, enqueued_at TIMESTAMP, "
                 "sent_at TIMESTAMP")
BATCHES_SCHEMA = "destination STRING, idempotency_key STRING, batch_key STRING"
OUTAGES_SCHEMA = "destination STRING, since TIMESTAMP, outages INT, retry_at TIMESTAMP, last_error STRING"
# kind: batch (posted under batch_key), split (its batch key is void), or the item's status after an outcome
# (sent, failed, dead, waiting) with its attempts and error then.
JOURNAL_SCHEMA = ("destination STRING, idempotency_key STRING, seq BIGINT, kind STRING, batch_key STRING, "
                  "attempts INT, last_error STRING, at TIMESTAMP")
_EPOCH = datetime(1970, 1, 1)


class SparkLedger:
    """deliveries.DuckDBLedger's steps on the Spark warehouse."""

    def __init__(self, engine):
        self.engine = engine
        self.attempts: dict[tuple[str, str], int] = {}  # open items' attempts, read at start

    # -- the run's steps (deliveries.deliver_with) --

    def start(self, destination: Destination) -> tuple[int, list[Item], tuple | None]:
        from pyspark.sql import functions as F

        engine = self.engine
        with engine.lock():
            enqueued = self._fold_and_enqueue(destination)
            ledger = _table(engine, LEDGER, LEDGER_SCHEMA)
            rows = (
                ledger.filter((F.col("destination") == destination.name) & F.col("status").isin(*OPEN))
                .join(_table(engine, BATCHES, BATCHES_SCHEMA), ["destination", "idempotency_key"], "left")
                .orderBy(F.col("enqueued_at").asc_nulls_last(), F.col("ordered_at").asc_nulls_last(),
                         F.col("idempotency_key").asc_nulls_last())
                .select("idempotency_key", "person_id", "payload", "batch_key", "attempts")
                .collect()
            )
            outage = (
                _table(engine, OUTAGES, OUTAGES_SCHEMA).filter(F.col("destination") == destination.name)
                .select(F.unix_micros("retry_at").alias("retry_at"), "last_error").collect()
            )
        self.attempts = {(destination.name, row.idempotency_key): row.attempts for row in rows}
        pending = [Item(row.idempotency_key, row.person_id, row.payload, row.batch_key) for row in rows]
        return enqueued, pending, ((_time(outage[0].retry_at), outage[0].last_error) if outage else None)

    def record_batch(self, destination: Destination, keys: list[str], batch_key: str) -> None:
        self._journal([(destination.name, key, "batch", batch_key, None, None) for key in keys])

    def record_outcome(self, destination: Destination, keys: list[str], result: PostResult) -> str:
        """deliveries.DuckDBLedger.record_outcome's statuses, journalled."""
        name = destination.name
        if result.ok:
            rows = [(name, key, "sent", None, self.attempts.get((name, key), 0) + 1, None) for key in keys]
            status = "sent"
        elif result.judged and len(keys) > 1:
            rows, status = [(name, key, "split", None, None, None) for key in keys], "split"
        elif result.judged:
            attempts = [self.attempts.get((name, key), 0) + 1 for key in keys]
            status = "dead" if result.permanent or attempts[0] >= destination.max_attempts else "failed"
            rows = [(name, key, status, None, n, result.error) for key, n in zip(keys, attempts)]
        else:
            rows = [(name, key, "waiting", None, self.attempts.get((name, key), 0), result.error) for key in keys]
            status = "waiting"
        for _, key, kind, _, attempts, _ in rows:
            if attempts is not None:
                self.attempts[(name, key)] = attempts
        self._journal(rows)
        return status

    def finish(self, destination: Destination, stopped: str, posted: bool) -> datetime | None:
        from pyspark.sql import functions as F

        engine = self.engine
        with engine.lock():
            outages = _table(engine, OUTAGES, OUTAGES_SCHEMA)
            retry_at = None
            if stopped:
                row = outages.filter(F.col("destination") == destination.name).select(
                    F.unix_micros("since").alias("since"), "outages").collect()
                since, count = (_time(row[0].since), row[0].outages) if row else (_now(), 0)
                retry_at = outage_retry_at(destination, count, _now())
                mine = engine.session().createDataFrame(
                    [(destination.name, _aware(since), count + 1, _aware(retry_at), stopped[:300])], OUTAGES_SCHEMA)
                outages = outages.filter(F.col("destination") != destination.name).unionByName(mine)
            elif posted:
                outages = outages.filter(F.col("destination") != destination.name)
            else:
                outages = None
            frames = self._folded()
            if outages is not None:
                frames[OUTAGES] = outages
            if frames:
                engine.replace_tables(frames)
        return retry_at

    def status_counts(self, destination: Destination) -> dict[str, int]:
        from pyspark.sql import functions as F

        ledger = _table(self.engine, LEDGER, LEDGER_SCHEMA)
        return {row["status"]: row["count"] for row in
                ledger.filter(F.col("destination") == destination.name).groupBy("status").count().collect()}

    # -- the journal and the ledger's rewrite --

    def _journal(self, rows: list[tuple]) -> None:
        """Append (destination, key, kind, batch_key, attempts, last_error) rows, durably, before going on."""
        seq, at = time.time_ns(), _aware(_now())
        frame = self.engine.session().createDataFrame(
            [(d, key, seq + i, kind, batch, attempts, error, at) for i, (d, key, kind, batch, attempts, error) in enumerate(rows)],
            JOURNAL_SCHEMA)
        with self.engine.lock():
            self.engine.append(JOURNAL, frame)

    def _fold_and_enqueue(self, destination: Destination) -> int:
        """(Under the lock.) The journal folded in and the destination's new items added, in one swap."""
        frames = self._folded()
        ledger = frames.get(LEDGER, _table(self.engine, LEDGER, LEDGER_SCHEMA))
        new = new_items(self.engine, destination, ledger)
        added = 0
        if new is not None:
            new = new.cache()
            added = new.count()
            if added:
                frames[LEDGER] = ledger.unionByName(new)
        try:
            if frames:
                self.engine.replace_tables(frames)
        finally:
            if new is not None:
                new.unpersist()
        return added

    def _folded(self) -> dict[str, DataFrame]:
        """The ledger and batches with the journal applied, and the journal emptied ({} when it is empty)."""
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        engine = self.engine
        if not engine.table_exists(JOURNAL):
            return {}
        journal = engine.table(JOURNAL).select(*[c.split()[0] for c in JOURNAL_SCHEMA.split(", ")])
        if journal.isEmpty():
            return {}
        key = ["destination", "idempotency_key"]
        last = lambda kinds: (  # noqa: E731 (the last journal row per item among these kinds)
            journal.filter(F.col("kind").isin(*kinds))
            .withColumn("n", F.row_number().over(Window.partitionBy(*key).orderBy(F.col("seq").desc())))
            .filter("n = 1").drop("n"))
        outcome = last(("sent", "failed", "dead", "waiting")).select(
            *key, F.col("kind").alias("j_status"), F.col("attempts").alias("j_attempts"),
            F.col("last_error").alias("j_error"), F.col("at").alias("j_at"))
        ledger = _table(engine, LEDGER, LEDGER_SCHEMA).join(outcome, key, "left")
        known = F.col("j_status").isNotNull()
        sent = F.col("j_status") == "sent"
        deleted_notice = sent & (F.col("item_kind") == "person_deleted")
        ledger = ledger.select(
            *key,
            # A delivered deletion notice keeps no trace of whom it was about.
            F.when(deleted_notice, F.lit(None).cast("string")).otherwise(F.col("person_id")).alias("person_id"),
            "item_kind",
            F.when(deleted_notice, F.lit('{"type": "person_deleted"}')).otherwise(F.col("payload")).alias("payload"),
            "ordered_at",
            F.when(known, F.col("j_status")).otherwise(F.col("status")).alias("status"),
            F.when(known, F.col("j_attempts")).otherwise(F.col("attempts")).alias("attempts"),
            F.when(sent, F.lit(None).cast("string")).when(known, F.col("j_error")).otherwise(F.col("last_error")).alias("last_error"),
            "enqueued_at",
            F.when(sent, F.col("j_at")).otherwise(F.col("sent_at")).alias("sent_at"),
        )
        # A batch key stands until its items are sent or the batch is split; then it is of no more use, as
        # are the keys of items no longer open (ensure_ledger on DuckDB).
        marks = last(("batch", "sent", "split")).select(*key, F.col("kind").alias("j_kind"), F.col("batch_key").alias("j_batch"))
        batches = (
            _table(engine, BATCHES, BATCHES_SCHEMA).join(marks, key, "full")
            .select(*key, F.when(F.col("j_kind") == "batch", F.col("j_batch"))
                    .when(F.col("j_kind").isNotNull(), F.lit(None).cast("string"))
                    .otherwise(F.col("batch_key")).alias("batch_key"))
            .filter(F.col("batch_key").isNotNull())
            .join(ledger.filter(F.col("status").isin(*OPEN, "dead")).select(*key), key, "left_semi")
        )
        empty = engine.session().createDataFrame([], JOURNAL_SCHEMA)
        return {LEDGER: ledger, BATCHES: batches, JOURNAL: empty}


def new_items(engine, destination: Destination, ledger: DataFrame) -> DataFrame | None:
    """deliveries.enqueue's new items on Spark: the segment changes and subscribed events whose key the ledger
    does not hold yet, as ledger rows (pending); None when the destination reads nothing that exists."""
    from pyspark.sql import functions as F

    profiles = engine.table("cdp.profiles").alias("p") if engine.table_exists("cdp.profiles") else None
    name = F.lit(destination.name)
    sources = []
    if destination.segments and engine.table_exists("cdp.segment_changes"):
        changes = engine.table("cdp.segment_changes").alias("c").filter(F.col("c.segment").isin(*destination.segments))
        rows = changes.join(profiles, "person_id", "left") if profiles is not None else changes
        changed_at = F.col("c.changed_at").cast("string")
        sources.append(rows.select(
            F.sha2(F.concat_ws("|", name, F.col("c.segment"), F.col("person_id"), F.col("c.change"), changed_at), 256).alias("key"),
            F.col("person_id"), F.lit("segment_change").alias("item_kind"),
            _json(F.lit("segment_change").alias("type"), F.col("c.segment").alias("segment"), F.col("c.change").alias("change"),
                  F.col("person_id").alias("person_id"), changed_at.alias("changed_at"),
                  traits(destination, profiles).alias("traits")).alias("payload"),
            F.col("c.changed_at").alias("ordered_at"),
        ))
    if destination.events and engine.table_exists("cdp.events"):
        from cdp_assets.profiles.spark import events_view

        events = events_view(engine).alias("e").filter(F.col("e.event_name").isin(*destination.events))
        rows = events.join(profiles, "person_id", "left") if profiles is not None else events
        sources.append(rows.select(
            F.sha2(F.concat_ws("|", name, F.col("e.event_id")), 256).alias("key"),
            F.col("person_id"), F.lit("event").alias("item_kind"),
            _json(F.lit("event").alias("type"), F.col("e.event_name").alias("event"), F.col("e.event_id").alias("event_id"),
                  F.col("person_id").alias("person_id"), F.col("e.occurred_at").cast("string").alias("occurred_at"),
                  _json_value(events, "properties").alias("properties"),
                  traits(destination, profiles).alias("traits")).alias("payload"),
            F.col("e.occurred_at").alias("ordered_at"),
        ))
    if not sources:
        return None
    new = sources[0]
    for more in sources[1:]:
        new = new.unionByName(more)
    known = ledger.filter(F.col("destination") == destination.name).select(F.col("idempotency_key").alias("key"))
    now = F.timestamp_micros(F.lit(_micros(_now())))
    return (
        new.dropDuplicates(["key"]).join(known, "key", "left_anti")
        .select(name.alias("destination"), F.col("key").alias("idempotency_key"), "person_id", "item_kind", "payload",
                F.col("ordered_at").cast("timestamp").alias("ordered_at"), F.lit("pending").alias("status"),
                F.lit(0).cast("int").alias("attempts"), F.lit(None).cast("string").alias("last_error"),
                now.alias("enqueued_at"), F.lit(None).cast("timestamp").alias("sent_at"))
    )


def traits(destination: Destination, profiles: DataFrame | None) -> Column:
    """deliveries._traits on Spark: a struct of the mapped profile columns (identifiers hashed where asked),
    values as DuckDB's json_object writes them (times as text); an empty object without fields or profiles."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if not destination.fields or profiles is None:
        return F.try_parse_json(F.lit("{}"))
    types = {field.name: field.dataType for field in profiles.schema.fields}
    parts = []
    for field_name, column in destination.fields.items():
        value = F.col("p.`" + column.replace("`", "``") + "`")
        if destination.hash_identifiers and column in IDENTIFIER_COLUMNS:
            value = F.sha2(F.lower(F.trim(value.cast("string"))), 256)
        elif isinstance(types.get(column), (T.TimestampType, T.TimestampNTZType, T.DateType)):
            value = value.cast("string")
        parts.append(value.alias(field_name))
    return F.struct(*parts)


def _json(*fields: Column) -> Column:
    """json_object(...)::VARCHAR on Spark: nulls are written, as DuckDB does."""
    from pyspark.sql import functions as F

    return F.to_json(F.struct(*fields), {"ignoreNullFields": "false"})


def _json_value(frame: DataFrame, column: str) -> Column:
    """A JSON column (text on Spark) as a JSON value inside a payload, not as a string."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    value = F.col(f"e.{column}")
    return F.try_parse_json(value) if isinstance(frame.schema[column].dataType, T.StringType) else value


def segment_members_on_spark(engine, destination: Destination, segments: tuple[str, ...]):
    """exports.segment_members on Spark: (segment, person_id, entered_at, traits JSON), as a polars frame."""
    import polars as pl
    from pyspark.sql import functions as F

    schema = {"segment": pl.String, "person_id": pl.String, "entered_at": pl.Datetime("us"), "traits": pl.String}
    if not engine.table_exists("cdp.segment_membership"):
        return pl.DataFrame(schema=schema)
    profiles = engine.table("cdp.profiles").alias("p") if engine.table_exists("cdp.profiles") else None
    members = engine.table("cdp.segment_membership").alias("m").filter(F.col("m.segment").isin(*segments))
    rows = members.join(profiles, "person_id", "left") if profiles is not None else members
    rows = rows.select(
        F.col("m.segment").alias("segment"), F.col("person_id"), F.unix_micros("m.entered_at").alias("entered_at"),
        F.to_json(traits(destination, profiles), {"ignoreNullFields": "false"}).alias("traits"),
    ).orderBy("segment", "person_id").collect()
    return pl.DataFrame(
        [(r.segment, r.person_id, None if r.entered_at is None else _time(r.entered_at), r.traits) for r in rows],
        schema=schema, orient="row")


def replay_dead_letters_on_spark(engine, destination: str | None = None) -> int:
    """deliveries.replay_dead_letters on Spark: dead items back to pending with a fresh attempt count (their
    batch keys kept)."""
    from pyspark.sql import functions as F

    if not engine.table_exists(LEDGER):
        return 0
    with engine.lock():
        ledger = SparkLedger(engine)
        frames = ledger._folded()
        current = frames.get(LEDGER, engine.table(LEDGER))
        dead = F.col("status") == "dead"
        if destination:
            dead = dead & (F.col("destination") == destination)
        count = current.filter(dead).count()
        if count:
            frames[LEDGER] = current.withColumn("attempts", F.when(dead, F.lit(0)).otherwise(F.col("attempts"))) \
                .withColumn("status", F.when(dead, F.lit("pending")).otherwise(F.col("status")))
        if frames:
            engine.replace_tables(frames)
    return count


def _table(engine, table: str, schema: str) -> DataFrame:
    """The table's rows in its declared columns; no rows when it does not exist yet."""
    columns = [part.split()[0] for part in schema.split(", ")]
    if engine.table_exists(table):
        return engine.table(table).select(*columns)
    return engine.session().createDataFrame([], schema)


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _time(micros: int) -> datetime:
    """Naive UTC from epoch microseconds (Spark hands timestamps to Python in the driver's local zone)."""
    return _EPOCH + timedelta(microseconds=micros)


def _aware(moment: datetime) -> datetime:
    """A naive UTC time as Spark reads it correctly from Python (a naive one is taken as local time)."""
    return moment.replace(tzinfo=timezone.utc)
