# Set-up and everyday commands. Every target installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
MANIFEST := dbt/target/manifest.json
DBT_SOURCES := $(shell find dbt/models dbt/macros dbt/snapshots dbt/tests -type f 2>/dev/null) dbt/dbt_project.yml dbt/profiles.yml
export DAGSTER_HOME ?= $(CURDIR)/.dagster
# dbt and dagster from the project virtualenv, whatever the caller's PATH.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: demo test dev install manifest browser clean

install: $(INSTALLED) $(MANIFEST)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

# The dbt manifest and parse cache are built here, once, not on every code-location load; with the vars the
# platform passes, which come from config/ (cdp_assets/dbt/project.py), so a changed configuration rebuilds them.
$(MANIFEST): $(INSTALLED) $(DBT_SOURCES) $(wildcard config/*.yaml)
	$(BIN)/dagster-dbt project prepare-and-package --file cdp_assets/dbt/project.py
	touch $@

demo: install
	$(BIN)/cdp demo

# The browser tests' parts: Debian's chromium (installed when missing and we may) and the npm packages
# (playwright-core, the browser SDKs) pinned in tests/browser/package-lock.json.
BROWSER_MODULES := tests/browser/node_modules/.installed

browser: $(BROWSER_MODULES)
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get install -y -q chromium >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)); } || echo "chromium is not installed (apt-get install chromium): browser tests will be skipped"

$(BROWSER_MODULES): tests/browser/package.json tests/browser/package-lock.json
	npm ci --prefix tests/browser --no-audit --no-fund --silent
	touch $@

test: install browser
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

dev: install
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000

clean:
	rm -rf $(VENV) dbt/target tests/browser/node_modules
	find .dagster -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +
