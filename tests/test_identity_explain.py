"""`cdp profile A --explain B` and cdp.relationships on the generated shop (its manifest is the truth)."""

from __future__ import annotations

from cdp_assets.identity.explain import explain_link
from cdp_assets.identity.rules import load_identity_rules
from cdp_resources.settings import config_dir

RULES = load_identity_rules(config_dir() / "identity.yaml")


def test_one_person_is_explained_by_a_chain_of_recorded_edges(demo, warehouse):
    person = demo.manifest["example_person"]
    lines = explain_link(warehouse, ("email", f"  {person['email'].upper()} "), ("phone", person["phone"]), RULES)
    assert lines[2].startswith("one person: chain of") and "✗" not in "\n".join(lines)
    assert lines[0].split(" → ")[1] == lines[1].split(" → ")[1]


def test_family_laptop_names_the_limit_that_kept_the_accounts_apart(demo, warehouse):
    laptop = demo.manifest["family_laptop"]
    first, second = laptop["user_ids"]
    lines = explain_link(warehouse, ("user_id", first), ("user_id", second), RULES)
    assert lines[2] == "not joined: chain of 2 edge(s)"
    assert f"anonymous_id:{laptop['anonymous_id']}" in lines[3] + lines[4]
    assert "✗ not applied: joining" in "\n".join(lines) and "(limit 1)" in "\n".join(lines)


def test_unrelated_identifiers_have_no_chain(demo, warehouse):
    lines = explain_link(warehouse, ("email", "nobody@example.org"), ("user_id", demo.manifest["family_laptop"]["user_ids"][0]), RULES)
    assert "no person" in lines[0] and lines[2].startswith("not joined: no chain")


def test_group_calls_relate_persons_without_merging_them(demo, warehouse):
    groups = warehouse.execute(
        "SELECT count(DISTINCT group_id) FROM cdp.events WHERE event_type = 'group' AND group_id IS NOT NULL"
    ).fetchone()[0]
    related = warehouse.execute("SELECT count(DISTINCT related_value) FROM cdp.relationships WHERE kind = 'group_member'").fetchone()[0]
    assert groups > 0 and related == groups
    # a group id never becomes an identifier of anyone
    assert not warehouse.execute(
        "SELECT count(*) FROM cdp.id_map WHERE identifier_value IN (SELECT group_id FROM cdp.events WHERE group_id IS NOT NULL)"
    ).fetchone()[0]
