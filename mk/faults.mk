# Fault matrix and concurrency safety (issue 8). See docs/guarantees.md.
VENV ?= .venv
PY ?= $(VENV)/bin/python

.PHONY: test-faults test-faults-full

test-faults: ## Fault matrix, fast subset (one scenario per failure class + concurrency races; servers started by the tests)
	$(PY) -m pytest -q tests/faults -m "not full_matrix"

test-faults-full: ## Fault matrix, every scenario end to end (long: see docs/guarantees.md for the time)
	$(PY) -m pytest -q tests/faults
