# Deployment: images, locks, charts, kind, lint. See docs/deploy-kind.md and docs/runbook.md.
VENV ?= .venv
PY ?= $(VENV)/bin/python
TOOLS ?= .tools

STAGES := ingest validate transform archive
# Images are tagged by git revision (short SHA, "-dirty" when the tree has changes): the DAG's
# PIPELINE_IMAGE_TAG and the chart values name the same tag.
GIT_REV := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
GIT_DIRTY := $(shell git diff --quiet HEAD -- 2>/dev/null || echo -dirty)
IMAGE_TAG ?= $(GIT_REV)$(GIT_DIRTY)
REGISTRY ?= localhost:5001
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
SOURCE_URL ?= https://github.com/example/crypto-pipeline
# docker if its daemon answers, else podman (buildah-backed); override with CONTAINER_ENGINE=...
CONTAINER_ENGINE ?= $(shell (docker info >/dev/null 2>&1 && echo docker) || (command -v podman >/dev/null && echo podman) || echo docker)
KIND_CLUSTER ?= crypto
AIRFLOW_CHART_VERSION := 1.22.0
AIRFLOW_CHART_REPO := https://airflow.apache.org
HELM := $(TOOLS)/bin/helm
KUBECTL := $(TOOLS)/bin/kubectl
BUILD_ARGS = --build-arg VERSION=$(VERSION) --build-arg REVISION=$(IMAGE_TAG) --build-arg SOURCE=$(SOURCE_URL)

.PHONY: locks images kind-up deploy lint-deploy chart-deps test-deploy

locks: ## Regenerate requirements/images/<stage>.lock (uv pip compile, hashes, constrained by dev.lock)
	@grep -v '^-e ' requirements/dev.lock > requirements/images/.dev-constraints.txt
	@for s in $(STAGES); do \
	  echo "lock $$s"; \
	  uv pip compile pyproject.toml requirements/images/$$s.in --extra $$s \
	    -c requirements/images/.dev-constraints.txt --generate-hashes --python-version 3.11 \
	    --python-platform x86_64-manylinux_2_28 --no-emit-package cryptopipe \
	    --custom-compile-command "make locks" --quiet -o requirements/images/$$s.lock || exit 1; \
	done
	@uv pip compile requirements/images/build.in --generate-hashes --python-version 3.11 \
	  --custom-compile-command "make locks" --quiet -o requirements/images/build.lock
	@rm -f requirements/images/.dev-constraints.txt

images: ## Build the 4 task images + the Airflow image tagged $(IMAGE_TAG) (needs docker or podman that can pull)
	@for s in $(STAGES); do \
	  $(CONTAINER_ENGINE) build -f task_images/$$s/Dockerfile $(BUILD_ARGS) \
	    -t $(REGISTRY)/cryptopipe-$$s:$(IMAGE_TAG) . || exit 1; \
	done
	$(CONTAINER_ENGINE) build -f images/airflow/Dockerfile $(BUILD_ARGS) \
	  -t $(REGISTRY)/cryptopipe-airflow:$(IMAGE_TAG) .
	@echo "built tag $(IMAGE_TAG) in $(REGISTRY)"

kind-up: tools ## kind cluster + MinIO + Postgres + images + both charts; prints the UI address and login
	REGISTRY=$(REGISTRY) IMAGE_TAG=$(IMAGE_TAG) KIND_CLUSTER=$(KIND_CLUSTER) \
	  CONTAINER_ENGINE=$(CONTAINER_ENGINE) HELM=$(HELM) KUBECTL=$(KUBECTL) bash k8s/kind/kind-up.sh

deploy: tools ## helm upgrade --install both charts into the current kube context (ENV=kind|eks)
	IMAGE_TAG=$(IMAGE_TAG) REGISTRY=$(REGISTRY) HELM=$(HELM) KUBECTL=$(KUBECTL) \
	  bash k8s/deploy.sh $(or $(ENV),kind)

chart-deps: tools ## Pull the official Airflow chart $(AIRFLOW_CHART_VERSION) into charts/airflow/vendor (needs internet)
	@mkdir -p charts/airflow/vendor
	$(HELM) pull airflow --repo $(AIRFLOW_CHART_REPO) --version $(AIRFLOW_CHART_VERSION) \
	  --destination charts/airflow/vendor

lint-deploy: tools ## All offline deploy checks: hadolint, yamllint, helm lint/template, schemas, kustomize, checkov
	CI=$(CI) $(PY) -m pytest tests/deploy -q
