"""Benchmarks of the pipeline (issue 7): run with ``make bench`` or ``python -m bench``; see bench/RESULTS.md."""
