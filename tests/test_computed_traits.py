"""Computed traits declared in config/traits.yaml: checked, compiled by dbt, equal to a plain-Python oracle,
refreshed incrementally to exactly what a full rebuild gives, and versioned in profile_history."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest
import yaml

from cdp_assets.config import ConfigError
from cdp_assets.profiles.computed import OVER, load_computed_traits
from cdp_resources.settings import config_dir

REPO = Path(__file__).resolve().parents[1]
DBT_DIR = REPO / "dbt"
COMPUTED = ["person_computed_base", "person_computed_traits"]


def _vars(now: datetime | None = None) -> dict:
    from cdp_assets.dbt.vars import dbt_vars as _dbt_vars

    return {**_dbt_vars(), **({"now": now.isoformat(sep=" ")} if now else {})}


def _dbt(data_dir: Path, *args: str, now: datetime | None = None) -> None:
    """dbt on a copy of the warehouse, with its own target and log folders (other tests run dbt too)."""
    command = [
        str(Path(sys.executable).parent / "dbt"), *args, "--vars", json.dumps(_vars(now)),
        "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR),
        "--target-path", str(data_dir / "target"), "--log-path", str(data_dir / "logs"),
    ]
    result = subprocess.run(command, env={**os.environ, "CDP_DATA_DIR": str(data_dir)}, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]


def _copy(demo, path: Path) -> Path:
    path.mkdir()
    shutil.copy(demo.data_dir / "warehouse.duckdb", path / "warehouse.duckdb")
    return path


def _table(data_dir: Path, table: str, exclude: str = "") -> list[tuple]:
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(f"SELECT * {exclude} FROM {table} ORDER BY person_id").fetchall()


# -- the oracle: every configured trait and the RFM scores in plain Python --------------------------------

def _property(row: dict, over: str, prop: str, kind: str):
    if prop in OVER[over]:
        return row[prop]
    value = (row["properties"] or {}).get(prop)
    if value is None:
        return None
    if kind == "number":
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    if kind == "timestamp":
        return datetime.fromisoformat(str(value).replace("Z", "")) if isinstance(value, str) else None
    return value if isinstance(value, str) else json.dumps(value)


def _aggregate(spec: dict, rows: list[dict], now: datetime):
    over = spec["over"]
    time, ident = ("occurred_at", "event_id") if over == "events" else ("purchased_at", "purchase_id")
    events = spec.get("event", [])
    events = [events] if isinstance(events, str) else events
    rows = [r for r in rows if (not events or r["event_name"] in events)
            and (not spec.get("within_days") or r[time] >= now - timedelta(days=spec["within_days"]))]
    prop, aggregate = spec.get("property"), spec["aggregate"]
    kind = spec.get("type") or ("number" if aggregate == "sum" else "string")
    valued = [(r, _property(r, over, prop, kind)) for r in rows] if prop else [(r, None) for r in rows]
    values = [v for _, v in valued if v is not None]
    if aggregate == "count":
        return len(values) if prop else len(rows)
    if aggregate == "sum":
        return float(sum(values))
    if aggregate in ("min", "max"):
        return (min if aggregate == "min" else max)(values) if values else None
    if aggregate in ("first", "last"):
        ordered = sorted(((r[time], r[ident]), v) for r, v in valued if v is not None)
        return (ordered[0] if aggregate == "first" else ordered[-1])[1] if ordered else None
    if aggregate == "distinct_count":
        return len(set(values))
    if aggregate == "distinct_values":
        return sorted({x for v in values for x in (v if isinstance(v, list) else [v]) if x is not None})
    if aggregate == "most_frequent":
        counts = Counter(values)
        return min(counts, key=lambda v: (-counts[v], v)) if counts else None
    if aggregate in ("days_since_first", "days_since_last"):
        times = [r[time] for r in rows]
        if not times:
            return None
        return (now.date() - (min(times) if aggregate == "days_since_first" else max(times)).date()).days
    raise AssertionError(aggregate)


def _rfm_label(r: int, f: int, m: int) -> str:
    if r >= 4 and f >= 4 and m >= 4:
        return "champions"
    if r >= 4 and f <= 2:
        return "new_customers"
    if r <= 2 and f >= 3:
        return "at_risk"
    if f >= 4:
        return "loyal"
    return "hibernating" if r <= 2 else "promising"


def _oracle(data_dir: Path, now: datetime) -> dict[str, dict]:
    declared = yaml.safe_load((config_dir() / "traits.yaml").read_text())
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        persons = [p for (p,) in con.execute("SELECT person_id FROM core.persons").fetchall()]
        rows = {"events": {}, "purchases": {}}
        for over, sql in (("events", "SELECT * FROM core.person_events"), ("purchases", "SELECT * FROM core.person_purchases")):
            cursor = con.execute(sql)
            names = [d[0] for d in cursor.description]
            for values in cursor.fetchall():
                row = dict(zip(names, values))
                if over == "events":
                    row["properties"] = json.loads(row["properties"]) if row["properties"] else {}
                rows[over].setdefault(row["person_id"], []).append(row)
    expected = {
        p: {name: _aggregate(spec, rows[spec["over"]].get(p, []), now) for name, spec in declared["computed"].items()}
        for p in persons
    }
    rfm = declared["rfm"]
    buyers = [p for p in persons if expected[p][rfm["frequency"]] > 0]
    for score in ("recency", "frequency", "monetary"):
        values = [expected[p][rfm[score]] for p in buyers]
        for p in buyers:
            rank = 1 + sum(v < expected[p][rfm[score]] for v in values)
            expected[p][f"rfm_{score}"] = 1 + math.floor(5 * (rank - 1) / len(buyers))
    for p in persons:
        scores = [expected[p].get(f"rfm_{s}") for s in ("recency", "frequency", "monetary")]
        for s, v in zip(("recency", "frequency", "monetary"), scores):
            expected[p][f"rfm_{s}"] = v
        expected[p]["rfm_segment"] = _rfm_label(*scores) if scores[0] else None
    return expected


def _computed(data_dir: Path) -> dict[str, dict]:
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        cursor = con.execute("SELECT * FROM core.person_computed_traits")
        names = [d[0] for d in cursor.description]
        return {row[0]: dict(zip(names[1:], row[1:])) for row in cursor.fetchall()}


def _assert_matches_oracle(data_dir: Path, now: datetime) -> None:
    actual, expected = _computed(data_dir), _oracle(data_dir, now)
    assert set(actual) == set(expected)
    for person, traits in expected.items():
        for name, value in traits.items():
            got = actual[person][name]
            assert got == (pytest.approx(value) if isinstance(value, float) else value), (person, name, got, value)


# -- tests ----------------------------------------------------------------------------------------------

def test_shipped_declarations_are_dbt_project_defaults():
    """A plain `dbt build` computes what the platform configures (dbt_project.yml vars = config/traits.yaml)."""
    project = yaml.safe_load((DBT_DIR / "dbt_project.yml").read_text())["vars"]
    configured = load_computed_traits(config_dir() / "traits.yaml")
    assert project["computed_traits"] == configured["computed_traits"]
    assert project["rfm"] == configured["rfm"]


BAD = [
    ("x: {aggregate: median, over: events}", "computed.x.aggregate: 'median' is not one of"),
    ("x: {aggregate: count, over: sessions}", "computed.x.over: 'sessions'"),
    ("x: {aggregate: sum, over: purchases}", "computed.x.property: sum needs a property"),
    ("x: {aggregate: max, over: purchases, property: color}", "computed.x.property: purchases have"),
    ("x: {aggregate: count, over: purchases, event: viewed}", "computed.x.event: only traits over events"),
    ("x: {aggregate: count, over: events, within_days: -3}", "computed.x.within_days"),
    ("x: {aggregate: sum, over: events, property: name, type: string}", "sum needs a number"),
    ("x: {aggregate: max, over: events, property: \"it's\"}", "computed.x.property: expected a property name"),
    ("x: {aggregate: count, over: events, colour: red}", "computed.x.colour: unknown key"),
    ("Bad-Name: {aggregate: count, over: events}", "lower_snake_case"),
    ("email: {aggregate: count, over: events}", "computed.email: already a profile column"),
]


@pytest.mark.parametrize("declaration,message", BAD)
def test_a_wrong_declaration_names_the_file_and_field(tmp_path, declaration, message):
    base = ("event_count: {aggregate: count, over: events}\n  order_count: {aggregate: count, over: purchases}\n"
            "  total_revenue: {aggregate: sum, over: purchases, property: amount}\n")
    path = tmp_path / "traits.yaml"
    path.write_text(f"traits: {{email: [events]}}\ncomputed:\n  {base}  {declaration}\n")
    with pytest.raises(ConfigError) as error:
        load_computed_traits(path)
    assert str(path) in str(error.value) and message in str(error.value)


def test_contract_columns_and_rfm_traits_are_required(tmp_path):
    path = tmp_path / "traits.yaml"
    path.write_text("computed:\n  event_count: {aggregate: count, over: events}\n")
    with pytest.raises(ConfigError, match="order_count, total_revenue"):
        load_computed_traits(path)
    path.write_text("computed:\n  event_count: {aggregate: count, over: events}\n  order_count: {aggregate: count, over: purchases}\n"
                    "  total_revenue: {aggregate: sum, over: purchases, property: amount}\n"
                    "rfm: {recency: order_count, frequency: order_count, monetary: total_revenue}\n")
    with pytest.raises(ConfigError, match="rfm.recency: expected the name of a computed trait of type timestamp"):
        load_computed_traits(path)


def test_incremental_refresh_equals_a_full_rebuild_and_the_oracle(demo, tmp_path):
    """An hourly run after new events, a deleted order, a merge and a new person recomputes only the persons
    concerned and ends equal to a full rebuild; so does a run 40 days later, when windows alone moved."""
    incremental = _copy(demo, tmp_path / "incremental")
    with duckdb.connect(str(incremental / "warehouse.duckdb"), read_only=True) as con:
        latest = con.execute("SELECT max(occurred_at) FROM core.person_events").fetchone()[0]
        persons = [p for (p,) in con.execute("SELECT person_id FROM core.persons ORDER BY 1").fetchall()]
    start = latest.replace(microsecond=0) + timedelta(hours=1)
    _dbt(incremental, "run", "--full-refresh", "--select", *COMPUTED, now=start)
    _assert_matches_oracle(incremental, start)

    # What the next hour's events and identity stages leave upstream of computed traits.
    rng = random.Random(5)
    touched = set()
    with duckdb.connect(str(incremental / "warehouse.duckdb")) as con:
        for i in range(12):
            person = rng.choice(persons)
            touched.add(person)
            con.execute(
                """INSERT INTO core.person_events SELECT * REPLACE (? AS event_id, ? AS person_id, ? AS occurred_at)
                   FROM core.person_events WHERE event_name = ? ORDER BY event_id LIMIT 1""",
                [f"new-{i}", person, start + timedelta(minutes=i), rng.choice(["product_viewed", "logged_in"])],
            )
        purchase, buyer = con.execute(
            "SELECT purchase_id, person_id FROM core.person_purchases ORDER BY purchase_id LIMIT 1 OFFSET 3").fetchone()
        con.execute("DELETE FROM core.person_purchases WHERE purchase_id = ?", [purchase])
        active = {p for (p,) in con.execute("SELECT DISTINCT person_id FROM core.person_events").fetchall()}
        gone, survivor = [p for p in persons if p in active and p not in touched and p != buyer][:2]
        for table in ("core.person_events", "core.person_purchases"):
            con.execute(f"UPDATE {table} SET person_id = ? WHERE person_id = ?", [survivor, gone])
        con.execute("DELETE FROM core.persons WHERE person_id = ?", [gone])
        con.execute("INSERT INTO core.persons SELECT * REPLACE ('brand-new' AS person_id) FROM core.persons LIMIT 1")
        con.execute("INSERT INTO core.person_events SELECT * REPLACE ('new-person' AS event_id, 'brand-new' AS person_id) "
                    "FROM core.person_events WHERE event_id = 'new-0'")
    touched |= {buyer, survivor, "brand-new"}
    full = tmp_path / "full"
    shutil.copytree(incremental, full)

    hour = start + timedelta(hours=1)
    _dbt(incremental, "run", "--select", *COMPUTED, now=hour)
    _dbt(full, "run", "--full-refresh", "--select", *COMPUTED, now=hour)
    recomputed = {p for (p, at) in [(r[0], r[-1]) for r in _table(incremental, "core.person_computed_base")] if at == hour}
    assert touched <= recomputed, "every person whose rows changed is recomputed"
    assert len(recomputed) < len(persons) / 2, f"an hourly run recomputed {len(recomputed)} of {len(persons)} persons"
    assert gone not in {r[0] for r in _table(incremental, "core.person_computed_base")}
    assert _table(incremental, "core.person_computed_base", "EXCLUDE (computed_at)") == \
        _table(full, "core.person_computed_base", "EXCLUDE (computed_at)")
    assert _table(incremental, "core.person_computed_traits") == _table(full, "core.person_computed_traits")
    _assert_matches_oracle(full, hour)

    later = hour + timedelta(days=40)  # every 30-day window has moved past rows it held
    shutil.rmtree(full)
    shutil.copytree(incremental, full)
    _dbt(incremental, "run", "--select", *COMPUTED, now=later)
    _dbt(full, "run", "--full-refresh", "--select", *COMPUTED, now=later)
    assert _table(incremental, "core.person_computed_traits") == _table(full, "core.person_computed_traits")
    _assert_matches_oracle(incremental, later)


def test_profile_history_versions_changes_and_keeps_persons_that_are_gone(demo, tmp_path):
    """A changed trait makes a new version (the old one closed); a person who disappears upstream keeps their
    history; the current versions equal the profiles (the asset check)."""
    from cdp_assets.profiles.checks import profiles_match_current_history
    from cdp_resources import WarehouseResource

    data = _copy(demo, tmp_path / "history")
    with duckdb.connect(str(data / "warehouse.duckdb")) as con:
        person, raw, identifier_type = con.execute(
            """SELECT m.person_id, o.raw_value, o.identifier_type FROM core.trait_observations o
               JOIN core.identifier_lookup l ON l.identifier_type = o.identifier_type AND l.raw_value = o.raw_value
               JOIN cdp.id_map m ON m.identifier_type = l.identifier_type AND m.identifier_value = l.identifier_value
               WHERE o.source = 'crm_customers' AND o.trait = 'first_name' ORDER BY 1 LIMIT 1""").fetchone()
        con.execute(
            """INSERT INTO core.trait_observations SELECT * REPLACE ('Renamed' AS value, observed_at + INTERVAL 1 DAY AS observed_at)
               FROM core.trait_observations WHERE raw_value = ? AND identifier_type = ? AND trait = 'first_name'
               AND source = 'crm_customers' ORDER BY observed_at DESC LIMIT 1""", [raw, identifier_type])
        # a person without purchases: their going changes no one else's RFM rank
        gone = con.execute("SELECT person_id FROM cdp.profiles WHERE person_id <> ? AND order_count = 0 ORDER BY 1 LIMIT 1",
                           [person]).fetchone()[0]
        built_at = con.execute("SELECT max(computed_at) FROM core.person_computed_base").fetchone()[0]
        con.execute("DELETE FROM cdp.id_map WHERE person_id = ?", [gone])
        con.execute("DELETE FROM core.persons WHERE person_id = ?", [gone])
    _dbt(data, "build", "--select", "person_trait_values+", now=built_at)  # the demo's clock: windows stay put
    with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as con:
        versions = con.execute(
            "SELECT first_name, valid_to IS NULL FROM cdp.profile_history WHERE person_id = ? ORDER BY valid_from", [person]
        ).fetchall()
        assert len(versions) == 2 and versions[-1] == ("Renamed", True) and versions[0][1] is False
        assert con.execute("SELECT count(*) FROM cdp.profiles WHERE person_id = ?", [gone]).fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM cdp.profile_history WHERE person_id = ?", [gone]).fetchone()[0] == 1
        others = con.execute(
            "SELECT count(*) FROM cdp.profile_history WHERE person_id NOT IN (?, ?) GROUP BY person_id HAVING count(*) > 1",
            [person, gone]).fetchall()
        assert others == []  # nothing else changed, so no other person has a second version
    patch = pytest.MonkeyPatch()
    patch.setenv("CDP_DATA_DIR", str(data))
    try:
        assert profiles_match_current_history(WarehouseResource()).passed
        with duckdb.connect(str(data / "warehouse.duckdb")) as con:
            con.execute("UPDATE cdp.profiles SET city = 'Nowhere' WHERE person_id = ?", [person])
        result = profiles_match_current_history(WarehouseResource())
        assert not result.passed and result.metadata["profiles_differing_from_history"].value == 1
    finally:
        patch.undo()
