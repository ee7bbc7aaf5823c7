"""`cdp profile TYPE:VALUE --explain TYPE:VALUE` end to end: a warehouse file, the command, its output."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import polars as pl

from cdp_assets.cli import main
from cdp_assets.identity.resolve import resolve_persons
from cdp_assets.identity.rules import load_identity_rules
from cdp_resources.settings import config_dir

RULES = load_identity_rules(config_dir() / "identity.yaml")


def test_cli_prints_the_chain_and_the_rule(tmp_path, monkeypatch, capsys):
    at = lambda d: datetime(2026, 1, 1) + timedelta(days=d)  # noqa: E731
    edges = pl.DataFrame(  # the family laptop: seen with u1, then with u2
        [("user_id", "u1", "anonymous_id", "laptop", "web", at(3), at(3)),
         ("user_id", "u2", "anonymous_id", "laptop", "web", at(5), at(5))],
        schema=["left_type", "left_value", "right_type", "right_value", "source", "first_seen_at", "last_seen_at"],
        orient="row",
    )
    identifiers = pl.concat([
        edges.select(identifier_type=f"{end}_type", identifier_value=f"{end}_value", first_seen_at="first_seen_at")
        for end in ("left", "right")
    ]).group_by("identifier_type", "identifier_value").agg(pl.col("first_seen_at").min())
    id_map = resolve_persons(identifiers, edges, RULES, now=at(30)).id_map  # noqa: F841
    monkeypatch.setenv("CDP_DATA_DIR", str(tmp_path))
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        con.execute("CREATE SCHEMA cdp")
        con.execute("CREATE TABLE cdp.identity_edges AS SELECT * FROM edges")
        con.execute("CREATE TABLE cdp.id_map AS SELECT * FROM id_map")
    assert main(["profile", "user_id: u1 ", "--explain", "user_id:u2"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("user_id:u1 → p_") and printed[1].startswith("user_id:u2 → p_")
    assert printed[2] == "not joined: chain of 2 edge(s)"
    assert printed[3].startswith("  user_id:u1 — anonymous_id:laptop   (seen in web)   ✗ not applied: joining")
    assert printed[3].endswith("would give one person 2 user_ids (limit 1)")
    assert printed[4] == "  anonymous_id:laptop — user_id:u2   (seen in web)"
    assert main(["profile", "user_id:u1", "--explain", "nonsense"]) == 2  # TYPE:VALUE expected
