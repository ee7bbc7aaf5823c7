"""What dbt models read from the platform's configuration, passed as dbt vars on every build.

dbt cannot read the YAML files under config/ itself, so the Dagster asset passes them (checked by the
Python loaders first, so a mistake names the file and the field). `dbt/dbt_project.yml` holds the same
values for the shipped configuration, so a plain `dbt build` works too; a test keeps the two equal.
"""

from __future__ import annotations

from cdp_assets.config import SourceConfig, load_sources
from cdp_assets.identity.rules import load_identity_rules
from cdp_assets.profiles.computed import load_computed_traits
from cdp_assets.profiles.traits import load_trait_rules, profile_traits
from cdp_resources.settings import clock, config_dir, fixed_clock


def source_vars(sources: dict[str, SourceConfig]) -> dict:
    """Each source as the SQL layer needs it: kind, declared columns and what they mean."""
    return {
        name: {
            "kind": s.kind,
            "partitions": s.partitions,
            **({"primary_key": s.primary_key} if s.primary_key else {}),
            **({"time_column": s.time_column} if s.time_column else {}),
            **({"columns": dict(s.columns)} if s.columns else {}),
            **({"identifiers": dict(s.identifiers)} if s.identifiers else {}),
            **({"traits": list(s.traits)} if s.traits else {}),
            **({"relationships": dict(s.relationships)} if s.relationships else {}),
            **({"purchases": dict(s.purchases)} if s.purchases else {}),
            **({"mapping": dict(s.mapping)} if s.mapping else {}),
        }
        for name, s in sources.items()
    }


def dbt_vars() -> dict:
    """Every var the models read, from the user's configuration."""
    directory = config_dir()
    sources = load_sources()
    identity = load_identity_rules(directory / "identity.yaml")
    trait_rules = load_trait_rules(directory / "traits.yaml")
    return {
        "sources": source_vars(sources),
        "identifier_types": [rule.type for rule in identity.identifiers],
        "identity_rules": identity.fingerprint(),
        "trait_sources": {trait: list(order) for trait, order in trait_rules.priorities.items()},
        "profile_traits": profile_traits(trait_rules, sources),
        **load_computed_traits(directory / "traits.yaml"),
        # the models' clock (macro utc_now) when the run's is fixed (CDP_NOW); else the database's
        **({"now": clock().isoformat(sep=" ")} if fixed_clock() else {}),
    }
