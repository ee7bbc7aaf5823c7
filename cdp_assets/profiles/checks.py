"""Checks on profiles beyond the dbt tests (which also show as checks)."""

from dagster import AssetCheckResult, asset_check

from cdp_resources import WarehouseResource


@asset_check(
    asset=["cdp", "profiles"],
    blocking=True,
    description="Exactly one profile per person of the id map: unique, and referentially intact both ways.",
)
def one_profile_per_person(warehouse: WarehouseResource) -> AssetCheckResult:
    with warehouse.connect() as con:
        rows, distinct, without_profile, without_person = con.execute(
            """SELECT (SELECT count(*) FROM cdp.profiles),
                      (SELECT count(DISTINCT person_id) FROM cdp.profiles),
                      (SELECT count(DISTINCT person_id) FROM cdp.id_map
                       WHERE person_id NOT IN (SELECT person_id FROM cdp.profiles)),
                      (SELECT count(*) FROM cdp.profiles
                       WHERE person_id IS NULL OR person_id NOT IN (SELECT person_id FROM cdp.id_map))"""
        ).fetchone()
    return AssetCheckResult(
        passed=rows == distinct and without_profile == 0 and without_person == 0,
        metadata={"profiles": rows, "duplicates": rows - distinct, "persons_without_profile": without_profile,
                  "profiles_without_person": without_person},
    )
