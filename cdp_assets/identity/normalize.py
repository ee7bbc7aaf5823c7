"""Identifier normalization (contract §4): the one place that decides when two raw values are one identifier.

Every value is trimmed and an empty result is no identifier at all. Emails are lower-cased; phones become
E.164 (read in a default region when they carry no country code) or nothing when they cannot be a phone
number; every other type (user_id, anonymous_id, crm_id, device_id, ...) is kept as given.
"""

from __future__ import annotations

import phonenumbers
import polars as pl


def normalize_identifiers(frame: pl.DataFrame, type_col: str, value_col: str, region: str = "US") -> pl.DataFrame:
    """`frame` with `value_col` normalized for the type in `type_col` (None where it normalizes to nothing).

    Phones are parsed once per distinct raw value: parsing is the only step that is not a polars expression.
    """
    trimmed = pl.col(value_col).cast(pl.String).str.strip_chars()
    kind = pl.col(type_col)
    raw_phones = frame.filter(kind == "phone").select(trimmed).unique().to_series().drop_nulls().to_list()
    phones = [_e164(raw, region) for raw in raw_phones]
    value = (
        pl.when(kind == "email").then(trimmed.str.to_lowercase())
        .when(kind == "phone").then(trimmed.replace_strict(raw_phones, phones, default=None, return_dtype=pl.String))
        .otherwise(trimmed)
    )
    return frame.with_columns(pl.when(value != "").then(value).alias(value_col))


def normalize_identifier(identifier_type: str, value: object, region: str = "US") -> str | None:
    """One value normalized exactly as `normalize_identifiers` does it (for look-ups by a user-typed value)."""
    frame = pl.DataFrame({"type": [identifier_type], "value": [None if value is None else str(value)]})
    return normalize_identifiers(frame, "type", "value", region)["value"][0]


# What polars' `str.strip_chars()` strips: Unicode White_Space (Python's `str.strip()` also strips U+001C-U+001F).
_WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"


def normalize_value(identifier_type: str, value: object, region: str = "US") -> str | None:
    """`normalize_identifiers`' rule for one value in plain Python, for look-ups on a request's hot path (a
    frame costs milliseconds); tests/test_identity_normalize.py holds the two to the same answers."""
    if value is None:
        return None
    trimmed = str(value).strip(_WHITESPACE)
    if identifier_type == "email":
        trimmed = trimmed.lower()
    elif identifier_type == "phone":
        trimmed = _e164(trimmed, region) if trimmed else None
    return trimmed or None


def _e164(raw: str, region: str) -> str | None:
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
