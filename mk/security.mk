# Security checks (docs/security.md): bandit + detect-secrets, and the security test suite.
VENV ?= .venv
PY ?= $(VENV)/bin/python

.PHONY: security secrets-baseline test-security

# The report lists medium/high bandit findings for people; the gate is the test, which also applies the reviewed
# exceptions and scans every tracked file against the audited baseline (without rewriting it, unlike the hook).
security: ## bandit (src, dags: no medium/high) and detect-secrets (tracked files vs the audited .secrets.baseline)
	$(VENV)/bin/bandit -q -c bandit.yaml -r src dags --severity-level medium --exit-zero
	$(PY) -m pytest -q tests/security/test_static_analysis.py

secrets-baseline: ## Refresh .secrets.baseline keeping audit reasons; lists findings that still need `detect-secrets audit`
	$(PY) -m tests.security.baseline_tool

test-security: ## Security tests: parser fuzzing, secrets never logged, outbound URLs, static analysis, pod policy
	$(PY) -m pytest -q tests/security tests/unit/hardening/test_coingecko_fuzz.py
