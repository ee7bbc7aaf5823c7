"""The segment assets' bookkeeping and activation on Spark give DuckDB's rows and deliveries (a differential test
on a real standalone cluster, tests/spark_cluster.py).

A small generated shop runs through the pipeline on DuckDB; its segment and delivery tables are dropped so both
engines start from nothing; what the segments and destinations read (cdp.profiles, core.person_events,
cdp.events, core.batches) goes to a second data directory's Spark warehouse (tests/spark_tables.py). Then the
`segments` and `activation` groups are materialized through the code location's definitions on each engine
(`CDP_ENGINE=spark`, `CDP_SPARK_MASTER=<cluster>` for the second) at one frozen `now`, each delivering to its
own local webhook receiver and writing its own export files. Compared: cdp.segment_membership,
cdp.segment_changes, core.segment_evaluations, cdp.deliveries (less its per-run times), the items each receiver
accepted, in order, and the exported member lists. Then one member's profile drops out of vip_buyers and a
non-member's enters, on both engines, and an hour later both refresh again (DuckDB takes its incremental path,
Spark evaluates in full) while the receivers refuse exits (400: the batch is split, the exit dead-lettered):
entries and exits, ledger statuses and errors, receivers compared again; then the dead letters are replayed
and delivered, and everything compared a third time. Last, a destination that is away: waiting items and the
recorded outage alike.
Marked `spark`: `-m 'not spark'` skips it locally; CI runs it.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest
from spark_cluster import require_java
from spark_tables import copy_to_spark, quote, sorted_rows
from test_activation import SECRET, Receiver, _free_port

pytestmark = pytest.mark.spark

INPUTS = ["cdp.profiles", "core.person_events", "cdp.events", "core.batches"]
OUTPUTS = ["cdp.segment_membership", "cdp.segment_changes", "core.segment_evaluations", "cdp.deliveries"]
PER_RUN = {"enqueued_at", "sent_at"}  # when this run enqueued and sent an item
STAGE_TABLES = OUTPUTS + ["cdp.delivery_batches", "cdp.destination_outages"]
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> tuple[Path, Path, datetime]:
    """The DuckDB data directory (the shop, its segment and delivery tables dropped), an empty one for Spark, and
    the first refresh's `now`."""
    from cdp_assets.runner import run_everything
    from cdp_assets.sample_data import generate_sample_data

    require_java()  # before building the shop: without Java there is nothing to compare it with
    root = tmp_path_factory.mktemp("spark-activation")
    duck, spark = root / "duck", root / "spark"
    patch = pytest.MonkeyPatch()
    patch.setenv("CDP_DATA_DIR", str(duck))
    patch.delenv("CDP_ENGINE", raising=False)
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0, tzinfo=None)
    generate_sample_data(duck, events=1500, seed=5, end=end, log=lambda *_: None)
    run_everything(progress=lambda *_: None)
    patch.undo()
    with duckdb.connect(str(duck / "warehouse.duckdb")) as con:
        for table in STAGE_TABLES:
            con.execute(f"DROP TABLE IF EXISTS {table}")
    shutil.rmtree(duck / "exports", ignore_errors=True)
    spark.mkdir()
    return duck, spark, end + timedelta(minutes=30, seconds=1, microseconds=250)


def copy_inputs(duck: Path, engine) -> None:
    for table in INPUTS:
        shutil.rmtree(engine.location(table), ignore_errors=True)
    with duckdb.connect(str(duck / "warehouse.duckdb"), read_only=True) as con:
        copy_to_spark(con, engine, INPUTS)


def refresh(data_dir: Path, now: datetime, receiver: Receiver, master: str | None = None,
            groups: tuple[str, ...] = ("segments", "activation"), replay: bool = False) -> None:
    """The segments, then the destinations, as the code location defines them, at `now`, on one engine (first
    the dead-lettered deliveries made pending again, with `replay`)."""
    from dagster import AssetSelection, materialize

    patch = pytest.MonkeyPatch()
    patch.setenv("CDP_DATA_DIR", str(data_dir))
    patch.setenv("CDP_MARKETING_WEBHOOK_URL", receiver.url)
    patch.setenv("CDP_MARKETING_WEBHOOK_SECRET", SECRET)
    patch.delenv("CDP_CRM_DATABASE_URL", raising=False)
    if master:
        patch.setenv("CDP_ENGINE", "spark")
        patch.setenv("CDP_SPARK_MASTER", master)
    else:
        patch.delenv("CDP_ENGINE", raising=False)
    patch.setenv("CDP_NOW", now.isoformat())  # the segments' clock
    try:
        from cdp_assets.activation.definitions import replay_dead_letters_job
        from cdp_assets.definitions import defs

        if replay:
            assert replay_dead_letters_job.execute_in_process(resources=defs.resources, run_config=QUIET).success
        for group in groups:
            result = materialize(list(defs.assets), selection=AssetSelection.groups(group), resources=defs.resources,
                                 run_config=QUIET, raise_on_error=False)
            failures = [e.message for e in result.all_events if e.is_step_failure]
            assert result.success, f"{group} on {'Spark' if master else 'DuckDB'}: {failures}"
    finally:
        patch.undo()


