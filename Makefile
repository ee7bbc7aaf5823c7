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

.PHONY: demo test dev install manifest clean

install: $(INSTALLED) $(MANIFEST)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

# The dbt manifest is built here, once, not on every code-location load.
$(MANIFEST): $(INSTALLED) $(DBT_SOURCES)
	$(BIN)/dagster-dbt project prepare-and-package --file cdp_assets/dbt/project.py
	touch $@

demo: install
	$(BIN)/cdp demo

test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

dev: install
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000

clean:
	rm -rf $(VENV) dbt/target
	find .dagster -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +
