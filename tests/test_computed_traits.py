"""Computed traits declared in config/traits.yaml: checked, compiled by dbt, equal to a plain-Python oracle,
refreshed incrementally to exactly what a full rebuild gives, and versioned in profile_history."""

from __future__ import annotations

import json
import math
import os
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
    """A plain `dbt build` computes what the platform configures: every var dbt_project.yml holds equals what
    the Dagster asset passes from the shipped config/ files (sources, identity, traits, computed traits)."""
    from cdp_assets.dbt.vars import dbt_vars

    project = yaml.safe_load((DBT_DIR / "dbt_project.yml").read_text())["vars"]
    passed = dbt_vars()
    assert set(passed) <= set(project), f"dbt_project.yml lacks vars {sorted(set(passed) - set(project))}"
    for name, value in passed.items():
        assert project[name] == value, f"dbt_project.yml var {name!r} differs from config/: update one or the other"


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
    """On the demo: computed traits equal a plain-Python oracle; an hour later, with no new data, a run
    recomputes only the persons whose rows crossed a window edge, and equals a full rebuild; so does a run
    40 days later, when windows alone moved for many. (Changes arriving upstream between runs:
    tests/test_incremental_pipeline.py.)"""
    incremental = _copy(demo, tmp_path / "incremental")
    with duckdb.connect(str(incremental / "warehouse.duckdb"), read_only=True) as con:
        latest = con.execute("SELECT max(occurred_at) FROM core.person_events").fetchone()[0]
        persons = con.execute("SELECT count(*) FROM core.persons").fetchone()[0]
    start = latest.replace(microsecond=0) + timedelta(hours=1)
    _dbt(incremental, "run", "--full-refresh", "--select", *COMPUTED, now=start)
    _assert_matches_oracle(incremental, start)

    hour = start + timedelta(hours=1)
    full = tmp_path / "full"
    shutil.copytree(incremental, full)
    _dbt(incremental, "run", "--select", *COMPUTED, now=hour)
    _dbt(full, "run", "--full-refresh", "--select", *COMPUTED, now=hour)
    recomputed = {p for (p, at) in [(r[0], r[-1]) for r in _table(incremental, "core.person_computed_base")] if at == hour}
    assert len(recomputed) < persons / 2, f"an hourly run recomputed {len(recomputed)} of {persons} persons"
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


def test_profile_history_versions_changes_and_keeps_persons_that_are_gone(tmp_path):
    """A changed trait makes a new version (the old one closed); a person who disappears upstream keeps their
    history; the current versions equal the profiles (the asset check)."""
    from cdp_assets.config import load_sources
    from cdp_assets.profiles.checks import profiles_match_current_history
    from cdp_resources import WarehouseResource
    from tests.conftest import build_models
    from tests.pipeline import load_raw, refresh

    sources = load_sources()
    lsn = iter(range(1, 100))

    def crm(op: str, crm_id: str, first_name: str) -> str:
        row = {"id": crm_id, "email": f"{crm_id}@x.com", "phone": None, "first_name": first_name, "last_name": "Lee",
               "gender": None, "city": "Oslo", "updated_at": "2026-01-01T00:00:00Z"}
        image = {"before": row, "after": None} if op == "d" else {"before": None, "after": row}
        return json.dumps({"payload": {**image, "op": op, "source": {"lsn": next(lsn), "ts_ms": 1}}})

    def run(lines: list[str], now: datetime) -> None:
        load_raw(tmp_path, "crm_customers", "", lines)
        refresh(tmp_path, sources, now=now)
        build_models(tmp_path, "profile_history", sources, now=now, command="snapshot")

    lines = [crm("r", "c1", "Ann"), crm("r", "c2", "Bob")]
    run(lines, datetime(2026, 1, 2))
    lines += [crm("u", "c1", "Renamed"), crm("d", "c2", "Bob")]
    run(lines, datetime(2026, 1, 3))
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        ann = con.execute("SELECT person_id FROM cdp.id_map WHERE identifier_value = 'c1'").fetchone()[0]
        versions = con.execute(
            "SELECT first_name, valid_to IS NULL FROM cdp.profile_history WHERE person_id = ? ORDER BY valid_from", [ann]
        ).fetchall()
        assert versions == [("Ann", False), ("Renamed", True)]
        assert con.execute("SELECT count(*) FROM cdp.profiles").fetchone()[0] == 1  # Bob is gone...
        assert con.execute("SELECT count(*) FROM cdp.profile_history WHERE first_name = 'Bob'").fetchone()[0] == 1  # ...not his history
    patch = pytest.MonkeyPatch()
    patch.setenv("CDP_DATA_DIR", str(tmp_path))
    try:
        assert profiles_match_current_history(WarehouseResource()).passed
        with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
            con.execute("UPDATE cdp.profiles SET city = 'Nowhere' WHERE person_id = ?", [ann])
        result = profiles_match_current_history(WarehouseResource())
        assert not result.passed and result.metadata["profiles_differing_from_history"].value == 1
    finally:
        patch.undo()
