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

.PHONY: demo test dev install manifest browser clean java

install: $(INSTALLED) $(MANIFEST)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,spark]"
	@$(MAKE) --no-print-directory java
	touch $@

# Spark (CDP_ENGINE=spark, the Spark tests) runs on Java 17; say what is missing rather than fail later.
java:
	@v=$$(java -version 2>&1 | sed -n 's/.* version "\([0-9]*\).*/\1/p' | head -1); \
	if [ -z "$$v" ]; then echo "Java is not installed: Spark (CDP_ENGINE=spark, tests marked spark) needs Java 17 (apt-get install openjdk-17-jre-headless); the DuckDB engine works without it"; \
	elif [ "$$v" -lt 17 ]; then echo "Java $$v found: Spark 4 needs Java 17 or newer (apt-get install openjdk-17-jre-headless)"; \
	else echo "Java $$v: Spark engine available"; fi

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

# Whole modules per worker (their fixtures build a shop once), in the order tests/conftest.py gives (the Spark
# modules, the longest, first), not xdist's default of the modules with most tests first.
test: install browser
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

dev: install
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000

clean:
	rm -rf $(VENV) dbt/target tests/browser/node_modules
	find .dagster -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +
