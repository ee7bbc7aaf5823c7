"""`cdp profile`, `cdp export`, `cdp profile --explain` and `cdp erase` with CDP_ENGINE=spark (a real standalone cluster, tests/spark_cluster.py) give
what they give on DuckDB, and an erasure on Spark leaves no byte of the person in the Spark warehouse.

A small generated shop runs through the pipeline on DuckDB; someone else's event mentioning the person in a
page URL is planted (the scrub path). The data directory is then copied, without the DuckDB file, to a
second one, whose every warehouse table is copied to its Spark warehouse as Parquet. The same erasure
request is processed on both (the privacy job, as `cdp run` starts it), and every table is compared row for
row, the DuckDB erasure being the oracle. Marked `spark`: `-m 'not spark'` skips it locally; CI runs it.
"""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import duckdb
import pytest
from bytescan import scan
from spark_tables import copy_to_spark
from spark_tables import quote as quote_column
from spark_tables import sorted_rows

pytestmark = pytest.mark.spark
SALT = "test-salt-not-a-secret"
# Differs between two erasures of the same request by construction: when each finished, and enqueued the
# deletion notice.
WHEN_DONE = {"cdp.privacy_audit": {"done_at"}, "cdp.deliveries": {"ordered_at", "enqueued_at"}}


@pytest.fixture(scope="module")
def shops(tmp_path_factory, spark_cluster):
    """(DuckDB data directory, Spark data directory, the person's email, their spellings, their person id): the
    same shop on both engines, and one erasure request for a customer with orders pending in both."""
    from cdp_assets.activation.deliveries import LEDGER_DDL
    from cdp_assets.cli import main
    from cdp_assets.runner import run_everything
    from cdp_assets.sample_data import generate_sample_data
    from cdp_resources import WarehouseResource

    base = tmp_path_factory.mktemp("spark-privacy")
    on_duckdb, on_spark = base / "duckdb", base / "spark"
    patch = pytest.MonkeyPatch()
    patch.setenv("CDP_PII_SALT", SALT)
    patch.setenv("CDP_DATA_DIR", str(on_duckdb))
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0, tzinfo=None)
    generate_sample_data(on_duckdb, events=1500, seed=11, end=end, log=lambda *_: None)
    assert run_everything(progress=lambda *_: None).success
    with duckdb.connect(str(on_duckdb / "warehouse.duckdb")) as con:
        person_id, email = con.execute(
            """SELECT p.person_id, m.identifier_value FROM cdp.profiles p JOIN cdp.id_map m USING (person_id)
               WHERE m.identifier_type = 'email' AND p.order_count > 0 ORDER BY p.order_count DESC, p.person_id LIMIT 1"""
        ).fetchone()
        # Someone else's page view whose URL mentions them: kept, with the mention scrubbed.
        url = json.dumps({"url": f"https://shop.example/account?email={quote(email)}&src=mail"})
        con.execute("""INSERT INTO cdp.events SELECT * REPLACE ('planted-mention' AS event_id, ?::JSON AS properties)
                       FROM cdp.events WHERE user_id IS NOT NULL AND user_id NOT IN
                         (SELECT identifier_value FROM cdp.id_map WHERE person_id = ?) ORDER BY event_id LIMIT 1""",
                    [url, person_id])
        # An HTTP destination was sent something about them: it gets a deletion notice.
        con.execute(LEDGER_DDL)
        con.execute("""INSERT INTO cdp.deliveries (destination, idempotency_key, person_id, item_kind, payload, ordered_at,
                       status, attempts, enqueued_at, sent_at) VALUES ('marketing_webhook', 'k-planted', ?, 'segment_entry',
                       ?, TIMESTAMP '2026-01-01 10:00', 'sent', 1, TIMESTAMP '2026-01-01 10:00', TIMESTAMP '2026-01-01 10:01')""",
                    [person_id, json.dumps({"email": email})])
        spellings = {r[0].strip().lower() for r in con.execute(
            """SELECT l.raw_value FROM core.identifier_lookup l JOIN cdp.id_map m USING (identifier_type, identifier_value)
               WHERE m.person_id = ? UNION SELECT identifier_value FROM cdp.id_map WHERE person_id = ?""",
            [person_id, person_id]).fetchall() if r[0] and len(r[0].strip()) > 5} | {person_id}
        tables = [f"{s}.{t}" for s, t in con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' ORDER BY 1, 2"
        ).fetchall()]
    shutil.copytree(on_duckdb, on_spark, ignore=lambda folder, names: [n for n in names if n.startswith("warehouse.duckdb")])
    with spark_env(on_spark, spark_cluster):
        engine = WarehouseResource().engine()
        with duckdb.connect(str(on_duckdb / "warehouse.duckdb"), read_only=True) as con:
            copy_to_spark(con, engine, tables)
    assert scan(on_spark / "spark-warehouse", spellings), "the Spark tables hold the person before the erasure"
    # One request (`cdp erase`), recorded once: both engines process the same request id and time.
    assert main(["erase", f"email:  {email.upper()} "]) == 0
    [request] = (on_duckdb / "privacy" / "requests").glob("*.json")
    (on_spark / "privacy" / "requests").mkdir(parents=True)
    shutil.copy2(request, on_spark / "privacy" / "requests" / request.name)
    yield on_duckdb, on_spark, email, spellings, person_id
    patch.undo()


