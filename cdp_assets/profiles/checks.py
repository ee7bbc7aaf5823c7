"""Checks on profiles beyond the dbt tests (which also show as checks: uniqueness, not-null and the profiles
<-> id map relationship live in dbt/models/profiles/_profiles.yml and dbt/tests/)."""

from dagster import AssetCheckResult, asset_check

from cdp_resources import WarehouseResource


@asset_check(
    pool="warehouse",
    asset=["cdp", "profile_history"],
    description="Every profile equals the current version of its history (valid_to null), trait by trait.",
)
def profiles_match_current_history(warehouse: WarehouseResource) -> AssetCheckResult:
    differing, without_version = history_problems(warehouse.engine())
    return AssetCheckResult(
        passed=differing == 0 and without_version == 0,
        metadata={"profiles_differing_from_history": differing, "profiles_without_current_version": without_version},
    )


def history_problems(engine) -> tuple[int, int]:
    """(profiles differing from their current version, profiles without one), on the engine."""
    if engine.name == "spark":
        from cdp_assets.profiles.spark import history_problems as on_spark

        return on_spark(engine)
    with engine.connect() as con:
        columns = ", ".join(f'"{c}"' for (c,) in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'core' "
            "AND table_name = 'profile_versions' ORDER BY ordinal_position").fetchall())
        return con.execute(
            f"""SELECT (SELECT count(*) FROM (SELECT {columns} FROM core.profile_versions
                                            EXCEPT SELECT {columns} FROM cdp.profile_history WHERE valid_to IS NULL)),
                       (SELECT count(*) FROM cdp.profiles WHERE person_id NOT IN
                           (SELECT person_id FROM cdp.profile_history WHERE valid_to IS NULL))"""
        ).fetchone()
