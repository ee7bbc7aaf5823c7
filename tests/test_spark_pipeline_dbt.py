"""The identity, profile and online stages as Dagster assets on Spark (`CDP_ENGINE=spark`, a real standalone cluster,
tests/spark_cluster.py) give the DuckDB run's tables and online store.

A small generated shop runs through the whole pipeline on DuckDB (the oracle); the tables the models read are
copied to a Spark warehouse in another data directory; then the `identity`, `profiles` and `online` groups are
materialized there as `cdp run` materializes them: the dbt assets run `dbt build --target spark` in process, the
resolver runs on the cluster, the snapshot keeps profile_history on Parquet, the asset checks judge the Spark tables
and the online store loads from them. A second round adds, on both engines, two events: one merges two persons,
one moves a shared anonymous id to another user (the person it leaves is touched by no new record: only the
resolver's change log, core.id_map_changes, tells the profile models). The DuckDB pipeline takes its incremental
path; the Spark one re-resolves and its profile models and the online store take theirs. After each round every
identity and profile model (17: tables and dbt's views) has DuckDB's rows. Compared besides: cdp.id_map,
the merges of that round (without their time), core.id_map_changes (without the batch numbers, which each
warehouse counts itself), cdp.profiles, cdp.profile_history (without its times: valid_from, valid_to but whether
it is current, and the version id and time derived from them) and everything the online store answers. Both
engines build at one frozen `now` (the dbt var computed traits count days to). The Spark data directory never
gets a DuckDB file; a process whose catalog lacks dbt's views builds them; the blocking id map check goes red on a
duplicated identifier. Without the change log on Spark the robbed person's profile differs (it fails).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest
from spark_tables import copy_to_spark, quote, sorted_rows

pytestmark = pytest.mark.spark

# What the identity and profile models read and the platform's Python stages write (dbt/models/staging/_sources.yml
# and the bookkeeping of dbt/macros/incremental.sql), and the segment tables the online store reads.
SOURCE_TABLES = [
    "raw.web", "raw.crm_customers", "raw.orders", "raw.pos",
    "cdp.events", "cdp.id_map", "core.persons", "core.events_removed", "core.id_map_changes", "core.batches",
    "validated.crm_customers", "validated.orders", "validated.pos",
    "validated.crm_customers_removed", "validated.orders_removed", "validated.pos_removed",
]
INPUTS = [*SOURCE_TABLES, "cdp.segment_membership", "cdp.segment_changes"]
# Every identity and profile model (tables and views), in dependency order.
MODELS = [
    "core.identifier_sightings", "core.identifier_lookup", "core.touched_identifiers", "core.identifiers",
    "cdp.identity_edges", "core.identifier_persons", "core.person_events", "core.purchase_claims",
    "core.person_purchases", "core.trait_observations", "core.affected_persons", "core.person_trait_values",
    "core.person_computed_base", "core.person_computed_traits", "cdp.profiles", "core.profile_versions",
    "cdp.relationships",
]
STAGES = ["identity", "profiles", "online"]
BOOKKEEPING = {"_batch_id", "row_hash"}
HISTORY_TIMES = {"version_id", "version_updated_at", "valid_from", "valid_to"}


def materialize_stages(data_dir: Path, now: datetime, spark_master: str | None = None, stages=STAGES):
    """`cdp run`'s steps for `stages` (runner.py), at a frozen build time; on Spark when `spark_master` is given.
    Returns each step's result."""
    from dagster import AssetSelection, materialize

    import cdp_assets.dbt.assets as dbt_assets
    from cdp_assets.definitions import defs
    from cdp_assets.refresh import PARSE_VIEWS

    patch = pytest.MonkeyPatch()
    patch.setenv("CDP_DATA_DIR", str(data_dir))
    if spark_master:
        patch.setenv("CDP_ENGINE", "spark")
        patch.setenv("CDP_SPARK_MASTER", spark_master)
    vars_ = dbt_assets.dbt_vars
    patch.setattr(dbt_assets, "dbt_vars", lambda: {**vars_(), "now": now.isoformat(sep=" ")})
    try:
        results = []
        for stage in stages:
            result = materialize([*defs.assets, *defs.asset_checks], selection=AssetSelection.groups(stage) - PARSE_VIEWS,
                                 resources=defs.resources, raise_on_error=False)
            failures = [e.message for e in result.all_events if e.is_step_failure]
            assert result.success, f"{stage} on {spark_master or 'duckdb'}: {failures}"
            results.append(result)
        return results
    finally:
        patch.undo()


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> tuple[Path, Path, datetime]:
    """A small shop through the whole pipeline on DuckDB at a frozen build time (the oracle), and an empty data
    directory for the Spark run."""
    from cdp_assets.runner import run_everything
    from cdp_assets.sample_data import generate_sample_data

    root = tmp_path_factory.mktemp("spark-pipeline")
    data_dir = root / "duckdb"
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0, tzinfo=None)
    now = end + timedelta(minutes=30)
    generate_sample_data(data_dir, events=1500, seed=11, end=end, log=lambda *_: None)
    patch = pytest.MonkeyPatch()
    patch.setenv("CDP_DATA_DIR", str(data_dir))
    import cdp_assets.dbt.assets as dbt_assets

    vars_ = dbt_assets.dbt_vars
    patch.setattr(dbt_assets, "dbt_vars", lambda: {**vars_(), "now": now.isoformat(sep=" ")})
    try:
        assert run_everything(progress=lambda *_: None).success
    finally:
        patch.undo()
    return data_dir, root / "spark", now


