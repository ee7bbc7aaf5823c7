"""The identity rules of `config/identity.yaml` (contract §7), checked once when they are loaded.

A wrong rule would silently change who is who, so every mistake (unknown key, a limit that is not a
positive integer, a blocked phone that is no phone, ...) is a `ConfigError` naming the file and the field.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import phonenumbers
import polars as pl

from cdp_assets.config import ConfigError, read_config
from cdp_assets.identity.normalize import normalize_identifier

_TOP_LEVEL = {"identifiers", "blocked_values", "shared_identifier_threshold", "default_phone_region"}
_IDENTIFIER_KEYS = {"type", "limit"}


@dataclass(frozen=True)
class IdentifierRule:
    type: str
    limit: int | None = None  # at most this many identifiers of the type per person; None: no limit


@dataclass(frozen=True)
class IdentityRules:
    """Identifier types (highest priority first), blocked values and the shared-identifier threshold.

    Blocked values are stored normalized: `blocked_any` lower-cased (junk such as "NULL" or "Undefined"
    is blocked whatever its case, for every type), `blocked_by_type` normalized as values of that type.
    `shared_identifier_threshold` None turns shared-identifier detection off.
    """

    identifiers: tuple[IdentifierRule, ...]
    blocked_any: frozenset[str] = frozenset()
    blocked_by_type: Mapping[str, frozenset[str]] = field(default_factory=dict)
    shared_identifier_threshold: int | None = None
    default_phone_region: str = "US"

    def priority(self, identifier_type: str) -> int:
        """0 for the highest-priority type; types the rules do not name rank after every named one."""
        for rank, rule in enumerate(self.identifiers):
            if rule.type == identifier_type:
                return rank
        return len(self.identifiers)

    def strongest(self, identifiers: Mapping[str, str]) -> str:
        """Of a source's identifier columns (column -> type), the one naming whom a row is about."""
        return min(identifiers, key=lambda column: self.priority(identifiers[column]))

    def limit(self, identifier_type: str) -> int | None:
        return next((rule.limit for rule in self.identifiers if rule.type == identifier_type), None)

    def fingerprint(self) -> str:
        """A digest of the rules: an incremental resolution is valid only under the rules of the last one."""
        document = {
            "identifiers": [[rule.type, rule.limit] for rule in self.identifiers],
            "blocked_any": sorted(self.blocked_any),
            "blocked_by_type": {t: sorted(values) for t, values in sorted(self.blocked_by_type.items())},
            "shared_identifier_threshold": self.shared_identifier_threshold,
            "default_phone_region": self.default_phone_region,
        }
        return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]

    def blocked(self, type_col: str = "identifier_type", value_col: str = "identifier_value") -> pl.Expr:
        """True where a normalized identifier is blocked (never links, gets no person); False elsewhere.

        Filter blocked values out before pairing a record's identifiers, or a blocked value chosen as the
        record's anchor would leave the others unlinked."""
        value = pl.col(value_col)
        spellings = _spellings(self.blocked_any)
        if spellings is not None:  # one lookup per value; lower-casing every value costs 6x as much
            blocked = value.is_in(spellings)
        else:
            blocked = value.str.to_lowercase().is_in(sorted(self.blocked_any))
        for type_, values in self.blocked_by_type.items():
            blocked = blocked | ((pl.col(type_col) == type_) & value.is_in(sorted(values)))
        return blocked.fill_null(False)


_KELVIN = "\u212a"  # the Kelvin sign: the one character outside ASCII that lower-cases into ASCII ("k")
_MOST_SPELLINGS = 20_000


def _spellings(words: frozenset[str]) -> list[str] | None:
    """Every string that lower-cases to one of the ASCII `words`: each letter in either case (and "k" also
    as the Kelvin sign). None when a word is not ASCII or they would be more than `_MOST_SPELLINGS`."""
    if not all(word.isascii() for word in words):
        return None
    spelled: set[str] = set()
    for word in words:
        forms = [""]
        for char in word:
            cases = {char, char.upper()} | ({_KELVIN} if char == "k" else set())
            forms = [form + case for form in forms for case in cases]
            if len(spelled) + len(forms) > _MOST_SPELLINGS:
                return None
        spelled.update(forms)
    return sorted(spelled)


def load_identity_rules(path: Path) -> IdentityRules:
    document = read_config(path)
    _no_unknown_keys(document, _TOP_LEVEL, f"{path}")
    identifiers = _identifier_rules(document.get("identifiers"), path)
    region = _phone_region(document.get("default_phone_region", "US"), path)
    blocked = _blocked_values(document.get("blocked_values") or {}, {r.type for r in identifiers}, region, path)
    return IdentityRules(
        identifiers=identifiers,
        blocked_any=blocked.pop("any", frozenset()),
        blocked_by_type=blocked,
        shared_identifier_threshold=_threshold(document.get("shared_identifier_threshold"), path),
        default_phone_region=region,
    )


def _identifier_rules(entries: object, path: Path) -> tuple[IdentifierRule, ...]:
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: identifiers: expected a list of {{type, limit}}, highest priority first")
    rules: list[IdentifierRule] = []
    for index, entry in enumerate(entries):
        where = f"{path}: identifiers[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a mapping {{type, limit}}, got {entry!r}")
        _no_unknown_keys(entry, _IDENTIFIER_KEYS, where)
        type_ = entry.get("type")
        if not isinstance(type_, str) or not type_.strip():
            raise ConfigError(f"{where}.type: expected a non-empty string, got {type_!r}")
        if any(rule.type == type_ for rule in rules):
            raise ConfigError(f"{where}.type: {type_!r} is listed twice")
        limit = entry.get("limit")
        if limit is not None and not _positive_int(limit):
            raise ConfigError(f"{where}.limit: expected a positive integer, got {limit!r}")
        rules.append(IdentifierRule(type_, limit))
    return tuple(rules)


def _blocked_values(entries: object, types: set[str], region: str, path: Path) -> dict[str, frozenset[str]]:
    if not isinstance(entries, dict):
        raise ConfigError(f"{path}: blocked_values: expected a mapping of `any` or an identifier type to a list")
    blocked = {}
    for key, values in entries.items():
        where = f"{path}: blocked_values.{key}"
        if key != "any" and key not in types:
            raise ConfigError(f"{where}: {key!r} is neither `any` nor a type listed in identifiers")
        if not isinstance(values, list) or not all(type(v) in (str, int) for v in values):
            raise ConfigError(f"{where}: expected a list of strings, got {values!r}")
        blocked[key] = frozenset(_blocked_value(key, str(value), region, where) for value in values)
    return blocked


def _blocked_value(key: str, value: str, region: str, where: str) -> str:
    if key == "any":
        return value.strip().lower()
    normalized = normalize_identifier(key, value, region)
    if normalized is None:
        raise ConfigError(f"{where}: {value!r} is not a valid {key} (it could never match an identifier)")
    return normalized


def _threshold(value: object, path: Path) -> int | None:
    if value is not None and not _positive_int(value):
        raise ConfigError(f"{path}: shared_identifier_threshold: expected a positive integer, got {value!r}")
    return value


def _phone_region(value: object, path: Path) -> str:
    if value not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(f"{path}: default_phone_region: {value!r} is not a region code such as US, GB or DE")
    return value


def _no_unknown_keys(entry: dict, known: set[str], where: str) -> None:
    unknown = set(entry) - known
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)} (expected {sorted(known)})")


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
