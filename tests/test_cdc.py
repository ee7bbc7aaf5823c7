"""CDC: state is decided by source position (LSN, then ts_ms), not by file arrival."""

from __future__ import annotations

import json

from datetime import datetime

import polars as pl
import pytest

from cdp_assets.config import load_sources
from cdp_assets.events.pii import PiiRules
from cdp_assets.events.validate import new_batch, run_sql, validate_source
from cdp_assets.sources.readers import csv_records

CRM = load_sources()["crm_customers"]


def _row(id_, city, email=None):
    return {"id": id_, "email": email or f"{id_}@example.com", "phone": None, "first_name": "A", "last_name": "B",
            "gender": None, "city": city, "updated_at": "2026-01-01T00:00:00Z"}


def _change(op, lsn, before=None, after=None, wrap=True):
    envelope = {"op": op, "before": before, "after": after, "source": {"lsn": lsn, "ts_ms": lsn * 10}}
    return json.dumps({"payload": envelope} if wrap else envelope)


@pytest.fixture
def crm(parse_views):
    """Validate CRM change files (file -> lines) into a fresh state: (current rows, quarantine rows)."""
    con = parse_views

    def state(files: dict[str, list[str]], fresh: bool = True) -> tuple[pl.DataFrame, pl.DataFrame]:
        run_sql(con, "state")
        if fresh:
            for table in ("crm_customers", "crm_customers_changes", "crm_customers_removed"):
                con.execute(f"DROP TABLE IF EXISTS validated.{table}")
            con.execute("DELETE FROM core.validated_partitions WHERE raw_source = 'crm_customers'")
            con.execute("DELETE FROM cdp.quarantine WHERE source = 'crm_customers'")
        con.execute("DELETE FROM raw.crm_customers")
        for file, lines in files.items():
            con.executemany("INSERT INTO raw.crm_customers VALUES ('', ?, ?, ?, now())", [(file, n, line) for n, line in enumerate(lines, 1)])
        validate_source(con, CRM, PiiRules(), {}, new_batch(con, "test", datetime(2026, 1, 1)))
        current = con.sql("SELECT * FROM validated.crm_customers ORDER BY id").pl()
        return current, con.sql("SELECT * FROM cdp.quarantine WHERE source = 'crm_customers' ORDER BY line_no").pl()

    return state


def test_out_of_order_files_replays_and_deletes_give_one_state(crm):
    first = [_change("r", 1, after=_row("c1", "Paris")), _change("r", 2, after=_row("c2", "Rome"))]
    second = [_change("u", 5, before=_row("c1", "Paris"), after=_row("c1", "Lyon")), _change("d", 6, before=_row("c2", "Rome"))]
    third = [_change("u", 4, before=_row("c1", "Paris"), after=_row("c1", "Nice"), wrap=False), "{broken"]
    in_order, quarantine = crm({"001.jsonl": first, "002.jsonl": second, "003.jsonl": third})
    shuffled, _ = crm({"001.jsonl": third, "002.jsonl": second, "003.jsonl": first, "004.jsonl": first})
    # Arriving one file per run, incrementally, ends in the same state.
    for files in ({"001.jsonl": first}, {"001.jsonl": first, "002.jsonl": second}):
        crm(files, fresh=len(files) == 1)
    one_by_one, _ = crm({"001.jsonl": first, "002.jsonl": second, "003.jsonl": third}, fresh=False)
    for state in (in_order, shuffled, one_by_one):
        assert state.select("id", "city").rows() == [("c1", "Lyon")]
    assert quarantine["reasons"].to_list() == [["malformed_json: the record is not a JSON object"]]


def test_tombstones_after_deletes_are_counted_not_quarantined(crm, parse_views):
    lines = [_change("c", 1, after=_row("c1", "Oslo")), _change("d", 2, before=_row("c1", "Oslo")),
             '{"schema": null, "payload": null}', "null", _change("c", 3, after=_row("c2", "Bergen"))]
    state, quarantine = crm({"f.jsonl": lines})
    assert state["id"].to_list() == ["c2"] and quarantine.is_empty()
    changes = parse_views.sql("SELECT op FROM validated.crm_customers_changes ORDER BY line_no").pl()
    assert changes["op"].to_list() == ["c", "d", "t", "t", "c"]  # tombstones are kept as accepted, applying nothing
    counts = parse_views.sql("SELECT records, accepted, quarantined FROM validated.reconciliation WHERE source = 'crm_customers'").fetchall()
    assert counts == [(5, 5, 0)]


def test_added_columns_flow_through(crm):
    row = {**_row("c9", "Oslo"), "loyalty_tier": "gold"}
    state, _ = crm({"001.jsonl": [_change("c", 1, after=row)]})
    assert state["city"].to_list() == ["Oslo"]


def test_dms_csv_ops_apply_in_file_order(crm, tmp_path):
    path = tmp_path / "LOAD0001.csv"
    path.write_text(
        "Op,id,email,phone,first_name,last_name,gender,city,updated_at\n"
        "I,c1,c1@example.com,,A,B,,Paris,2026-01-01\n"
        "U,c1,c1@example.com,,A,B,,Berlin,2026-01-02\n"
        "I,c2,c2@example.com,,A,B,,Rome,2026-01-01\n"
        "D,c2,c2@example.com,,A,B,,Rome,2026-01-03\n"
    )
    state, _ = crm({"LOAD0001.csv": [record for _, record in csv_records(path, ["Op"])]})
    assert state.select("id", "city").rows() == [("c1", "Berlin")]
