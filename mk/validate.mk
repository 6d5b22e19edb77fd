# Validate stage (Great Expectations quality gate). See docs/data-quality.md.
VENV ?= .venv
PY ?= $(VENV)/bin/python

.PHONY: test-validate

test-validate: ## Validate-stage tests (GX gate, quarantine, reports, real market-history quirks)
	$(PY) -m pytest -q tests/unit/validate