@contextmanager
def spark_env(data_dir: Path, cluster):
    """CDP_ENGINE=spark on the cluster, with the data directory `data_dir`, for the block."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CDP_ENGINE", "spark")
        patch.setenv("CDP_SPARK_MASTER", cluster.master_url)
        patch.setenv("CDP_DATA_DIR", str(data_dir))
        yield


def cdp(*args: str, capsys) -> tuple[int, str]:
    from cdp_assets.cli import main

    capsys.readouterr()
    code = main(list(args))
    return code, capsys.readouterr().out


def test_profile_on_spark_equals_duckdb(shops, spark_cluster, capsys, monkeypatch):
    on_duckdb, on_spark, email, _, _ = shops
    monkeypatch.setenv("CDP_DATA_DIR", str(on_duckdb))
    code, expected = cdp("profile", f"email:{email.title()}", "--format", "json", capsys=capsys)
    assert code == 0 and json.loads(expected)["recent_events"] and json.loads(expected)["profile"]
    with spark_env(on_spark, spark_cluster):
        code, found = cdp("profile", f"email:{email.title()}", "--format", "json", capsys=capsys)
        assert code == 0
        assert found == expected
        assert cdp("profile", "email:nobody@nowhere.example", capsys=capsys)[0] == 1
    assert not list(on_spark.glob("warehouse.duckdb*"))


def test_export_and_explain_on_spark_equal_duckdb(shops, spark_cluster, capsys, monkeypatch):
    """`cdp export` and `cdp profile --explain`, as a user runs them, print on Spark what they print on DuckDB: for
    the customer with orders (events and purchases included), a family-laptop user, someone with a quarantined
    record, and nobody; the explanations of one person, of two the resolution kept apart (the laptop: a limit),
    of a blocked value and of strangers. Spark opens no DuckDB file."""
    on_duckdb, on_spark, email, _, _ = shops
    manifest = json.loads((on_duckdb / "sample_manifest.json").read_text())
    example, laptop = manifest["example_person"], manifest["family_laptop"]
    with duckdb.connect(str(on_duckdb / "warehouse.duckdb"), read_only=True) as con:
        [(quarantined,)] = con.execute(
            """SELECT min(m.identifier_value) FROM cdp.id_map m JOIN cdp.quarantine q ON contains(lower(q.record), m.identifier_value)
               WHERE m.identifier_type = 'email'""").fetchall()
    exports = [f"email:{email.upper()}", f"user_id:{laptop['user_ids'][0]}", f"email:{quarantined}", "email:nobody@nowhere.example"]
    explains = [(f"email:{example['email']}", f"phone:{example['phone']}"),
                (f"user_id:{laptop['user_ids'][0]}", f"user_id:{laptop['user_ids'][1]}"),
                ("anonymous_id:undefined", f"user_id:{laptop['user_ids'][0]}"),
                (f"email:{email}", "email:nobody@nowhere.example")]

    def outputs() -> list[tuple[int, str]]:
        return [cdp("export", identifier, capsys=capsys) for identifier in exports] + \
            [cdp("profile", a, "--explain", b, capsys=capsys) for a, b in explains]

    monkeypatch.setenv("CDP_DATA_DIR", str(on_duckdb))
    expected = outputs()
    customer, _, with_quarantine, nobody = (json.loads(text) for _, text in expected[:4])
    assert customer["events"] and customer["purchases"] and customer["trait_values"] and customer["profile_history"]
    assert with_quarantine["quarantined_records"] and nobody["person_ids"] == []
    assert [code for code, _ in expected] == [0, 0, 0, 1, 0, 0, 0, 0]
    assert "one person: chain of" in expected[4][1] and "✗ not applied: joining" in expected[5][1]
    assert "a blocked value" in expected[6][1] and "no chain" in expected[7][1]
    with spark_env(on_spark, spark_cluster):
        found = outputs()
    for (code, text), (expected_code, expected_text), command in zip(found, expected, [*exports, *explains]):
        assert (code, text) == (expected_code, expected_text), command
    assert not list(on_spark.glob("warehouse.duckdb*"))


def test_a_failed_swap_leaves_the_tables_whole_and_the_request_pending(shops, spark_cluster, monkeypatch):
    """The tables are swapped in only once every new one is written: a failure before (here: the disk fills)
    leaves each table as it was, and the request stays for the next run, which erases (next test)."""
    from dagster import DagsterInstance

    from cdp_assets.runner import RunSummary, _erase_pending
    from cdp_resources import WarehouseResource
    from cdp_resources.spark import SparkEngine

    _, on_spark, _, spellings, _ = shops

    def disk_full(self, frames):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SparkEngine, "replace_tables", disk_full)
    with spark_env(on_spark, spark_cluster):
        before = scan(on_spark / "spark-warehouse", spellings)
        summary = RunSummary()
        assert not _erase_pending(DagsterInstance.ephemeral(), {"warehouse": WarehouseResource()}, summary, lambda _: None)
    assert any("No space left on device" in failure for failure in summary.failures), summary.failures
    assert len(list((on_spark / "privacy" / "requests").glob("*.json"))) == 1
    assert scan(on_spark / "spark-warehouse", spellings) == before != {}


def test_erasure_on_spark_equals_duckdb_and_leaves_no_byte(shops, spark_cluster, monkeypatch):
    from dagster import DagsterInstance

    from cdp_assets.runner import RunSummary, _erase_pending
    from cdp_resources import WarehouseResource

    on_duckdb, on_spark, email, spellings, person_id = shops
    monkeypatch.setenv("CDP_DATA_DIR", str(on_duckdb))
    assert _erase_pending(DagsterInstance.ephemeral(), {"warehouse": WarehouseResource()}, RunSummary(), print)
    with spark_env(on_spark, spark_cluster):
        progress: list[str] = []
        summary = RunSummary()
        assert _erase_pending(DagsterInstance.ephemeral(), {"warehouse": WarehouseResource()}, summary, progress.append), \
            summary.failures
        assert progress[0].startswith("[0] privacy: 1 erasure request")
        engine = WarehouseResource().engine()
        assert not list((on_spark / "privacy" / "requests").glob("*.json"))  # processed, and the identifier with it
        # Every file, the Spark warehouse's Parquet files included; their pseudonymous id stays only in the
        # deletion notice, until it is delivered.
        assert scan(on_spark, spellings - {person_id}) == {}
        assert {Path(f).parent.as_posix() for f in scan(on_spark, {person_id})} == {"spark-warehouse/cdp.db/deliveries"}
        with duckdb.connect(str(on_duckdb / "warehouse.duckdb"), read_only=True) as con:
            tables = [f"{s}.{t}" for s, t in con.execute(
                "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' ORDER BY 1, 2"
            ).fetchall()]
            assert {"cdp.suppressions", "cdp.privacy_audit"} <= set(tables)
            for table in tables:
                assert engine.table_exists(table), table
                skip = WHEN_DONE.get(table, set())
                columns = [c for c in con.execute(f"SELECT * FROM {table} LIMIT 0").fetchdf().columns if c not in skip]
                expected = sorted_rows(con.execute(
                    f"SELECT {', '.join(quote_column(c) for c in columns)} FROM {table}").fetch_arrow_table())
                frame = engine.table(table)
                assert [c for c in frame.columns if c not in skip] == columns, table
                rows = sorted_rows(frame.select(*[f"`{c}`" for c in columns]).toArrow())
                assert rows == expected, f"{table}: {len(set(rows) ^ set(expected))} rows differ, e.g. " \
                    f"{sorted(set(rows) - set(expected), key=repr)[:2]} vs {sorted(set(expected) - set(rows), key=repr)[:2]}"
            [(*audit, notices)] = con.execute(
                "SELECT rows_deleted, values_scrubbed, notices_enqueued FROM cdp.privacy_audit").fetchall()
            [(properties,)] = con.execute("SELECT properties FROM cdp.events WHERE event_id = 'planted-mention'").fetchall()
    assert json.loads(audit[0]).get("cdp.events") and json.loads(audit[1]).get("cdp.events") == 1, audit
    assert notices == 1
    assert "email=[erased]&src=mail" in properties
    assert email not in json.dumps(audit).lower()


def test_explanations_on_spark_equal_duckdb_on_hand_made_graphs(tmp_path, spark_cluster):
    """SparkGraph reads what DuckDBGraph reads, case by case of tests/test_identity_explain.py: a chain inside one
    person and not through a shared device beside it, a shared identifier, a limit (an edge seen in two sources),
    a blocked value. Last in the module: its own warehouse directory restarts the session."""
    from test_identity_explain import KIOSK, RULES, resolved

    from cdp_assets.identity.explain import DuckDBGraph, explain_with
    from cdp_assets.identity.spark import SparkGraph
    from cdp_resources import WarehouseResource

    laptop = [("user_id:u1", "email:ann@x.com", 1), ("user_id:u2", "email:bob@x.com", 1),
              ("user_id:u1", "anonymous_id:laptop", 3), ("user_id:u2", "anonymous_id:laptop", 5),
              ("user_id:u1", "anonymous_id:undefined", 1)]
    inside = KIOSK + [("user_id:u1", "email:ann@x.com", 1), ("email:ann@x.com", "phone:+14155550100", 1),
                      ("phone:+14155550100", "anonymous_id:a1", 1),
                      ("user_id:u1", "device_id:kiosk", 2), ("anonymous_id:a1", "device_id:kiosk", 2)]
    cases = [
        (inside, ("user_id", "u1"), ("anonymous_id", "a1"), "one person: chain of 3 edge(s)"),
        (KIOSK, ("user_id", "k00"), ("user_id", "k01"), "is shared: linked to 11 user_ids"),
        (laptop, ("email", " ANN@x.com"), ("email", "bob@x.com"), "(seen in app, web)   ✗ not applied: joining"),
        (laptop, ("user_id", "u1"), ("anonymous_id", "undefined"), "anonymous_id:undefined is blocked"),
    ]
    with spark_env(tmp_path, spark_cluster):
        engine = WarehouseResource().engine()
        for links, a, b, expected in cases:
            con = resolved(links)
            con.execute("INSERT INTO cdp.identity_edges SELECT * REPLACE ('app' AS source) FROM cdp.identity_edges "
                        "WHERE right_value = 'laptop' AND left_value = 'u1'")
            for table in ("cdp.id_map", "cdp.identity_edges"):
                shutil.rmtree(engine.location(table), ignore_errors=True)
            copy_to_spark(con, engine, ["cdp.id_map", "cdp.identity_edges"])
            on_duckdb = explain_with(DuckDBGraph(con), a, b, RULES)
            assert expected in "\n".join(on_duckdb)
            assert explain_with(SparkGraph(engine), a, b, RULES) == on_duckdb, (a, b)
