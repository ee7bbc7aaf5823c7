"""Checks on profiles beyond the dbt tests (which also show as checks)."""

from dagster import AssetCheckResult, asset_check

from cdp_resources import WarehouseResource


@asset_check(asset=["cdp", "profiles"], blocking=True, description="Exactly one profile per person of the id map.")
def one_profile_per_person(warehouse: WarehouseResource) -> AssetCheckResult:
    with warehouse.connect() as con:
        rows, distinct, persons = con.execute(
            """SELECT (SELECT count(*) FROM cdp.profiles), (SELECT count(DISTINCT person_id) FROM cdp.profiles),
                      (SELECT count(DISTINCT person_id) FROM cdp.id_map)"""
        ).fetchone()
    return AssetCheckResult(
        passed=rows == distinct == persons, metadata={"profiles": rows, "distinct_persons": distinct, "persons": persons}
    )
