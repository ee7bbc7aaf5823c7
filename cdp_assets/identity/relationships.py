"""Relationships between persons and things that must never merge them: the accounts (groups) a person
belongs to from `group` calls, and per source the columns `relationships:` maps to a kind (a household id,
a parent's CRM id). They are kept beside the identity graph, never in it: two members of one household
stay two persons."""

from __future__ import annotations

import duckdb
import polars as pl

from cdp_assets.config import SourceConfig
from cdp_assets.events.parse import quote_ident, quote_literal
from cdp_assets.identity.rules import IdentityRules
from cdp_resources.warehouse import table_exists

RELATIONSHIP_SCHEMA = {
    "person_id": pl.String, "kind": pl.String, "related_value": pl.String, "source": pl.String,
    "first_seen_at": pl.Datetime("us"), "last_seen_at": pl.Datetime("us"),
}
# A raw identifier's person: through the normalization the identity stage recorded, then the id map.
_PERSON = """(SELECT m.person_id FROM core.identifier_lookup l
              JOIN cdp.id_map m ON m.identifier_type = l.identifier_type AND m.identifier_value = l.identifier_value
              WHERE l.identifier_type = {type} AND l.raw_value = ({value})::VARCHAR)"""


def person_relationships(con: duckdb.DuckDBPyConnection, sources: dict[str, SourceConfig], rules: IdentityRules) -> pl.DataFrame:
    selects = []
    if table_exists(con, "cdp.events"):
        person = (
            f"coalesce({_PERSON.format(type=quote_literal('user_id'), value='user_id')}, "
            f"{_PERSON.format(type=quote_literal('anonymous_id'), value='anonymous_id')})"
        )
        selects.append(
            f"SELECT {person}, 'group_member', group_id, source, occurred_at FROM cdp.events "
            "WHERE event_type = 'group' AND group_id IS NOT NULL"
        )
    for source in sources.values():
        if not source.relationships or not source.identifiers or not table_exists(con, f"validated.{source.name}"):
            continue
        column = rules.strongest(source.identifiers)
        person = _PERSON.format(type=quote_literal(source.identifiers[column]), value=quote_ident(column))
        seen = quote_ident(source.time_column) if source.time_column else "received_at"
        for related, kind in source.relationships.items():
            selects.append(
                f"SELECT {person}, {quote_literal(kind)}, {quote_ident(related)}::VARCHAR, {quote_literal(source.name)}, "
                f"{seen}::TIMESTAMP FROM validated.{quote_ident(source.name)} WHERE {quote_ident(related)} IS NOT NULL"
            )
    if not selects:
        return pl.DataFrame(schema=RELATIONSHIP_SCHEMA)
    frame = con.sql(
        f"""SELECT person_id, kind, related_value, source, min(seen_at) AS first_seen_at, max(seen_at) AS last_seen_at
            FROM ({' UNION ALL '.join(selects)}) AS r(person_id, kind, related_value, source, seen_at)
            WHERE person_id IS NOT NULL GROUP BY ALL ORDER BY ALL"""
    ).pl()
    return frame.cast(RELATIONSHIP_SCHEMA)
