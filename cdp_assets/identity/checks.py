"""Checks on the identity graph: they block profiles from being rebuilt on a broken id map."""

from dagster import AssetCheckResult, asset_check

from cdp_resources import WarehouseResource


@asset_check(
    asset=["cdp", "id_map"], blocking=True, description="Every identifier maps to exactly one person.", pool="warehouse"
)
def one_person_per_identifier(warehouse: WarehouseResource) -> AssetCheckResult:
    ambiguous, unmapped = id_map_problems(warehouse.engine())
    return AssetCheckResult(
        passed=ambiguous == 0 and unmapped == 0,
        metadata={"identifiers_with_several_rows": ambiguous, "identifiers_without_person": unmapped},
    )


def id_map_problems(engine) -> tuple[int, int]:
    """(identifiers with several rows or persons, identifiers without a person) in cdp.id_map, on the engine."""
    if engine.name == "spark":
        from cdp_assets.identity.spark import id_map_problems as on_spark

        return on_spark(engine)
    with engine.connect() as con:
        return con.execute(
            """SELECT
                 (SELECT count(*) FROM (SELECT identifier_type, identifier_value FROM cdp.id_map
                                        GROUP BY ALL HAVING count(DISTINCT person_id) > 1
                                        OR count(*) > 1)),
                 (SELECT count(*) FROM cdp.id_map WHERE person_id IS NULL)"""
        ).fetchone()
