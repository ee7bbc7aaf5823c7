"""Personal data per field: keep, hash with a salt from the environment, or drop."""

from __future__ import annotations

import hashlib
import json

import polars as pl
import pytest

from cdp_assets.config import ConfigError
from cdp_assets.events.pii import PiiRules, load_pii_rules, protect_columns, protect_events

EVENTS = pl.DataFrame({
    "event_id": ["e1", "e2"],
    "context": [json.dumps({"ip": "203.0.113.7", "device": {"id": "d1", "model": "x"}}), json.dumps({"locale": "fr"})],
    "traits": [json.dumps({"email": "a@x.io"}), None],
})


def test_events_paths_are_dropped_or_hashed_and_the_rest_kept(monkeypatch):
    monkeypatch.setenv("CDP_PII_SALT", "s3cret")
    rules = PiiRules(events={"context.ip": "drop", "context.device.id": "hash", "traits.email": "keep"})
    out = protect_events(EVENTS, rules)
    first, second = (json.loads(c) for c in out["context"])
    assert "ip" not in first and first["device"]["model"] == "x"
    assert first["device"]["id"] == hashlib.sha256(b"s3cretd1").hexdigest()
    assert second == {"locale": "fr"}  # absent fields stay absent
    assert out["traits"].to_list() == EVENTS["traits"].to_list() and out.schema == EVENTS.schema


def test_columns_are_hashed_with_the_salt_or_dropped(monkeypatch):
    monkeypatch.setenv("CDP_PII_SALT", "pepper")
    frame = pl.DataFrame({"id": ["1", "2"], "gender": ["f", None], "city": ["Oslo", "Rome"]})
    out = protect_columns(frame, "crm", PiiRules(sources={"crm": {"gender": "hash", "city": "drop", "id": "keep"}}))
    assert out["gender"].to_list() == [hashlib.sha256(b"pepperf").hexdigest(), None]
    assert out["city"].to_list() == [None, None] and out["id"].to_list() == ["1", "2"]


def test_hashing_without_a_salt_names_the_variable(monkeypatch):
    monkeypatch.delenv("CDP_PII_SALT", raising=False)
    with pytest.raises(ConfigError, match="CDP_PII_SALT is not set"):
        protect_events(EVENTS, PiiRules(events={"context.ip": "hash"}))


def test_bad_configuration_names_the_field(tmp_path):
    path = tmp_path / "pii.yaml"
    path.write_text("events:\n  context.ip: scramble\n")
    with pytest.raises(ConfigError, match="events.context.ip: 'scramble'"):
        load_pii_rules(path)
    path.write_text("events:\n  ip: drop\n")
    with pytest.raises(ConfigError, match="events.ip: expected"):
        load_pii_rules(path)