def canonical(table: str, columns: list[str], rows: list[tuple]) -> list[tuple]:
    """Rows with a JSON payload as its parsed value (Spark writes an event's properties with sorted keys) and
    errors without the process's object addresses (a connection error names its connection object)."""
    if "payload" not in columns:
        return rows
    at, error = columns.index("payload"), columns.index("last_error")
    rows = [list(row) for row in rows]
    for row in rows:
        row[at] = json.dumps(json.loads(row[at]), sort_keys=True)
        row[error] = re.sub(r"0x[0-9a-f]+", "0x...", row[error]) if row[error] else row[error]
    return sorted(tuple(row) for row in rows)


def duckdb_tables(duck: Path) -> dict[str, tuple[list[str], list[tuple]]]:
    found = {}
    with duckdb.connect(str(duck / "warehouse.duckdb"), read_only=True) as con:
        for table in OUTPUTS:
            columns = [c for c in con.execute(f"SELECT * FROM {table} LIMIT 0").fetchdf().columns if c not in PER_RUN]
            rows = sorted_rows(con.execute(f"SELECT {', '.join(quote(c) for c in columns)} FROM {table}").fetch_arrow_table())
            found[table] = columns, canonical(table, columns, rows)
    return found


def spark_tables(engine) -> dict[str, tuple[list[str], list[tuple]]]:
    found = {}
    for table in OUTPUTS:
        frame = engine.table(table)
        columns = [c for c in frame.columns if c not in PER_RUN]
        found[table] = columns, canonical(table, columns, sorted_rows(frame.select(*[f"`{c}`" for c in columns]).toArrow()))
    return found


def exported(data_dir: Path) -> dict[str, list[str]]:
    """The newest export file of each segment, its lines sorted."""
    folder = data_dir / "exports" / "segment_exports"
    return {path.name: sorted(max(path.iterdir()).read_text().splitlines()) for path in sorted(folder.iterdir())}


def assert_same(duck: Path, spark: Path, engine, duck_receiver: Receiver, spark_receiver: Receiver) -> dict:
    expected, found = duckdb_tables(duck), spark_tables(engine)
    for table in OUTPUTS:
        (columns, rows), (expected_columns, expected_rows) = found[table], expected[table]
        assert columns == expected_columns, table
        assert rows == expected_rows, f"{table}: {len(set(rows) ^ set(expected_rows))} rows differ, e.g. " \
            f"{sorted(set(rows) - set(expected_rows), key=repr)[:2]} vs {sorted(set(expected_rows) - set(rows), key=repr)[:2]}"
    # What the destination received: the same items (keys, payloads), in the same order.
    assert [json.dumps(i, sort_keys=True) for i in spark_receiver.accepted] == \
           [json.dumps(i, sort_keys=True) for i in duck_receiver.accepted]
    assert spark_receiver.bad == duck_receiver.bad == 0
    assert exported(spark) == exported(duck)
    return expected


