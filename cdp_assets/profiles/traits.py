"""Trait survivorship rules: which source wins for each profile trait (`config/traits.yaml` `traits:`).

Every source reaches profiles through one table, core.trait_observations (dbt: a table source's `traits:`
columns in config/sources.yaml and the identify calls of events sources), ranked by these rules; dbt's
`person_trait_values` keeps, per person and trait, the highest-ranked source's most recent value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cdp_assets.config import ConfigError, SourceConfig, read_config

EVENTS = "events"  # the pseudo-source name of identify calls in config/traits.yaml


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
    reported = [t for s in sources.values() for t in [*s.traits, *(s.mapping.get("traits") or {})]]  # webhooks map theirs
    declared = [t for t in reported if t not in rules.priorities]
    return list(rules.priorities) + list(dict.fromkeys(declared))
