"""Trait observations: every value any source reports for a profile trait, ranked by survivorship.

Survivorship lives in `config/traits.yaml` (source priority per trait, then the most recent value), and
every source reaches profiles through this one table: a table source with `traits:` in
`config/sources.yaml` and the identify calls of events sources. Observations are keyed by the raw
identifier they arrived with; dbt (`person_trait_values`) joins them to persons through `cdp.id_map`,
so a re-resolution of identities never needs the observations rebuilt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from cdp_assets.config import ConfigError, SourceConfig, read_config
from cdp_assets.events.parse import quote_ident, quote_literal
from cdp_assets.identity.rules import IdentityRules
from cdp_resources.warehouse import table_exists

EVENTS = "events"  # the pseudo-source name of identify calls in config/traits.yaml
OBSERVATION_SCHEMA = {
    "identifier_type": pl.String, "raw_value": pl.String, "trait": pl.String, "value": pl.String,
    "source": pl.String, "source_rank": pl.Int32, "observed_at": pl.Datetime("us"),
}


@dataclass(frozen=True)
class TraitRules:
    priorities: dict[str, tuple[str, ...]]  # trait -> sources, highest priority first

    def rank(self, trait: str, source: str) -> int:
        order = self.priorities.get(trait, ())
        return order.index(source) if source in order else len(order)


def load_trait_rules(path: Path) -> TraitRules:
    entries = read_config(path).get("traits")
    if not isinstance(entries, dict) or not entries:
        raise ConfigError(f"{path}: expected a mapping `traits:` of trait name -> list of sources")
    priorities = {}
    for trait, sources in entries.items():
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise ConfigError(f"{path}: traits.{trait}: expected a list of source names, highest priority first")
        priorities[str(trait)] = tuple(sources)
    return TraitRules(priorities)


def profile_traits(rules: TraitRules, sources: dict[str, SourceConfig]) -> list[str]:
    """The trait columns of a profile: those configured, then any other a source declares."""
    declared = [t for s in sources.values() for t in s.traits if t not in rules.priorities]
    return list(rules.priorities) + list(dict.fromkeys(declared))


def trait_observations(
    con: duckdb.DuckDBPyConnection, sources: dict[str, SourceConfig], rules: TraitRules, identity: IdentityRules
) -> pl.DataFrame:
    """Every non-empty trait value of every source, with the identifier it came with and its rank."""
    traits = profile_traits(rules, sources)
    selects = []
    if any(s.kind == "events" for s in sources.values()) and table_exists(con, "cdp.events"):
        for trait in traits:
            selects.append(
                "SELECT CASE WHEN user_id IS NOT NULL THEN 'user_id' ELSE 'anonymous_id' END, "
                f"coalesce(user_id, anonymous_id), {quote_literal(trait)}, "
                f"traits ->> {quote_literal('$.' + trait)}, 'events', {rules.rank(trait, EVENTS)}, occurred_at "
                "FROM cdp.events WHERE event_type = 'identify'"
            )
    for source in sources.values():
        if source.kind == "events" or not source.traits or not source.identifiers:
            continue
        if not table_exists(con, f"validated.{source.name}"):
            continue
        table = f"validated.{quote_ident(source.name)}"
        # The source's strongest identifier names the person the row is about.
        column = identity.strongest(source.identifiers)
        seen = quote_ident(source.time_column) if source.time_column else "received_at"
        for trait in source.traits:
            selects.append(
                f"SELECT {quote_literal(source.identifiers[column])}, {quote_ident(column)}::VARCHAR, "
                f"{quote_literal(trait)}, {quote_ident(trait)}::VARCHAR, {quote_literal(source.name)}, "
                f"{rules.rank(trait, source.name)}, {seen}::TIMESTAMP FROM {table}"
            )
    if not selects:
        return pl.DataFrame(schema=OBSERVATION_SCHEMA)
    columns = ", ".join(OBSERVATION_SCHEMA)
    frame = con.sql(
        f"SELECT * FROM ({' UNION ALL '.join(selects)}) AS o({columns}) WHERE trim(value) <> ''"
    ).pl()  # values stay as received: identifier_lookup knows their normalized form by the raw text
    return frame.filter(pl.col("value").is_not_null() & pl.col("raw_value").is_not_null()).cast(OBSERVATION_SCHEMA)

