"""Identity edges: every pair of identifiers seen together on one record, from every source.

Events link what a Segment message carries: userId ↔ anonymousId, the identify traits (email, phone),
`context.device.id`, and alias `previousId` ↔ `userId`. Table sources link the columns that
`config/sources.yaml` maps to identifier types. Each record links its first identifier (by the priority
in `config/identity.yaml`) to each of the others, which connects them all without listing every pair.
"""

from __future__ import annotations

import duckdb
import polars as pl

from cdp_assets.config import SourceConfig
from cdp_assets.events.parse import quote_ident, quote_literal
from cdp_assets.identity.normalize import normalize_identifiers
from cdp_assets.identity.rules import IdentityRules

# (identifier type, SQL expression over cdp.events). An alias's previousId is an earlier anonymous id
# of the same person (Segment's alias semantics).
EVENT_IDENTIFIERS = [
    ("user_id", "user_id"),
    ("anonymous_id", "anonymous_id"),
    ("anonymous_id", "CASE WHEN event_type = 'alias' THEN previous_id END"),
    ("device_id", "context ->> '$.device.id'"),
    ("email", "coalesce(traits ->> '$.email', context ->> '$.traits.email')"),
    ("phone", "coalesce(traits ->> '$.phone', context ->> '$.traits.phone')"),
]
SIGHTING_SCHEMA = {
    "record": pl.String, "identifier_type": pl.String, "raw_value": pl.String,
    "source": pl.String, "seen_at": pl.Datetime("us"),
}


def identifier_sightings(con: duckdb.DuckDBPyConnection, sources: dict[str, SourceConfig]) -> pl.DataFrame:
    """One row per identifier on a record: (record, identifier_type, raw_value, source, seen_at)."""
    selects = [
        f"SELECT 'events:' || event_id, {quote_literal(type_)}, ({expression})::VARCHAR, source, occurred_at "
        "FROM cdp.events"
        for type_, expression in EVENT_IDENTIFIERS
    ]
    for source in sources.values():
        if source.kind == "events" or not source.identifiers:
            continue
        table = f"validated.{quote_ident(source.name)}"
        seen = quote_ident(source.time_column) if source.time_column else "received_at"
        key = quote_ident(source.primary_key)
        for column, type_ in source.identifiers.items():
            selects.append(
                f"SELECT {quote_literal(source.name + ':')} || {key}::VARCHAR, {quote_literal(type_)}, "
                f"{quote_ident(column)}::VARCHAR, {quote_literal(source.name)}, {seen}::TIMESTAMP FROM {table}"
            )
    columns = ", ".join(f"{quote_ident(name)}" for name in SIGHTING_SCHEMA)
    sql = " UNION ALL ".join(selects)
    frame = con.sql(f"SELECT * FROM ({sql}) AS s({columns}) WHERE raw_value IS NOT NULL").pl()
    return frame.cast(SIGHTING_SCHEMA)


def normalized_sightings(sightings: pl.DataFrame, rules: IdentityRules) -> pl.DataFrame:
    """Sightings with `identifier_value` (normalized, §4), without values that normalize to nothing or are
    blocked: a blocked value must not become a record's anchor and leave its other identifiers unlinked."""
    normalized = normalize_identifiers(
        sightings.with_columns(identifier_value=pl.col("raw_value")),
        "identifier_type",
        "identifier_value",
        rules.default_phone_region,
    )
    return normalized.filter(pl.col("identifier_value").is_not_null() & ~rules.blocked())


def identity_edges(sightings: pl.DataFrame, rules: IdentityRules) -> pl.DataFrame:
    """Edges from each record's anchor (highest-priority identifier) to its other identifiers."""
    types = sightings["identifier_type"].unique().to_list()
    ranks = pl.DataFrame({"identifier_type": types, "rank": [rules.priority(t) for t in types]})
    ranked = (
        sightings.unique(["record", "identifier_type", "identifier_value"])
        .join(ranks, on="identifier_type")
        .sort(["record", "rank", "identifier_value"])
    )
    anchors = ranked.group_by("record", maintain_order=True).first().select(
        "record", left_type="identifier_type", left_value="identifier_value"
    )
    pairs = ranked.join(anchors, on="record").filter(
        (pl.col("identifier_type") != pl.col("left_type")) | (pl.col("identifier_value") != pl.col("left_value"))
    )
    return (
        pairs.group_by("left_type", "left_value", "identifier_type", "identifier_value", "source")
        .agg(first_seen_at=pl.col("seen_at").min(), last_seen_at=pl.col("seen_at").max())
        .rename({"identifier_type": "right_type", "identifier_value": "right_value"})
        .sort("left_type", "left_value", "right_type", "right_value", "source")
    )


def identifiers_seen(sightings: pl.DataFrame) -> pl.DataFrame:
    """Every normalized identifier with when it was first and last seen."""
    return (
        sightings.group_by("identifier_type", "identifier_value")
        .agg(first_seen_at=pl.col("seen_at").min(), last_seen_at=pl.col("seen_at").max())
        .sort("identifier_type", "identifier_value")
    )


def identifier_lookup(sightings: pl.DataFrame) -> pl.DataFrame:
    """Raw value → normalized value per type, so SQL models can join raw source columns to persons."""
    return sightings.select("identifier_type", "raw_value", "identifier_value").unique().sort(
        "identifier_type", "raw_value"
    )
