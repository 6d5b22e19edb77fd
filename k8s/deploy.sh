#!/usr/bin/env bash
# make deploy ENV=kind|eks: helm upgrade --install both charts into the current kube context (without Argo CD).
set -euo pipefail
cd "$(dirname "$0")/.."
env_name=${1:?usage: deploy.sh kind|eks}
: "${HELM:=.tools/bin/helm}" "${IMAGE_TAG:?IMAGE_TAG is required}" "${AIRFLOW_CHART_VERSION:=1.22.0}"
case "$env_name" in kind|eks) ;; *) echo "deploy.sh: unknown environment '$env_name' (kind or eks)" >&2; exit 2;; esac
$HELM upgrade --install crypto-pipeline charts/crypto-pipeline -n airflow --create-namespace \
  -f "charts/crypto-pipeline/values-$env_name.yaml" --wait
chart=airflow
[ -f "charts/airflow/vendor/airflow-$AIRFLOW_CHART_VERSION.tgz" ] && chart="charts/airflow/vendor/airflow-$AIRFLOW_CHART_VERSION.tgz"
repo_args=()
[ "$chart" = airflow ] && repo_args=(--repo https://airflow.apache.org --version "$AIRFLOW_CHART_VERSION")
$HELM upgrade --install airflow "$chart" "${repo_args[@]}" -n airflow \
  -f charts/airflow/values.yaml -f "charts/airflow/values-$env_name.yaml" \
  --set images.airflow.tag="$IMAGE_TAG" --timeout 15m --wait