def test_segment_bookkeeping_and_deliveries_on_spark_equal_duckdb(shop, spark_cluster, monkeypatch):
    from cdp_assets.activation.config import Destination
    from cdp_assets.activation.deliveries import deliver_in
    from cdp_resources import WarehouseResource
    from cdp_resources.destinations import HttpDelivery
    from cdp_resources.spark import SparkEngine

    duck, spark, now = shop
    # The engine the assets make from CDP_SPARK_MASTER (no extra conf): one session for the test and the assets.
    engine = SparkEngine(spark_cluster.master_url, spark / "spark-warehouse")
    copy_inputs(duck, engine)
    receivers = Receiver(), Receiver()
    try:
        refresh(duck, now, receivers[0])
        refresh(spark, now, receivers[1], spark_cluster.master_url)
        first = assert_same(duck, spark, engine, *receivers)
        changes = first["cdp.segment_changes"][1]
        assert {c for _, _, c, _ in changes} == {"entered"} and len({s for s, *_ in changes}) >= 4, changes
        kinds = {row[3] for row in first["cdp.deliveries"][1]}
        assert kinds == {"segment_change", "event"} and len(receivers[0].accepted) == len(first["cdp.deliveries"][1])

        # One vip leaves (revenue gone), one customer joins, in a new batch as the pipeline would write it.
        with duckdb.connect(str(duck / "warehouse.duckdb")) as con:
            leaver, joiner = con.execute(
                """SELECT (SELECT min(person_id) FROM cdp.segment_membership WHERE segment = 'vip_buyers'),
                          (SELECT min(person_id) FROM cdp.profiles WHERE total_revenue < 500)""").fetchone()
            batch = con.execute("SELECT max(batch_id) + 1 FROM core.batches").fetchone()[0]
            con.execute("INSERT INTO core.batches VALUES (?, 'test', ?)", [batch, now])
            # (the joiner's first name unknown: a null trait is delivered as null, as DuckDB's json_object writes it)
            con.execute("UPDATE cdp.profiles SET total_revenue = CASE WHEN person_id = ? THEN 0 ELSE 900 END, _batch_id = ?, "
                        "first_name = CASE WHEN person_id = ? THEN first_name END WHERE person_id IN (?, ?)",
                        [leaver, batch, leaver, leaver, joiner])
        copy_inputs(duck, engine)
        later = now + timedelta(hours=1)
        for receiver in receivers:
            receiver.refuse = lambda item: item.get("change") == "exited"
        refresh(duck, later, receivers[0])
        refresh(spark, later, receivers[1], spark_cluster.master_url)
        second = assert_same(duck, spark, engine, *receivers)
        new = set(second["cdp.segment_changes"][1]) - set(changes)
        assert ("vip_buyers", leaver, "exited", later) in new and ("vip_buyers", joiner, "entered", later) in new, new
        # The receivers refused the exit (400): its batch was split until it was alone, then it was dead-lettered,
        # on both engines alike (the Spark ledger's journal of batches and outcomes, folded).
        ledger = second["cdp.deliveries"]
        status = {row[1]: row[ledger[0].index("status"):] for row in ledger[1] if row[2] == leaver and "exited" in row[4]}
        assert [(s, a, e.split(":")[0]) for s, a, e in status.values()] == [("dead", 1, "400 Bad Request")], status

        # Replayed and sent once the receivers take it.
        for receiver in receivers:
            receiver.refuse = None
        refresh(duck, later, receivers[0], groups=("activation",), replay=True)
        refresh(spark, later, receivers[1], spark_cluster.master_url, groups=("activation",), replay=True)
        third = assert_same(duck, spark, engine, *receivers)
        assert {row[third["cdp.deliveries"][0].index("status")] for row in third["cdp.deliveries"][1]} == {"sent"}
        entry = [i for i in receivers[1].accepted if i.get("change") == "entered" and i["person_id"] == joiner][-1]
        assert "first_name" in entry["traits"] and entry["traits"]["first_name"] is None, entry
        exits = [i for i in receivers[1].accepted if i.get("change") == "exited" and i["person_id"] == leaver]
        assert len(exits) == 1 and exits[0]["traits"]["total_revenue"] == 0

        # A destination that is away: its first batch waits (no attempt spent), the outage is recorded, and the
        # next run, before `retry_at`, only enqueues; alike on both engines.
        away = Destination(name="away", kind="http", url_env="CDP_AWAY_URL", segments=("vip_buyers",), outage_backoff_s=60)
        client = HttpDelivery(f"http://127.0.0.1:{_free_port()}/hook", SECRET, tries=1)
        reports, outages = [], []
        for data_dir, master in ((duck, None), (spark, spark_cluster.master_url)):
            with monkeypatch.context() as patch:
                patch.setenv("CDP_DATA_DIR", str(data_dir))
                patch.setenv("CDP_ENGINE", "spark" if master else "duckdb")
                patch.setenv("CDP_SPARK_MASTER", master or "local[1]")
                on = WarehouseResource().engine()
                runs = [deliver_in(on, away, client) for _ in range(2)]
            reports.append([(r.enqueued, r.sent, r.waited, r.failed, r.deferred, r.open_total, bool(r.stopped),
                             r.retry_at is not None) for r in runs])
        assert reports[0] == reports[1], reports
        assert reports[0][0][2] > 0 and reports[0][0][3] == 0 and reports[0][1][:3] == (0, 0, 0), reports
        with duckdb.connect(str(duck / "warehouse.duckdb"), read_only=True) as con:
            outages.append(con.execute("SELECT destination, outages FROM cdp.destination_outages").fetchall())
        outages.append([(r.destination, r.outages) for r in engine.table("cdp.destination_outages").collect()])
        assert outages[0] == outages[1] == [("away", 1)], outages
        assert_same(duck, spark, engine, *receivers)  # the waiting items: same statuses, attempts and errors
        assert not (spark / "warehouse.duckdb").exists()  # the Spark run never opened a DuckDB file
    finally:
        for receiver in receivers:
            receiver.close()
        engine.stop()
