# Crypto market-data pipeline: Airflow 3 on Kubernetes. `make help` lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.9.30
VENV := .venv
PY := $(VENV)/bin/python
TOOLS := .tools
UV := $(TOOLS)/uv-venv/bin/uv
# Tests use pytest-xdist on every core unless told otherwise (PYTEST_WORKERS=0 runs serially).
PYTEST_WORKERS ?= auto
export PATH := $(abspath $(TOOLS)/bin):$(abspath $(TOOLS)/uv-venv/bin):$(abspath $(VENV)/bin):$(PATH)

.PHONY: help setup lint format test test-fast demo lock clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort -u | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv $(TOOLS)/uv-venv
	$(TOOLS)/uv-venv/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: requirements/dev.lock pyproject.toml | $(UV)
	$(UV) venv --quiet --allow-existing $(VENV) --python $(PYTHON)
	$(UV) pip install --quiet --python $(PY) -r requirements/dev.lock
	touch $@

setup: $(VENV)/.installed ## Create .venv from the locked requirements (Python 3.11, uv)

lint: setup ## ruff lint + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup ## ruff fix + format
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: setup tools lint ## Lint and the whole test suite (unit, DAG, end-to-end, faults subset, deploy, Terraform)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile -q -m "not full_matrix"

test-fast: setup ## Unit tests only (no Airflow, no deploy tools)
	$(PY) -m pytest -q tests/unit -m "not e2e"

demo: setup ## Run the pipeline end to end offline: replay server, backfill, a few hourly intervals, summary
	$(PY) -m cryptopipe.demo

lock: | $(UV) ## Re-resolve requirements/dev.lock from requirements/dev.in
	$(UV) pip compile requirements/dev.in -o requirements/dev.lock --python-version 3.11

clean: ## Remove the demo data and caches (keeps .venv and .tools)
	rm -rf data .pytest_cache .ruff_cache .hypothesis

-include mk/*.mk

# The pinned tools are installed with the dev venv's Python and uv.
tools: setup
