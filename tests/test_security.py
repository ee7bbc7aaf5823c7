"""Security basics: servers listen on loopback unless told otherwise, secrets come only from the
environment, and nothing in the repository looks like one."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from cdp_assets import cli
from cdp_resources.collector import server

REPO = Path(__file__).resolve().parents[1]
# A URL carrying a password, a Standard Webhooks secret, a private key, an AWS access key id.
SECRET = re.compile(
    r"[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:[^@\s/'\"]+@|whsec_[A-Za-z0-9+/=]{16,}|-----BEGIN [A-Z ]*PRIVATE KEY-----|AKIA[0-9A-Z]{16}"
)


def test_the_collector_listens_on_loopback_by_default(monkeypatch):
    bound = []
    monkeypatch.setattr(server.uvicorn, "run", lambda app, host, port, **_: bound.append((host, port)))
    server.main([])  # python -m cdp_resources.collector.server
    monkeypatch.setattr("cdp_resources.collector.serve", lambda host, port: bound.append((host, port)))
    assert cli.main(["collect"]) == 0  # cdp collect
    assert bound == [("127.0.0.1", 8088), ("127.0.0.1", 8088)]


def test_make_dev_binds_the_dagster_webserver_to_loopback():
    """The webserver has no authentication: `make dev` must not listen on other interfaces."""
    commands = subprocess.run(["make", "-n", "dev"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    [dev] = [line for line in commands.splitlines() if "dagster dev" in line]
    assert re.search(r"(-h|--host) 127\.0\.0\.1\b", dev), dev


def _settings(node, path=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _settings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _settings(value, f"{path}[{index}]")
    else:
        yield path, node


def test_configuration_names_secrets_by_environment_variable():
    """Every `*_env` setting names a variable (upper case) rather than holding a value, and no setting
    holds a password, key or signing secret."""
    found = 0
    for path in sorted((REPO / "config").rglob("*.yaml")):
        for key, value in _settings(yaml.safe_load(path.read_text()) or {}):
            if key.endswith("_env"):
                found += 1
                assert re.fullmatch(r"[A-Z][A-Z0-9_]*", str(value)), f"{path}: {key}: {value!r} is not a variable name"
            assert not SECRET.search(str(value)), f"{path}: {key} looks like a secret"
    assert found >= 4  # destinations' url/secret/dsn, the PII salt, the orders API


def test_no_tracked_file_holds_a_secret():
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: the tracked files are unknown")
    offenders = []
    for name in listed.stdout.decode().split("\0"):
        path = REPO / name
        if not name or not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        text = path.read_bytes().decode("utf-8", errors="ignore")
        offenders += [f"{name}: {match.group(0)[:40]}" for match in SECRET.finditer(text)]
    assert offenders == []
