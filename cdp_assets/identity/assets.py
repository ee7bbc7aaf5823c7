"""Persons (OneID) resolved from the identity edges (dbt models in dbt/models/identity) by the rules of
config/identity.yaml."""


import polars as pl
from dagster import AssetExecutionContext, AssetKey, AssetSpec, Config, MaterializeResult, MetadataValue, multi_asset

from cdp_assets.identity.rules import load_identity_rules
from cdp_assets.identity.store import update_persons_in
from cdp_resources import WarehouseResource
from cdp_resources.settings import clock, config_dir

_OWNERS = ["team:data-platform"]
_RESOLUTION_INPUTS = [AssetKey(["cdp", "identity_edges"]), AssetKey(["core", "identifiers"]), AssetKey(["core", "touched_identifiers"])]


class ResolveConfig(Config):
    full_rebuild: bool = False  # re-resolve every identifier, not only the components changed edges reach


@multi_asset(
    specs=[
        AssetSpec(["cdp", "id_map"], deps=_RESOLUTION_INPUTS, owners=_OWNERS, kinds={"duckdb", "polars", "scipy"},
                  description="Each identifier's person (OneID), resolved by the rules in config/identity.yaml."),
        AssetSpec(["core", "persons"], deps=_RESOLUTION_INPUTS, owners=_OWNERS, kinds={"duckdb"},
                  description="Every person id with its creation time; on a merge the older id survives."),
        AssetSpec(["cdp", "identity_merges"], deps=_RESOLUTION_INPUTS, owners=_OWNERS, kinds={"duckdb"},
                  description="Append-only log of merges and splits of persons."),
    ],
    name="resolve_persons",
    group_name="identity",
    pool="warehouse",
)
def id_map_asset(context: AssetExecutionContext, warehouse: WarehouseResource, config: ResolveConfig):
    """Resolve persons from the edges; person ids are stable across runs. Only the components of the
    identifiers touched since the last resolution are re-resolved, unless the rules changed or a full
    rebuild is asked for."""
    rules = load_identity_rules(config_dir() / "identity.yaml")
    now = clock()
    update, by_type = update_persons_in(warehouse.engine(), rules, now, full_rebuild=config.full_rebuild)
    rows = sum(by_type.values())
    context.log.info(
        f"{update.mode}: re-resolved {update.identifiers} identifiers over {update.edges} edges; "
        f"{rows} identifiers → {update.persons} persons, {len(update.merges)} merges/splits"
    )
    reasons = _counts(update.merges, "reason") if len(update.merges) else {}
    yield MaterializeResult(
        asset_key=["cdp", "id_map"],
        metadata={
            "dagster/row_count": rows,
            "persons": update.persons,
            "mode": update.mode,
            "identifiers_resolved": update.identifiers,
            "identifiers_changed_person": update.changed,
            "identifiers_by_type": MetadataValue.json(by_type),
        },
    )
    yield MaterializeResult(asset_key=["core", "persons"], metadata={"dagster/row_count": update.persons})
    yield MaterializeResult(
        asset_key=["cdp", "identity_merges"],
        metadata={"merges": reasons.get("merge", 0), "splits": reasons.get("split", 0)},
    )


def _counts(frame: pl.DataFrame, column: str) -> dict[str, int]:
    return {row[column]: row["len"] for row in frame.group_by(column).len().sort(column).iter_rows(named=True)}
