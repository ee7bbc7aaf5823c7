"""Headless Chromium for tests: Debian's `chromium` driven by playwright-core (tests/browser/drive.mjs).

`make test` installs both (Makefile target `browser`). Where they are missing a browser test is skipped
saying why, except in CI (`CI=true`), where that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

BROWSER_DIR = Path(__file__).resolve().parent / "browser"


def require_browser() -> None:
    """Skip (fail in CI) unless chromium, node and the npm packages are installed."""
    missing = [
        what for what, present in (
            ("chromium (apt-get install chromium)", shutil.which("chromium") or os.environ.get("CHROMIUM")),
            ("node", shutil.which("node")),
            ("tests/browser/node_modules (make browser)", (BROWSER_DIR / "node_modules" / "playwright-core").is_dir()),
        ) if not present
    ]
    if missing:
        message = "browser test needs " + ", ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def drive(url: str, steps: list[dict], timeout_s: float = 30, credentials: tuple[str, str] | None = None) -> dict:
    """Open `url` in headless chromium, run `steps` (see drive.mjs); the values read, console and failures.
    `credentials` (user, password) answer an HTTP Basic challenge."""
    require_browser()
    spec = {"url": url, "steps": steps, "timeout_ms": int(timeout_s * 1000)}
    if credentials:
        spec["http_credentials"] = {"username": credentials[0], "password": credentials[1]}
    done = subprocess.run(
        ["node", str(BROWSER_DIR / "drive.mjs")], input=json.dumps(spec), capture_output=True, text=True,
        cwd=BROWSER_DIR, timeout=timeout_s + 30,
    )
    if done.returncode != 0 or not done.stdout:
        raise AssertionError(f"drive.mjs failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def sdk_file(relative: str) -> Path:
    """A file of an npm package installed for the browser tests (e.g. a browser SDK's bundle)."""
    path = BROWSER_DIR / "node_modules" / relative
    if not path.exists():
        require_browser()
        raise AssertionError(f"{path} is missing: the npm package layout changed")
    return path
