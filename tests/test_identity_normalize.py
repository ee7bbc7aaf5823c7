"""Identifier normalization (contract §4) and the identity rules file (contract §7) that is read with it."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdp_assets.config import ConfigError
from cdp_assets.identity import normalize
from cdp_assets.identity.normalize import normalize_identifier, normalize_identifiers
from cdp_assets.identity.rules import IdentifierRule, IdentityRules, load_identity_rules

_STRINGS = {"identifier_type": pl.String, "identifier_value": pl.String}

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("identifier_type", "raw", "expected"),
    [
        ("email", "  Ann@X.com ", "ann@x.com"),
        ("email", "ann@x.com", "ann@x.com"),
        ("email", "not an email", "not an email"),  # syntax is validation's job, not normalization's
        ("phone", "(415) 555-0100", "+14155550100"),
        ("phone", "+1 415 555 0100", "+14155550100"),
        ("phone", "+44 20 7946 0958", "+442079460958"),
        ("phone", "12", None),
        ("phone", "call me", None),
        ("user_id", "  U-1 ", "U-1"),
        ("anonymous_id", "Abc", "Abc"),
        ("crm_id", 42, "42"),
        ("device_id", "   ", None),
        ("user_id", "", None),
        ("email", None, None),
    ],
)
def test_normalize_identifier(identifier_type, raw, expected):
    assert normalize_identifier(identifier_type, raw) == expected


def test_phone_region_reads_numbers_without_country_code():
    assert normalize_identifier("phone", "030 1234567", region="DE") == "+49301234567"
    assert normalize_identifier("phone", "+1 415 555 0100", region="DE") == "+14155550100"


def test_frame_normalization_parses_each_distinct_phone_once(monkeypatch):
    calls = []
    parse = normalize._e164
    monkeypatch.setattr(normalize, "_e164", lambda raw, region: calls.append(raw) or parse(raw, region))
    frame = pl.DataFrame({
        "t": ["phone", "phone", "phone", "email", "user_id", "phone"],
        "v": ["415-555-0100", " 415-555-0100", "(415) 555 0100", " A@B.c ", " u ", None],
        "other": [1, 2, 3, 4, 5, 6],
    })
    out = normalize_identifiers(frame, "t", "v", "US")
    assert out["v"].to_list() == ["+14155550100"] * 3 + ["a@b.c", "u", None]
    assert out["other"].to_list() == [1, 2, 3, 4, 5, 6]
    assert sorted(calls) == ["(415) 555 0100", "415-555-0100"]


@given(st.lists(st.tuples(st.sampled_from(["email", "phone", "user_id"]), st.text(max_size=12)), max_size=10))
def test_frame_and_scalar_normalization_agree(rows):
    frame = pl.DataFrame(rows, schema={"t": pl.String, "v": pl.String}, orient="row")
    assert normalize_identifiers(frame, "t", "v")["v"].to_list() == [normalize_identifier(t, v) for t, v in rows]


# --- config/identity.yaml -------------------------------------------------------------------------------


def test_shipped_rules():
    rules = load_identity_rules(REPO / "config" / "identity.yaml")
    assert [r.type for r in rules.identifiers][:2] == ["user_id", "crm_id"]
    assert rules.identifiers[0] == IdentifierRule("user_id", 1)
    assert (rules.limit("email"), rules.limit("device_id")) == (5, None)
    assert (rules.priority("user_id"), rules.priority("anonymous_id")) == (0, 5)
    assert rules.priority("loyalty_id") == len(rules.identifiers)  # unknown types rank last
    assert {"null", "undefined", ""} <= rules.blocked_any
    assert rules.blocked_by_type["email"] == {"test@test.com", "noreply@example.com"}
    assert (rules.shared_identifier_threshold, rules.default_phone_region) == (10, "US")


def test_blocked_values_are_normalized_like_identifiers(tmp_path):
    path = tmp_path / "identity.yaml"
    path.write_text(
        "identifiers: [{type: email}, {type: phone}]\n"
        "blocked_values: {any: [' NULL ', 0], email: [' Test@Test.com'], phone: ['(415) 555-0100']}\n"
    )
    rules = load_identity_rules(path)
    assert rules.blocked_any == {"null", "0"}
    assert rules.blocked_by_type == {"email": {"test@test.com"}, "phone": {"+14155550100"}}
    assert rules.shared_identifier_threshold is None
    frame = pl.DataFrame({
        "identifier_type": ["email", "email", "phone", "user_id", "user_id"],
        "identifier_value": ["test@test.com", "ann@x.com", "+14155550100", "Null", None],
    })
    assert frame.select(rules.blocked()).to_series().to_list() == [True, False, True, True, False]


_LETTERS = st.sampled_from(list("nulNULkK0-é\u212a\u0130iIß"))  # with the Kelvin sign, dotted İ, ß


@given(
    words=st.frozensets(st.text(_LETTERS, max_size=5), max_size=4),
    values=st.lists(st.text(_LETTERS, max_size=5), max_size=30),
)
def test_a_value_is_blocked_for_every_type_exactly_when_its_lower_case_is_listed(words, values):
    """Blocked `any` values are looked up among their spellings in every case (no lower-casing of each
    value) when they are ASCII, and by lower-casing otherwise: both must agree with Python's `lower()`."""
    rules = IdentityRules(identifiers=(IdentifierRule("user_id"),), blocked_any=frozenset(w.lower() for w in words))
    frame = pl.DataFrame({"identifier_type": ["user_id"] * len(values), "identifier_value": values}, schema=_STRINGS)
    expected = [value.lower() in rules.blocked_any for value in values]
    assert frame.select(rules.blocked()).to_series().to_list() == expected


