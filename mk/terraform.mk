# Terraform for AWS (terraform/, tests/terraform/, docs/deploy-eks.md).
# terraform and the hashicorp/aws provider mirror come with the machine image, not with `make tools`:
# the tests skip init/validate/plan with the exact reason when either is missing (checkov, from
# `make tools`, is required in CI).
VENV ?= .venv
PY ?= $(VENV)/bin/python
TERRAFORM ?= terraform
# The machine's TF_CLI_CONFIG_FILE points at a missing file; fmt needs no CLI config at all.
TF_NO_CLI_CONFIG := env -u TF_CLI_CONFIG_FILE

.PHONY: tf-fmt tf-validate tf-test

tf-fmt: ## Format terraform/ and the Terraform test fixtures in place (terraform fmt -recursive)
	$(TF_NO_CLI_CONFIG) $(TERRAFORM) fmt -recursive terraform
	$(TF_NO_CLI_CONFIG) $(TERRAFORM) fmt -recursive tests/terraform/fixtures

tf-validate: ## Offline terraform init + validate of every module that needs only the aws provider (others: skipped, reason shown)
	$(PY) -m pytest tests/terraform/test_terraform_cli.py -q -rs -p no:cacheprovider

tf-test: ## Terraform tests: fmt, offline validate, offline plan of identities, python-hcl2 structure, checkov
	$(PY) -m pytest tests/terraform -q -rs
