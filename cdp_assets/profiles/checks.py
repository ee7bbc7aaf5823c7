"""Checks on profiles beyond the dbt tests (which also show as checks)."""

from dagster import AssetCheckResult, asset_check

from cdp_resources import WarehouseResource


@asset_check(
    pool="warehouse",
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


@asset_check(
    pool="warehouse",
    asset=["cdp", "profile_history"],
    description="Every profile equals the current version of its history (valid_to null), trait by trait.",
)
def profiles_match_current_history(warehouse: WarehouseResource) -> AssetCheckResult:
    with warehouse.connect() as con:
        columns = ", ".join(f'"{c}"' for (c,) in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'core' "
            "AND table_name = 'profile_versions' ORDER BY ordinal_position").fetchall())
        differing, without_version = con.execute(
            f"""SELECT (SELECT count(*) FROM (SELECT {columns} FROM core.profile_versions
                                            EXCEPT SELECT {columns} FROM cdp.profile_history WHERE valid_to IS NULL)),
                       (SELECT count(*) FROM cdp.profiles WHERE person_id NOT IN
                           (SELECT person_id FROM cdp.profile_history WHERE valid_to IS NULL))"""
        ).fetchone()
    return AssetCheckResult(
        passed=differing == 0 and without_version == 0,
        metadata={"profiles_differing_from_history": differing, "profiles_without_current_version": without_version},
    )
