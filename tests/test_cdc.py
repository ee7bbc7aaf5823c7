"""CDC: state is decided by source position (LSN, then ts_ms), not by file arrival."""

from __future__ import annotations

import json

import duckdb
import polars as pl

from cdp_assets.config import load_sources
from cdp_assets.events.assets import latest_per_key, split_accepted, without_tombstones
from cdp_assets.events.parse import parse_changes
from cdp_assets.events.rules import load_suite, suite_rules
from cdp_assets.sources.readers import csv_records

CRM = load_sources()["crm_customers"]
ORDER = ["source_lsn", "source_ts_ms", "file", "line_no"]


def _row(id_, city, email=None):
    return {"id": id_, "email": email or f"{id_}@example.com", "phone": None, "first_name": "A", "last_name": "B",
            "gender": None, "city": city, "updated_at": "2026-01-01T00:00:00Z"}


def _change(op, lsn, before=None, after=None, wrap=True):
    envelope = {"op": op, "before": before, "after": after, "source": {"lsn": lsn, "ts_ms": lsn * 10}}
    return json.dumps({"payload": envelope} if wrap else envelope)


def _state(files: dict[str, list[str]]) -> pl.DataFrame:
    con = duckdb.connect()
    con.execute("CREATE SCHEMA raw")
    con.execute("CREATE TABLE raw.crm_customers (partition_key VARCHAR, file VARCHAR, line_no BIGINT, record VARCHAR, loaded_at TIMESTAMP)")
    for file, lines in files.items():
        con.executemany("INSERT INTO raw.crm_customers VALUES ('', ?, ?, ?, now())", [(file, n, l) for n, l in enumerate(lines, 1)])
    frame, _ = without_tombstones(parse_changes(con, CRM))
    accepted, quarantine = split_accepted(frame, suite_rules(load_suite("crm_customers"), {}, frame.columns, "crm"), "crm_customers")
    current = latest_per_key(accepted, "id", ORDER)
    return current.filter(pl.col("op") != "d").sort("id"), quarantine


def test_out_of_order_files_replays_and_deletes_give_one_state():
    first = [_change("r", 1, after=_row("c1", "Paris")), _change("r", 2, after=_row("c2", "Rome"))]
    second = [_change("u", 5, before=_row("c1", "Paris"), after=_row("c1", "Lyon")), _change("d", 6, before=_row("c2", "Rome"))]
    third = [_change("u", 4, before=_row("c1", "Paris"), after=_row("c1", "Nice"), wrap=False), "{broken"]
    in_order, quarantine = _state({"001.jsonl": first, "002.jsonl": second, "003.jsonl": third})
    shuffled, _ = _state({"001.jsonl": third, "002.jsonl": second, "003.jsonl": first, "004.jsonl": first})
    for state in (in_order, shuffled):
        assert state.select("id", "city").rows() == [("c1", "Lyon")]
    assert quarantine["reasons"].to_list() == [["malformed_json: the record is not a JSON object"]]


def test_tombstones_after_deletes_are_counted_not_quarantined():
    con = duckdb.connect()
    con.execute("CREATE SCHEMA raw")
    con.execute("CREATE TABLE raw.crm_customers (partition_key VARCHAR, file VARCHAR, line_no BIGINT, record VARCHAR, loaded_at TIMESTAMP)")
    lines = [_change("c", 1, after=_row("c1", "Oslo")), _change("d", 2, before=_row("c1", "Oslo")),
             '{"schema": null, "payload": null}', "null", _change("c", 3, after=_row("c2", "Bergen"))]
    con.executemany("INSERT INTO raw.crm_customers VALUES ('', 'f.jsonl', ?, ?, now())", list(enumerate(lines, 1)))
    changes, tombstones = without_tombstones(parse_changes(con, CRM))
    assert tombstones == 2 and changes["op"].to_list() == ["c", "d", "c"]
    state, quarantine = _state({"f.jsonl": lines})
    assert state["id"].to_list() == ["c2"] and quarantine.is_empty()


def test_added_columns_flow_through(tmp_path):
    row = {**_row("c9", "Oslo"), "loyalty_tier": "gold"}
    state, _ = _state({"001.jsonl": [_change("c", 1, after=row)]})
    assert state["city"].to_list() == ["Oslo"]


def test_dms_csv_ops_apply_in_file_order(tmp_path):
    path = tmp_path / "LOAD0001.csv"
    path.write_text(
        "Op,id,email,phone,first_name,last_name,gender,city,updated_at\n"
        "I,c1,c1@example.com,,A,B,,Paris,2026-01-01\n"
        "U,c1,c1@example.com,,A,B,,Berlin,2026-01-02\n"
        "I,c2,c2@example.com,,A,B,,Rome,2026-01-01\n"
        "D,c2,c2@example.com,,A,B,,Rome,2026-01-03\n"
    )
    state, _ = _state({"LOAD0001.csv": [record for _, record in csv_records(path, ["Op"])]})
    assert state.select("id", "city").rows() == [("c1", "Berlin")]
