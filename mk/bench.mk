# Benchmarks (issue 7): bench/run.py writes bench/results/*.json and bench/RESULTS.md. See docs/benchmarks.md.
VENV ?= .venv
PY ?= $(VENV)/bin/python

.PHONY: bench bench-smoke

bench: setup ## Run every benchmark at full size (~30-40 min on 2 cores; data cached in bench/.cache)
	$(PY) -m bench

bench-smoke: setup ## Run every benchmark at tiny sizes into bench/results/smoke (proves the harness, not the numbers)
	$(PY) -m bench --smoke --out bench/results/tmp/smoke/results --cache bench/results/tmp/smoke/cache
