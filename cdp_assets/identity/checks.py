"""Checks on the identity graph: they block profiles from being rebuilt on a broken id map."""

from dagster import AssetCheckResult, asset_check

from cdp_resources import WarehouseResource


@asset_check(
    asset=["cdp", "id_map"], blocking=True, description="Every identifier maps to exactly one person.", pool="warehouse"
)
def one_person_per_identifier(warehouse: WarehouseResource) -> AssetCheckResult:
    with warehouse.connect() as con:
        ambiguous, unmapped = con.execute(
            """SELECT
                 (SELECT count(*) FROM (SELECT identifier_type, identifier_value FROM cdp.id_map
                                        GROUP BY ALL HAVING count(DISTINCT person_id) > 1
                                        OR count(*) > 1)),
                 (SELECT count(*) FROM cdp.id_map WHERE person_id IS NULL)"""
        ).fetchone()
    return AssetCheckResult(
        passed=ambiguous == 0 and unmapped == 0,
        metadata={"identifiers_with_several_rows": ambiguous, "identifiers_without_person": unmapped},
    )