def add_round_two_events(duck_dir: Path, engine, now: datetime) -> dict[str, str]:
    """Two new validated events, on both engines (the same rows, each in a new batch of its warehouse):
    - `merge`: an anonymous-only person's anonymous id with another person's user id: the two merge;
    - `steal`: a signed-up person's anonymous id with a third person's user id (a shared laptop): the anonymous
      id goes to the most recently seen user, and the person it leaves is touched by no new record, only by the
      resolver's change log (core.id_map_changes).
    Returns the persons involved."""
    with duckdb.connect(str(duck_dir / "warehouse.duckdb")) as con:
        users = con.execute("""SELECT person_id, min(identifier_value) FILTER (WHERE identifier_type = 'user_id'),
                                      min(identifier_value) FILTER (WHERE identifier_type = 'anonymous_id')
                               FROM cdp.id_map GROUP BY person_id
                               HAVING count(*) FILTER (WHERE identifier_type = 'user_id') = 1
                                  AND count(*) FILTER (WHERE identifier_type = 'anonymous_id') >= 2
                               ORDER BY 1 LIMIT 3""").fetchall()
        anonymous, anonymous_id = con.execute(
            """SELECT person_id, min(identifier_value) FILTER (WHERE identifier_type = 'anonymous_id') FROM cdp.id_map
               GROUP BY person_id HAVING bool_and(identifier_type = 'anonymous_id') ORDER BY 1 LIMIT 1""").fetchone()
        (user, user_id, _), (robbed, _, robbed_anonymous_id), (thief, thief_id, _) = users
        batch = con.execute("SELECT max(batch_id) + 1 FROM core.batches").fetchone()[0]
        con.execute("INSERT INTO core.batches VALUES (?, 'events', ?)", [batch, now])
        con.execute("CREATE TEMP TABLE _new AS SELECT * FROM cdp.events LIMIT 0")
        for number, (anonymous_value, user_value) in enumerate([(anonymous_id, user_id), (robbed_anonymous_id, thief_id)]):
            template = con.execute("SELECT event_id FROM cdp.events WHERE anonymous_id = ? ORDER BY event_id LIMIT 1",
                                   [anonymous_value]).fetchone()[0]
            at = now - timedelta(minutes=20 - number)
            con.execute("INSERT INTO _new SELECT * REPLACE (? AS event_id, ? AS user_id, 'identify' AS event_type, "
                        "NULL AS event_name, ? AS occurred_at, ? AS received_at, ? AS _batch_id) "
                        "FROM cdp.events WHERE event_id = ?",
                        [str(uuid.UUID(int=11 + number)), user_value, at, at, batch, template])
        con.execute("INSERT INTO cdp.events SELECT * FROM _new")
        # The same rows on Spark, in a batch of the Spark warehouse, laid out as copy_to_spark lays tables out.
        con.execute("SET TimeZone = 'UTC'")
        types = con.execute("SELECT column_name, data_type FROM information_schema.columns "
                            "WHERE table_schema = 'cdp' AND table_name = 'events' ORDER BY ordinal_position").fetchall()
        with engine.lock():
            spark_batch = engine.new_batch("events", now)
            casts = {"JSON": "VARCHAR", "UBIGINT": "DECIMAL(20, 0)", "TIMESTAMP": "TIMESTAMPTZ"}
            select = ", ".join(
                f"{spark_batch}::BIGINT AS _batch_id" if c == "_batch_id" else
                f"{quote(c)}::{casts[t]} AS {quote(c)}" if t in casts else quote(c) for c, t in types)
            con.execute(f"COPY (SELECT {select} FROM _new) TO '{engine.location('cdp.events') / 'part-round-2.parquet'}' (FORMAT parquet)")
    return {"user": user, "anonymous": anonymous, "robbed": robbed, "thief": thief,
            "robbed_anonymous_id": robbed_anonymous_id}


