# Airflow standalone on this machine: the real DAG with PIPELINE_RUNTIME=local (each stage a local
# `cryptopipe <stage>` process), embedded defaults (file storage + SQLite warehouse under ./data) and the
# CoinGecko replay server as the source. See docs/dag.md.
VENV ?= .venv
PY ?= $(VENV)/bin/python

AIRFLOW_LOCAL_HOME := $(abspath .airflow)
AIRFLOW_LOCAL_PORT ?= 8080
REPLAY_PORT ?= 8765
AIRFLOW_DATA_DIR := $(abspath data)
# Keyless plan: one ingest at a time (a real deployment sizes the pool to its CoinGecko plan).
COINGECKO_POOL_SLOTS ?= 1

# Everything the Airflow components (and so the local stage processes) see.
AIRFLOW_LOCAL_ENV = \
	AIRFLOW_HOME=$(AIRFLOW_LOCAL_HOME) \
	AIRFLOW__CORE__DAGS_FOLDER=$(abspath dags) \
	AIRFLOW__CORE__LOAD_EXAMPLES=False \
	AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False \
	AIRFLOW__API__PORT=$(AIRFLOW_LOCAL_PORT) \
	AIRFLOW__API__BASE_URL=http://localhost:$(AIRFLOW_LOCAL_PORT) \
	PIPELINE_RUNTIME=local \
	PIPELINE_CRYPTOPIPE_BIN=$(abspath $(VENV)/bin/cryptopipe) \
	PIPELINE_STORAGE_URI=file://$(AIRFLOW_DATA_DIR) \
	CRYPTOPIPE_STORAGE__URI=file://$(AIRFLOW_DATA_DIR) \
	CRYPTOPIPE_WAREHOUSE__URL=sqlite:///$(AIRFLOW_DATA_DIR)/warehouse.db \
	CRYPTOPIPE_API__BASE_URL=http://127.0.0.1:$(REPLAY_PORT)/api/v3

.PHONY: airflow airflow-clean

airflow: setup ## Airflow standalone (UI :8080) running the DAG locally (PIPELINE_RUNTIME=local) on the replay server
	@mkdir -p $(AIRFLOW_LOCAL_HOME) $(AIRFLOW_DATA_DIR)
	@export $(AIRFLOW_LOCAL_ENV); \
	echo "airflow: migrating the metadata DB in $$AIRFLOW_HOME"; \
	$(VENV)/bin/airflow db migrate > $(AIRFLOW_LOCAL_HOME)/db-migrate.log 2>&1 \
	  || { cat $(AIRFLOW_LOCAL_HOME)/db-migrate.log; exit 1; }; \
	$(VENV)/bin/airflow pools set --include-deferred coingecko_api $(COINGECKO_POOL_SLOTS) "CoinGecko API: bounds concurrent ingest" > /dev/null; \
	$(VENV)/bin/cryptopipe replay-server --port $(REPLAY_PORT) > $(AIRFLOW_LOCAL_HOME)/replay-server.log 2>&1 & \
	replay_pid=$$!; \
	trap 'kill $$replay_pid 2>/dev/null || true' EXIT INT TERM; \
	echo "airflow: replay server (pid $$replay_pid) on http://127.0.0.1:$(REPLAY_PORT)/api/v3, log $(AIRFLOW_LOCAL_HOME)/replay-server.log"; \
	echo "airflow: UI http://localhost:$(AIRFLOW_LOCAL_PORT)  user: admin"; \
	echo "airflow: password: the 'admin' entry of $(AIRFLOW_LOCAL_HOME)/simple_auth_manager_passwords.json.generated"; \
	echo "airflow:   (written at first start: cat $(AIRFLOW_LOCAL_HOME)/simple_auth_manager_passwords.json.generated)"; \
	echo "airflow: DAG crypto_market_pipeline runs the latest hour at once; data in $(AIRFLOW_DATA_DIR). Ctrl-C stops."; \
	$(VENV)/bin/airflow standalone

airflow-clean: ## Remove the local Airflow home (.airflow: metadata DB, logs, generated password)
	rm -rf $(AIRFLOW_LOCAL_HOME)