def test_blocked_words_with_too_many_spellings_are_compared_lower_cased():
    rules = IdentityRules(identifiers=(IdentifierRule("user_id"),), blocked_any=frozenset({"undefinedundefined"}))
    frame = pl.DataFrame({"identifier_type": ["user_id"] * 3, "identifier_value": ["UndefinedUNDEFINED", "undefined", "x"]})
    assert frame.select(rules.blocked()).to_series().to_list() == [True, False, False]


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("identifiers: [{type: user_id}]\nthreshold: 3", "unknown key(s) ['threshold']"),
        ("identifiers: [{type: user_id, max: 1}]", "identifiers[0]: unknown key(s) ['max']"),
        ("identifiers: [{type: user_id, limit: '1'}]", "identifiers[0].limit"),
        ("identifiers: [{type: user_id, limit: 1.5}]", "identifiers[0].limit"),
        ("identifiers: [{type: user_id, limit: 0}]", "identifiers[0].limit"),
        ("identifiers: [{type: user_id, limit: true}]", "identifiers[0].limit"),
        ("identifiers: [{type: user_id}, {type: user_id}]", "identifiers[1].type: 'user_id' is listed twice"),
        ("identifiers: [{limit: 1}]", "identifiers[0].type"),
        ("identifiers: []", "identifiers: expected a list"),
        ("blocked_values: {any: [x]}", "identifiers: expected a list"),
        ("identifiers: [{type: email}]\nblocked_values: {emial: [x]}", "blocked_values.emial"),
        ("identifiers: [{type: email}]\nblocked_values: {any: x}", "blocked_values.any: expected a list"),
        ("identifiers: [{type: phone}]\nblocked_values: {phone: [nope]}", "blocked_values.phone: 'nope'"),
        ("identifiers: [{type: phone}]\nshared_identifier_threshold: ten", "shared_identifier_threshold"),
        ("identifiers: [{type: phone}]\ndefault_phone_region: USA", "default_phone_region: 'USA'"),
        ("identifiers: [{type: phone}", "identity.yaml"),  # not YAML
    ],
)
def test_bad_rules_are_clear_errors_naming_file_and_field(tmp_path, text, names):
    path = tmp_path / "identity.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_identity_rules(path)
    assert str(path) in str(error.value) and names in str(error.value)


def test_missing_rules_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match="nowhere.yaml"):
        load_identity_rules(tmp_path / "nowhere.yaml")


_SPACES = "\t\n\x0b\x0c\r \x1c\x1f\x85\xa0\u1680\u2000\u200a\u200b\u2028\u202f\u3000"


@given(st.lists(st.tuples(st.sampled_from(["email", "phone", "user_id", "anonymous_id"]),
                          st.text(alphabet=st.characters() | st.sampled_from(_SPACES + "İΣςAZ@.+0123456789"), max_size=14)),
                max_size=10))
def test_plain_python_normalization_agrees_with_the_frame(rows):
    """The Profile API's look-ups (normalize_value) give what identity stored (normalize_identifiers): every kind
    of white space, case rules (final sigma, dotted I) and phone spellings included."""
    frame = pl.DataFrame(rows, schema={"t": pl.String, "v": pl.String}, orient="row")
    assert normalize_identifiers(frame, "t", "v")["v"].to_list() == [normalize.normalize_value(t, v) for t, v in rows]
