"""Suppressed identifiers: salted hashes of everything an erased person was known by.

Records are matched by value, whatever field holds it: every string in a record (an event, a CDC envelope,
a CSV row, an API order) is normalized as an email, a phone and a plain identifier, hashed with the salt,
and looked up. So no source needs its own rules, and the list itself holds no personal data.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote, quote_plus

from cdp_assets.identity.normalize import normalize_identifier

SALT_ENV = "CDP_PII_SALT"
_PHONE_LIKE = re.compile(r"^\+?[\d\s().-]{7,20}$")
SUPPRESSIONS_DDL = """CREATE TABLE IF NOT EXISTS cdp.suppressions (
    identifier_type VARCHAR, identifier_hash VARCHAR, requested_at TIMESTAMP, PRIMARY KEY (identifier_type, identifier_hash))"""


def privacy_salt(data_dir: Path) -> str:
    """The salt from the environment, else one generated once for this instance (kept beside the data,
    mode 0600), so hashes stay comparable across runs."""
    if os.environ.get(SALT_ENV):
        return os.environ[SALT_ENV]
    path = data_dir / "privacy" / "salt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip()


def identifier_hash(salt: str, value: str) -> str:
    return hashlib.sha256(f"{salt}{value}".encode()).hexdigest()


@lru_cache(maxsize=200_000)
def candidate_values(text: str, region: str = "US") -> frozenset[str]:
    """The normalized forms a string could be as an identifier."""
    value = text.strip()
    if not value:
        return frozenset()
    forms = {value}
    if "@" in value:
        forms.add(value.lower())
    if _PHONE_LIKE.match(value):
        phone = normalize_identifier("phone", value, region)
        if phone:
            forms.add(phone)
    return frozenset(forms)


def json_strings(node) -> Iterable[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from json_strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from json_strings(value)


ERASED = "[erased]"  # what an erased identifier mentioned inside a longer string becomes
MIN_MENTION = 6  # shorter spellings are erased as whole values only: "42" inside "order 42" is not theirs
# A mention is the spelling not glued to more of an identifier: `joann@x.com` and `u_10` do not mention
# `ann@x.com` and `u_1`; `?email=ann@x.com`, `ann%40x.com` after `%3D`, `"ann@x.com."` do.
_BEFORE = r"(?:(?<=%[0-9A-Fa-f]{2})|(?<![A-Za-z0-9_.+%-]))"
_AFTER = r"(?![A-Za-z0-9_]|[.-][A-Za-z0-9])"


class KnownValues:
    """Identifiers known in clear while an erasure runs (every spelling seen, and person ids): a record
    holding one as a value is theirs; one mentioned inside a longer string (a page URL, a search term, a
    note) is scrubbed from it (`scrub`)."""

    def __init__(self, values: Iterable[str]):
        self.values = frozenset(v.strip().lower() for v in values if v and v.strip())
        mentioned = {v for v in self.values if len(v) >= MIN_MENTION}
        mentioned |= {quote(v, safe="").lower() for v in mentioned} | {quote_plus(v).lower() for v in mentioned}
        self.mentioned = sorted(mentioned, key=len, reverse=True)  # longest first: one alternation, greedy
        self._mention = re.compile(
            _BEFORE + "(?:" + "|".join(map(re.escape, self.mentioned)) + ")" + _AFTER, re.IGNORECASE
        ) if self.mentioned else None
        self._needles = [v.encode() for v in self.mentioned]

    def __bool__(self) -> bool:
        return bool(self.values)

    def matches_values(self, values: Iterable[str]) -> bool:
        return any(isinstance(v, str) and v.strip().lower() in self.values for v in values)

    def matches_record(self, text: str) -> bool:
        try:
            return self.matches_values(json_strings(json.loads(text)))
        except ValueError:
            return self.matches_values(re.split(r'[\s,;"{}\[\]:]+', text))

    def may_hold(self, text: str) -> bool:
        """False when `text` certainly holds none of the values (a cheap test before parsing a file); a
        JSON escape (`\\u0040`) could hide one, so text with escapes may."""
        lowered = text.lower()
        return "\\u" in text or any(v in lowered for v in self.values) or any(v in lowered for v in self.mentioned)

    def mentions(self, text: str) -> bool:
        return self._mention is not None and self._mention.search(text) is not None

    def scrub(self, text: str) -> str:
        """`text` with every mention replaced by ERASED."""
        return self._mention.sub(ERASED, text) if self._mention is not None else text

    def scrub_strings(self, node):
        """A parsed JSON value with every string scrubbed (keys too)."""
        if isinstance(node, str):
            return self.scrub(node)
        if isinstance(node, dict):
            return {self.scrub(k): self.scrub_strings(v) for k, v in node.items()}
        if isinstance(node, list):
            return [self.scrub_strings(v) for v in node]
        return node

    def in_bytes(self, data: bytes) -> bool:
        """Any spelling anywhere in bytes we cannot parse (case-insensitive for ASCII, no boundaries)."""
        lowered = data.lower()
        return any(needle in lowered for needle in self._needles) or any(
            v.encode() in lowered for v in self.values if len(v) >= MIN_MENTION)


class Suppressions:
    """Membership test for records against the hashed identifiers of erased persons."""

    def __init__(self, salt: str, hashes: Iterable[str], region: str = "US"):
        self.salt, self.hashes, self.region = salt, frozenset(hashes), region

    def __bool__(self) -> bool:
        return bool(self.hashes)

    def matches_values(self, values: Iterable[str]) -> bool:
        return any(
            identifier_hash(self.salt, form) in self.hashes for value in values for form in candidate_values(value, self.region)
        )

    def matches_record(self, text: str) -> bool:
        """True when a raw record (JSON text) carries a suppressed identifier anywhere."""
        if not self.hashes:
            return False
        try:
            return self.matches_values(json_strings(json.loads(text)))
        except ValueError:  # not JSON: look at its tokens
            return self.matches_values(re.split(r'[\s,;"{}\[\]:]+', text))


def load_suppressions(con, salt: str, region: str = "US") -> Suppressions:
    from cdp_resources.warehouse import table_exists

    if not table_exists(con, "cdp.suppressions"):
        return Suppressions(salt, ())
    return Suppressions(salt, [r[0] for r in con.execute("SELECT identifier_hash FROM cdp.suppressions").fetchall()], region)
