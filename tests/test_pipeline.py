"""The whole graph, materialized in process over generated data: the public tables hold what the
generator's ground truth implies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cdp_resources.settings import config_dir

pytestmark = pytest.mark.slow


def test_definitions_load_and_every_asset_is_described():
    from dagster import Definitions

    from cdp_assets.definitions import defs

    Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    groups = {graph.get(key).group_name for key in graph.get_all_asset_keys() if graph.get(key).is_materializable}
    assert {"sources", "events", "identity", "profiles", "segments"} <= groups
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if node.is_materializable:
            assert node.description, f"{key.to_user_string()} has no description"
            assert node.owners, f"{key.to_user_string()} has no owner"
            assert node.kinds, f"{key.to_user_string()} has no kinds"
    segment_files = sorted(p.stem for p in (config_dir() / "segments").glob("*.yaml"))
    assert sorted(k.path[-1] for k in graph.get_all_asset_keys() if k.path[0] == "segments") == segment_files
    jobs = {job.name for job in defs.resolve_all_job_defs()}
    assert {"web_hourly_job", "pos_daily_job", "orders_extract_job", "crm_customers_extract_job", "refresh_job"} <= jobs
    assert {s.name for s in defs.sensors} >= {"web_landing_sensor", "crm_customers_cdc_sensor", "refresh_after_extract"}


def test_code_location_loads_without_warnings():
    """What `dagster dev` shows: no Dagster warning (beta, preview, superseded) and none from our code."""
    script = (
        "import warnings, json\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import cdp_assets.definitions\n"
        "print(json.dumps([[w.category.__module__, w.category.__name__, w.filename, str(w.message)] for w in caught]))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    caught = json.loads(result.stdout.strip().splitlines()[-1])
    ours = [w for w in caught if w[0].startswith("dagster") or "/cdp_assets/" in w[2] or "/cdp_resources/" in w[2]]
    assert ours == []


def test_run_succeeds_with_progress(demo):
    assert demo.summary.success, demo.summary.failures
    assert any(line.startswith("[1/") for line in demo.progress)
    assert demo.summary.tables["cdp.events"] > 0


def test_events_are_the_good_messages_once(demo, warehouse):
    events, distinct = warehouse.execute("SELECT count(*), count(DISTINCT event_id) FROM cdp.events").fetchone()
    assert events == distinct == demo.manifest["web_messages"]


def test_bad_records_are_quarantined_with_their_reasons(demo, warehouse):
    rows = warehouse.execute(
        "SELECT source, split_part(reasons[1], ':', 1) AS code, count(*) FROM cdp.quarantine GROUP BY ALL"
    ).fetchall()
    found = {}
    for source, code, count in rows:
        found.setdefault(source, {})[code] = count
    expected = {s: {k: v for k, v in codes.items() if v} for s, codes in demo.manifest["quarantine"].items()}
    assert found == expected
    reasons = warehouse.execute("SELECT reasons FROM cdp.quarantine").fetchall()
    assert all(r[0] and all(":" in reason for reason in r[0]) for r in reasons)


def test_tracking_plan_violations_are_flagged_and_kept(demo, warehouse):
    """The shipped plan flags (on_violation: flag): the events are in cdp.events, their violations queryable."""
    rows = warehouse.execute(
        "SELECT source, split_part(v, ':', 1) AS code, count(*) "
        "FROM (SELECT source, unnest(violations) AS v FROM cdp.tracking_plan_violations) GROUP BY ALL"
    ).fetchall()
    found = {}
    for source, code, count in rows:
        found.setdefault(source, {})[code] = count
    assert found == demo.manifest["tracking_plan_violations"]
    kept = warehouse.execute("SELECT count(*) FROM cdp.tracking_plan_violations v JOIN cdp.events e USING (event_id)").fetchone()[0]
    assert kept == sum(found["web"].values())


def test_tracked_orders_count_once_beside_the_api(demo, warehouse):
    """order_completed events carry the API's order ids: each is one purchase, the API's (refunded ones none)."""
    tracked = warehouse.execute("SELECT count(*) FROM cdp.events WHERE event_name = 'order_completed'").fetchone()[0]
    assert tracked == demo.manifest["web_order_events"] + demo.manifest["tracking_plan_violations"]["web"]["wrong_type"]
    by_channel = dict(warehouse.execute("SELECT channel, count(*) FROM core.person_purchases GROUP BY 1").fetchall())
    assert "web" not in by_channel and by_channel["orders"] > 0


def test_unreadable_file_is_rejected_with_a_reason(demo, warehouse):
    rejected = list((demo.data_dir / "landing" / "_rejected").rglob("*.gz"))
    assert len(rejected) == demo.manifest["rejected_files"]
    for path in rejected:
        assert "cannot be read" in path.with_name(path.name + ".reason").read_text()
    assert warehouse.execute("SELECT count(*) FROM raw.rejected_files").fetchone()[0] == demo.manifest["rejected_files"]


def test_persons_are_found_back(demo, warehouse):
    persons = warehouse.execute("SELECT count(DISTINCT person_id) FROM cdp.id_map").fetchone()[0]
    assert persons == demo.manifest["persons"]
    assert warehouse.execute("SELECT count(*) FROM cdp.profiles").fetchone()[0] == persons


def test_family_laptop_stays_two_persons(demo, warehouse):
    laptop = demo.manifest["family_laptop"]
    owners = warehouse.execute(
        "SELECT DISTINCT person_id FROM cdp.id_map WHERE identifier_type = 'user_id' AND identifier_value IN (SELECT unnest(?))",
        [laptop["user_ids"]],
    ).fetchall()
    assert len(owners) == 2
    links = warehouse.execute(
        "SELECT count(*) FROM cdp.identity_edges WHERE right_type = 'anonymous_id' AND right_value = ?",
        [laptop["anonymous_id"]],
    ).fetchone()[0]
    assert links >= 2  # both links stay recorded even though only one holds


def test_example_person_is_one_profile_with_all_purchases(demo, warehouse):
    person = demo.manifest["example_person"]
    keys = [("user_id", person["user_id"]), ("email", person["email"]), ("phone", person["phone"]), ("crm_id", person["crm_id"])]
    keys += [("anonymous_id", a) for a in person["anonymous_ids"]]
    ids = {
        warehouse.execute(
            "SELECT person_id FROM cdp.id_map WHERE identifier_type = ? AND identifier_value = ?", list(key)
        ).fetchone()
        for key in keys
    }
    assert len(ids) == 1 and None not in ids
    (person_id,) = ids.pop()
    order_count, revenue, email = warehouse.execute(
        "SELECT order_count, total_revenue, email FROM cdp.profiles WHERE person_id = ?", [person_id]
    ).fetchone()
    assert order_count == person["orders"] + person["pos_purchases"]
    assert revenue == pytest.approx(person["order_revenue"] + person["pos_revenue"])
    assert email == person["email"]


def test_traits_survive_by_config_traits_yaml(demo, warehouse):
    """Shipped survivorship: the CRM wins for names, the latest identify call for city (oracle in plain SQL)."""
    expected = dict(
        ((person, trait), value)
        for person, trait, value in warehouse.execute(
            """
            WITH crm AS (
                SELECT m.person_id, arg_max(c.first_name, c.updated_at) AS first_name, arg_max(c.city, c.updated_at) AS city
                FROM validated.crm_customers c JOIN cdp.id_map m ON m.identifier_type = 'crm_id' AND m.identifier_value = trim(c.id)
                GROUP BY 1),
            identify AS (
                SELECT m.person_id,
                       arg_max(trim(e.traits ->> '$.first_name'), e.occurred_at) FILTER (WHERE trim(e.traits ->> '$.first_name') <> '') AS first_name,
                       arg_max(trim(e.traits ->> '$.city'), e.occurred_at) FILTER (WHERE trim(e.traits ->> '$.city') <> '') AS city
                FROM cdp.events e JOIN cdp.id_map m
                  ON (m.identifier_type, m.identifier_value) = (CASE WHEN e.user_id IS NOT NULL THEN 'user_id' ELSE 'anonymous_id' END,
                                                                 trim(coalesce(e.user_id, e.anonymous_id)))
                WHERE e.event_type = 'identify' GROUP BY 1)
            SELECT person_id, 'first_name', coalesce(crm.first_name, identify.first_name) FROM crm FULL JOIN identify USING (person_id)
            UNION ALL
            SELECT person_id, 'city', coalesce(identify.city, crm.city) FROM crm FULL JOIN identify USING (person_id)
            """
        ).fetchall()
    )
    actual = {}
    for person, first_name, city in warehouse.execute("SELECT person_id, first_name, city FROM cdp.profiles").fetchall():
        actual[(person, "first_name")], actual[(person, "city")] = first_name, city
    assert sum(v is not None for v in expected.values()) > 100
    assert {key: actual.get(key) for key in expected} == expected
    assert all(value is None for key, value in actual.items() if key not in expected)


def test_segments_match_their_rules(demo, warehouse):
    sizes = dict(warehouse.execute("SELECT segment, count(*) FROM cdp.segment_membership GROUP BY segment").fetchall())
    templates = sorted(p.stem for p in (config_dir() / "segments").glob("*.yaml"))
    assert [t for t in templates if not sizes.get(t)] == [], sizes  # the sample shop gives every template members
    vip = {r[0] for r in warehouse.execute("SELECT person_id FROM cdp.segment_membership WHERE segment = 'vip_buyers'").fetchall()}
    expected = {r[0] for r in warehouse.execute("SELECT person_id FROM cdp.profiles WHERE total_revenue >= 500").fetchall()}
    assert vip == expected and vip
    entered = warehouse.execute(
        "SELECT count(*) FROM cdp.segment_changes WHERE segment = 'vip_buyers' AND change = 'entered'"
    ).fetchone()[0]
    assert entered == len(vip)
    abandoners = {r[0] for r in warehouse.execute(
        "SELECT person_id FROM cdp.segment_membership WHERE segment = 'cart_abandoners'").fetchall()}
    for person_id in abandoners:
        names = {r[0] for r in warehouse.execute(
            "SELECT event_name FROM core.person_events WHERE person_id = ? "
            "AND occurred_at >= (SELECT max(changed_at) FROM cdp.segment_changes) - INTERVAL 2 HOUR", [person_id]).fetchall()}
        assert "product_added" in names and "order_completed" not in names


def _cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CDP_DATA_DIR": str(data_dir)}
    env.pop("DAGSTER_HOME", None)
    return subprocess.run([sys.executable, "-m", "cdp_assets.cli", *args], env=env, capture_output=True, text=True, timeout=600)


def test_profile_command_shows_the_person(demo):
    person = demo.manifest["example_person"]
    noisy = "  " + person["email"].upper() + " "
    result = _cli("profile", f"email:{noisy}", data_dir=demo.data_dir)
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    assert {"type": "user_id", "value": person["user_id"]} in view["identifiers"]
    assert view["profile"]["email"] == person["email"]
    assert view["computed_traits"]["order_count"] == person["orders"] + person["pos_purchases"]
    assert {t["trait"]: t["source"] for t in view["trait_sources"]}["first_name"] == "crm_customers"
    text = _cli("profile", f"email:{noisy}", "--format", "text", data_dir=demo.data_dir).stdout
    assert text.startswith(f"Person {view['person_id']}")
    assert f"order_count            {person['orders'] + person['pos_purchases']}" in text and person["email"] in text
    missing = _cli("profile", "email:nobody@nowhere.example", data_dir=demo.data_dir)
    assert missing.returncode == 1 and "no person holds" in missing.stderr


def test_personal_data_rules_apply_before_the_validated_layer(demo, warehouse):
    """config/pii.yaml drops context.ip: it is in the raw records, and in no validated event."""
    raw = warehouse.execute("SELECT count(*) FROM raw.web WHERE record LIKE '%\"ip\"%'").fetchone()[0]
    kept = warehouse.execute("SELECT count(*) FROM cdp.events WHERE context ->> '$.ip' IS NOT NULL").fetchone()[0]
    assert raw > 1000 and kept == 0
    assert warehouse.execute("SELECT count(*) FROM cdp.events WHERE context ->> '$.library.name' IS NOT NULL").fetchone()[0] > 1000