def duckdb_rows(duck_dir: Path, table: str, leave_out=BOOKKEEPING, extra: str = "") -> tuple[list[str], list[tuple]]:
    with duckdb.connect(str(duck_dir / "warehouse.duckdb"), read_only=True) as con:
        columns = [c for c in con.execute(f"SELECT * FROM {table} LIMIT 0").fetchdf().columns if c not in leave_out]
        rows = con.execute(f"SELECT {', '.join(quote(c) for c in columns)}{extra} FROM {table}").fetch_arrow_table()
    return columns, sorted_rows(rows)


def spark_rows(engine, table: str, leave_out=BOOKKEEPING, extra: str = "") -> tuple[list[str], list[tuple]]:
    """A table's or a dbt view's rows (views live in the catalog of the session dbt ran in: this process's)."""
    frame = engine.table(table) if engine.table_exists(table) else engine.session().table(table)
    columns = [c for c in frame.columns if c not in leave_out]
    return columns, sorted_rows(frame.selectExpr(*[f"`{c}`" for c in columns], *([extra.lstrip(", ")] if extra else [])).toArrow())


def assert_models_equal(duck_dir: Path, engine) -> None:
    """Every identity and profile model has DuckDB's rows on Spark, row for row."""
    for model in MODELS:
        columns, expected = duckdb_rows(duck_dir, model)
        assert expected, f"{model}: the shop gives it no rows to compare"
        spark_columns, rows = spark_rows(engine, model)
        assert spark_columns == columns, model
        assert rows == expected, f"{model}: {len(set(rows) ^ set(expected))} rows differ, e.g. " \
                                 f"{sorted(set(rows) - set(expected), key=repr)[:2]} vs {sorted(set(expected) - set(rows), key=repr)[:2]}"


def store_contents(data_dir: Path, duck_dir: Path) -> dict:
    """Everything the online store answers about every person and identifier the (DuckDB) warehouse knows."""
    from cdp_resources.online_store import open_store

    store = open_store(data_dir)
    try:
        with duckdb.connect(str(duck_dir / "warehouse.duckdb"), read_only=True) as con:
            persons = [r[0] for r in con.execute("SELECT person_id FROM core.persons ORDER BY 1").fetchall()]
            ids = con.execute("SELECT identifier_type, identifier_value FROM cdp.id_map ORDER BY 1, 2").fetchall()
        out = {person: (store.person(person), store.identifiers(person), store.events(person, None, 1000)) for person in persons}
        out["ids"] = {(t, v): store.person_of(t, v) for t, v in ids}
        out["count"] = store.persons_count()
        return out
    finally:
        store.close()


