"""Personal data per field (config/pii.yaml): keep, hash with a salt from the environment, or drop.

Applied to accepted rows before they are written to cdp.events and validated.<source>, so nothing
downstream (identity, profiles, segments, destinations) ever sees a dropped or unhashed field.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from cdp_assets.config import ConfigError, read_config
from cdp_resources.warehouse import quote_ident, quote_literal

ACTIONS = ("keep", "hash", "drop")
EVENT_COLUMNS = ("properties", "traits", "context")


@dataclass(frozen=True)
class PiiRules:
    salt_env: str = "CDP_PII_SALT"
    events: dict[str, str] = field(default_factory=dict)  # "context.ip" -> action
    sources: dict[str, dict[str, str]] = field(default_factory=dict)  # source -> column -> action

    def salt(self) -> str:
        value = os.environ.get(self.salt_env, "")
        if not value:
            raise ConfigError(f"config/pii.yaml hashes fields but {self.salt_env} is not set: export a secret salt")
        return value


def load_pii_rules(path: Path) -> PiiRules:
    if not path.exists():
        return PiiRules()
    document = read_config(path)
    events = document.get("events") or {}
    sources = {name: dict(columns or {}) for name, columns in (document.get("sources") or {}).items()}
    for where, action in [(f"events.{k}", v) for k, v in events.items()] + [
        (f"sources.{s}.{c}", v) for s, cols in sources.items() for c, v in cols.items()
    ]:
        if action not in ACTIONS:
            raise ConfigError(f"{path}: {where}: {action!r} is not one of {list(ACTIONS)}")
    for path_ in events:
        if path_.split(".")[0] not in EVENT_COLUMNS or "." not in path_:
            raise ConfigError(f"{path}: events.{path_}: expected <{'|'.join(EVENT_COLUMNS)}>.<key>[.<key>...]")
    return PiiRules(document.get("salt_env", "CDP_PII_SALT"), dict(events), sources)


def protect_events(frame: pl.DataFrame, rules: PiiRules) -> pl.DataFrame:
    """Event rows with each configured JSON path hashed or removed (JSON merge patch: null removes)."""
    actions = {p: a for p, a in rules.events.items() if a != "keep"}
    if not actions or frame.is_empty():
        return frame
    salt = rules.salt() if "hash" in actions.values() else ""
    replaced = {}
    for path, action in actions.items():
        column, *keys = path.split(".")
        current = replaced.get(column, quote_ident(column) + "::JSON")
        value = "NULL" if action == "drop" else (
            f"sha256({quote_literal(salt)} || ({quote_ident(column)}::JSON ->> {quote_literal('$.' + '.'.join(keys))}))"
        )
        patch = value
        for key in reversed(keys):
            patch = f"json_object({quote_literal(key)}, {patch})"
        present = f"json_exists({quote_ident(column)}::JSON, {quote_literal('$.' + '.'.join(keys))})"
        replaced[column] = f"CASE WHEN {present} THEN json_merge_patch({current}, {patch}) ELSE {current} END"
    select = ", ".join(f"{expr}::VARCHAR AS {quote_ident(col)}" for col, expr in replaced.items())
    protected = duckdb.sql(f"SELECT * REPLACE ({select}) FROM frame").pl()
    return protected.cast(frame.schema)


def protect_columns(frame: pl.DataFrame, source: str, rules: PiiRules) -> pl.DataFrame:
    """A table source's rows with each configured column hashed or set to null."""
    actions = {c: a for c, a in rules.sources.get(source, {}).items() if a != "keep" and c in frame.columns}
    if not actions:
        return frame
    salt = rules.salt() if "hash" in actions.values() else ""
    return frame.with_columns(
        pl.lit(None, dtype=frame.schema[column]).alias(column) if action == "drop"
        else pl.concat_str(pl.lit(salt), pl.col(column).cast(pl.String)).map_batches(_sha256, return_dtype=pl.String).alias(column)
        for column, action in actions.items()
    )


def _sha256(values: pl.Series) -> pl.Series:
    return pl.Series([None if v is None else hashlib.sha256(v.encode()).hexdigest() for v in values], dtype=pl.String)
