"""Identity assets: the edge list from every source, then persons (OneID) resolved from it."""


from datetime import datetime, timezone

import polars as pl
from dagster import AssetExecutionContext, AssetKey, AssetSpec, Config, MaterializeResult, MetadataValue, asset, multi_asset

from cdp_assets.config import load_sources
from cdp_assets.events.assets import validated_key
from cdp_assets.identity.edges import (
    identifier_lookup,
    identifier_sightings,
    identifiers_seen,
    identity_edges,
    normalized_sightings,
)
from cdp_assets.identity.relationships import person_relationships
from cdp_assets.identity.rules import load_identity_rules
from cdp_assets.identity.store import update_persons
from cdp_assets.metadata import markdown_preview
from cdp_resources import WarehouseResource
from cdp_resources.settings import config_dir
from cdp_resources.warehouse import replace_table

_sources = load_sources()


_validated = sorted({validated_key(s) for s in _sources.values()}, key=lambda k: k.to_user_string())
_OWNERS = ["team:data-platform"]


@multi_asset(
    specs=[
        AssetSpec(["cdp", "identity_edges"], deps=_validated, owners=_OWNERS, kinds={"duckdb", "polars"},
                  description="Every link between two normalized identifiers seen on one record, with source and when."),
        AssetSpec(["core", "identifiers"], deps=_validated, owners=_OWNERS, kinds={"duckdb", "polars"},
                  description="Every normalized identifier seen, including ones with no link."),
        AssetSpec(["core", "identifier_lookup"], deps=_validated, owners=_OWNERS, kinds={"duckdb", "polars"},
                  description="Raw identifier value → normalized value, for SQL models joining source rows to persons."),
    ],
    name="identity_edges",
    group_name="identity",
    pool="warehouse",
)
def identity_edges_asset(context: AssetExecutionContext, warehouse: WarehouseResource):
    """Extract and normalize the identifiers of every validated record and link those seen together."""
    rules = load_identity_rules(config_dir() / "identity.yaml")
    with warehouse.connect() as con:
        sightings = normalized_sightings(identifier_sightings(con, _sources), rules)
        edges = identity_edges(sightings, rules)
        rows = replace_table(con, "cdp.identity_edges", edges)
        identifiers = replace_table(con, "core.identifiers", identifiers_seen(sightings))
        lookups = replace_table(con, "core.identifier_lookup", identifier_lookup(sightings))
    context.log.info(f"{rows} edges between {identifiers} identifiers")
    yield MaterializeResult(
        asset_key=["cdp", "identity_edges"],
        metadata={
            "dagster/row_count": rows,
            "edges_by_source": MetadataValue.json(_counts(edges, "source")),
            "preview": markdown_preview(edges),
        },
    )
    yield MaterializeResult(asset_key=["core", "identifiers"], metadata={"dagster/row_count": identifiers})
    yield MaterializeResult(asset_key=["core", "identifier_lookup"], metadata={"dagster/row_count": lookups})


_RESOLUTION_INPUTS = [AssetKey(["cdp", "identity_edges"]), AssetKey(["core", "identifiers"])]


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
    """Resolve persons from the edges; person ids are stable across runs. Only the components that
    changed edges reach are re-resolved, unless the rules changed or a full rebuild is asked for."""
    rules = load_identity_rules(config_dir() / "identity.yaml")
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    with warehouse.connect() as con:
        update = update_persons(con, rules, now, full_rebuild=config.full_rebuild)
        rows = con.execute("SELECT count(*) FROM cdp.id_map").fetchone()[0]
        by_type = dict(con.execute("SELECT identifier_type, count(*) FROM cdp.id_map GROUP BY 1 ORDER BY 1").fetchall())
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


@asset(
    key=["cdp", "relationships"],
    deps=[AssetKey(["cdp", "id_map"]), AssetKey(["core", "identifier_lookup"]), *_validated],
    group_name="identity",
    owners=_OWNERS,
    kinds={"duckdb"},
    description="Persons and what relates them without merging them: group (account) membership, households, parents.",
    pool="warehouse",
)
def relationships_asset(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult:
    rules = load_identity_rules(config_dir() / "identity.yaml")
    with warehouse.connect() as con:
        relationships = person_relationships(con, _sources, rules)
        rows = replace_table(con, "cdp.relationships", relationships)
    return MaterializeResult(
        metadata={"dagster/row_count": rows, "by_kind": MetadataValue.json(_counts(relationships, "kind"))}
    )
