"""The Python side of profiles: trait observations from every source, for dbt's survivorship."""

from dagster import AssetExecutionContext, AssetKey, MaterializeResult, MetadataValue, asset

from cdp_assets.config import load_sources
from cdp_assets.events.assets import validated_key
from cdp_assets.identity.rules import load_identity_rules
from cdp_assets.metadata import markdown_preview
from cdp_assets.profiles.traits import load_trait_rules, trait_observations
from cdp_resources import WarehouseResource
from cdp_resources.settings import config_dir
from cdp_resources.warehouse import replace_table

_sources = load_sources()


@asset(
    key=["core", "trait_observations"],
    deps=sorted({validated_key(s) for s in _sources.values()}, key=lambda k: k.to_user_string())
    + [AssetKey(["core", "identifier_lookup"])],
    group_name="profiles",
    description="Every trait value any source reports (identify calls, CRM rows...), ranked by config/traits.yaml.",
    kinds={"duckdb", "polars"},
    owners=["team:data-platform"],
    pool="warehouse",
)
def trait_observations_asset(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult:
    rules = load_trait_rules(config_dir() / "traits.yaml")
    identity = load_identity_rules(config_dir() / "identity.yaml")
    with warehouse.connect() as con:
        observations = trait_observations(con, _sources, rules, identity)
        rows = replace_table(con, "core.trait_observations", observations)
    by_source = observations.group_by("source").len().sort("source")
    return MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "by_source": MetadataValue.json({r["source"]: r["len"] for r in by_source.iter_rows(named=True)}),
            "preview": markdown_preview(observations),
        }
    )