def test_identity_profiles_and_online_store_on_spark_equal_duckdb(shop, spark_cluster):
    from dagster import AssetSelection, materialize

    from cdp_assets.definitions import defs
    from cdp_assets.identity.checks import one_person_per_identifier
    from cdp_resources.spark import SparkEngine

    duck_dir, spark_dir, now = shop
    engine = SparkEngine(spark_cluster.master_url, spark_dir / "spark-warehouse")  # the session the assets use
    with duckdb.connect(str(duck_dir / "warehouse.duckdb"), read_only=True) as con:
        copy_to_spark(con, engine, INPUTS)
        merges_before = len(con.execute("SELECT * FROM cdp.identity_merges").fetchall())

    # Round 1: everything from the copied inputs (the profile models and the snapshot build in full).
    first = materialize_stages(spark_dir, now, spark_cluster.master_url)
    assert_models_equal(duck_dir, engine)
    # Round 2: one event merges two persons, on both engines; each takes its incremental path.
    persons = add_round_two_events(duck_dir, engine, now)
    user, anonymous = persons["user"], persons["anonymous"]
    materialize_stages(duck_dir, now)
    second = materialize_stages(spark_dir, now, spark_cluster.master_url)

    # Every check (the resolver's, the history's and the dbt tests) ran on the Spark tables and passed.
    checks = [c for result in first + second for c in result.get_asset_check_evaluations()]
    assert {c.check_name for c in checks} >= {"one_person_per_identifier", "profiles_match_current_history"}
    assert all(c.passed for c in checks), [c.check_name for c in checks if not c.passed]
    assert not (spark_dir / "warehouse.duckdb").exists()  # nothing ran on DuckDB
    built = {m.asset_key.to_user_string(): m.metadata for m in second[1].asset_materializations_for_node("cdp_dbt_models")}
    assert built["cdp/profiles"]["dagster/row_count"].value == engine.table("cdp.profiles").count()  # counted on Spark

    # The same persons (the merge happened, alike), merges, profiles, history and store.
    columns, expected = duckdb_rows(duck_dir, "cdp.id_map")
    assert spark_rows(engine, "cdp.id_map") == (columns, expected)
    survivor = {r[2] for r in expected if r[2] in (user, anonymous)}
    assert len(survivor) == 1, "the two persons merged"
    merges = sorted_rows(engine.table("cdp.identity_merges").drop("at").toArrow())
    with duckdb.connect(str(duck_dir / "warehouse.duckdb"), read_only=True) as con:
        expected = sorted_rows(con.execute('SELECT * EXCLUDE ("at") FROM cdp.identity_merges').fetch_arrow_table()
                               .slice(merges_before))
    assert merges == expected and any({r[0], r[1]} == {user, anonymous} and r[2] == "merge" for r in merges)
    # The profiles (the robbed person's is right only if its models read the resolver's change log), and the log.
    moved = ("anonymous_id", persons["robbed_anonymous_id"], persons["robbed"], persons["thief"])
    assert moved in [row[:4] for row in duckdb_rows(duck_dir, "core.id_map_changes")[1]]
    for table in ("cdp.profiles", "core.id_map_changes"):
        assert spark_rows(engine, table) == duckdb_rows(duck_dir, table), table
    history = dict(leave_out=BOOKKEEPING | HISTORY_TIMES, extra=", valid_to IS NULL AS current")
    columns, expected = duckdb_rows(duck_dir, "cdp.profile_history", **history)
    assert spark_rows(engine, "cdp.profile_history", **history) == (columns, expected)
    position = columns.index("person_id")
    assert sum(1 for row in expected if row[position] in survivor) >= 2  # the merge made a new version
    assert_models_equal(duck_dir, engine)
    expected_store = store_contents(duck_dir, duck_dir)
    assert store_contents(spark_dir, duck_dir) == expected_store

    # A process whose catalog lacks dbt's views (they live in the session that built them) builds them first.
    for view in ("core.person_events", "core.identifier_persons"):
        engine.session().sql(f"DROP VIEW {view}")
    materialize_stages(spark_dir, now, spark_cluster.master_url, stages=["online"])
    assert store_contents(spark_dir, duck_dir) == expected_store

    # The blocking identity check goes red on a broken id map: an identifier held by two persons.
    engine.append("cdp.id_map", engine.table("cdp.id_map").where("person_id = '%s'" % user).limit(1)
                  .selectExpr("identifier_type", "identifier_value", f"'{anonymous}' AS person_id"))
    patch = pytest.MonkeyPatch()
    for name, value in {"CDP_DATA_DIR": str(spark_dir), "CDP_ENGINE": "spark",
                        "CDP_SPARK_MASTER": spark_cluster.master_url}.items():
        patch.setenv(name, value)
    try:
        result = materialize([*defs.assets, *defs.asset_checks], selection=AssetSelection.checks(one_person_per_identifier),
                             resources=defs.resources, raise_on_error=False)
    finally:
        patch.undo()
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.metadata["identifiers_with_several_rows"].value == 1
