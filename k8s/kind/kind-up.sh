#!/usr/bin/env bash
# make kind-up: kind cluster + local registry + MinIO/Postgres + KEDA + images + both charts.
# Needs: kind, a container engine that can pull (docker or podman), internet for the base images and charts.
set -euo pipefail
cd "$(dirname "$0")/../.."

: "${REGISTRY:=localhost:5001}" "${IMAGE_TAG:?IMAGE_TAG is required}" "${KIND_CLUSTER:=crypto}"
: "${CONTAINER_ENGINE:=docker}" "${HELM:=.tools/bin/helm}" "${KUBECTL:=.tools/bin/kubectl}"
: "${AIRFLOW_CHART_VERSION:=1.22.0}" "${KEDA_CHART_VERSION:=2.17.2}" "${PY:=.venv/bin/python}"
KUBECTL="$KUBECTL --context kind-$KIND_CLUSTER"
HELM="$HELM --kube-context kind-$KIND_CLUSTER"
state=.tools/kind
mkdir -p "$state"

need() { command -v "$1" >/dev/null || { echo "kind-up: '$1' not found on PATH ($2)" >&2; exit 2; }; }
need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need "$CONTAINER_ENGINE" "docker or podman"

# 1. Local registry on localhost:5001, reachable from the nodes as kind-registry:5000.
if ! $CONTAINER_ENGINE inspect kind-registry >/dev/null 2>&1; then
  $CONTAINER_ENGINE run -d --restart=always -p 127.0.0.1:5001:5000 --name kind-registry registry:2
fi
if ! kind get clusters | grep -qx "$KIND_CLUSTER"; then
  kind create cluster --name "$KIND_CLUSTER" --config k8s/kind/kind-config.yaml
fi
$CONTAINER_ENGINE network connect kind kind-registry 2>/dev/null || true
for node in $(kind get nodes --name "$KIND_CLUSTER"); do
  $CONTAINER_ENGINE exec "$node" mkdir -p /etc/containerd/certs.d/localhost:5001
  printf '[host."http://kind-registry:5000"]\n' | $CONTAINER_ENGINE exec -i "$node" \
    cp /dev/stdin /etc/containerd/certs.d/localhost:5001/hosts.toml
done

# 2. Images tagged by git revision, pushed to the local registry.
make images REGISTRY="$REGISTRY" IMAGE_TAG="$IMAGE_TAG" CONTAINER_ENGINE="$CONTAINER_ENGINE"
for image in cryptopipe-ingest cryptopipe-validate cryptopipe-transform cryptopipe-archive cryptopipe-airflow; do
  $CONTAINER_ENGINE push "$REGISTRY/$image:$IMAGE_TAG"
done

# 3. Secrets: generated once with random values, kept outside git in .tools/kind/secrets.yaml.
[ -s "$state/secrets.yaml" ] || $PY k8s/kind/gen_secrets.py > "$state/secrets.yaml"
chmod 600 "$state/secrets.yaml"

# 4. Backing services (MinIO, Postgres) and KEDA (scales the Celery workers).
$KUBECTL create namespace infra --dry-run=client -o yaml | $KUBECTL apply -f -
$KUBECTL create namespace airflow --dry-run=client -o yaml | $KUBECTL apply -f -
$HELM upgrade --install crypto-pipeline charts/crypto-pipeline -n airflow \
  -f charts/crypto-pipeline/values-kind.yaml --wait
$KUBECTL apply -f "$state/secrets.yaml"
$KUBECTL apply -k k8s/kind/infra
$KUBECTL -n infra rollout status deploy/minio --timeout=180s
$KUBECTL -n infra rollout status statefulset/postgres --timeout=180s
$KUBECTL -n infra run mc-mb --rm -i --restart=Never --image=quay.io/minio/mc:RELEASE.2025-08-13T08-35-41Z \
  --env="MC_HOST_local=$($PY - "$state/secrets.yaml" <<'PYEOF'
import sys, yaml
docs = {d["metadata"]["name"]: d for d in yaml.safe_load_all(open(sys.argv[1]))}
s = docs["minio-root"]["stringData"]
print(f"http://{s['user']}:{s['password']}@minio.infra.svc.cluster.local:9000")
PYEOF
)" -- mb --ignore-existing local/crypto-pipeline local/crypto-pipeline-archive local/airflow-logs
$HELM upgrade --install keda keda --repo https://kedacore.github.io/charts --version "$KEDA_CHART_VERSION" \
  -n keda --create-namespace --wait

# 5. The official Airflow chart with our values; the UI on a NodePort mapped to localhost:8080.
$HELM upgrade --install airflow airflow --repo https://airflow.apache.org --version "$AIRFLOW_CHART_VERSION" \
  -n airflow -f charts/airflow/values.yaml -f charts/airflow/values-kind.yaml \
  --set images.airflow.tag="$IMAGE_TAG" \
  --set apiServer.service.type=NodePort \
  --set 'apiServer.service.ports[0].name=api-server' --set 'apiServer.service.ports[0].port=8080' \
  --set 'apiServer.service.ports[0].nodePort=30080' \
  --timeout 15m --wait
# useHelmHooks=false: the migration Job is an ordinary resource here (Argo CD runs it as a Sync hook); the
# Airflow pods wait for it in their wait-for-migrations init containers.

password=$($KUBECTL -n airflow exec deploy/airflow-api-server -- \
  cat /opt/airflow/simple_auth_manager_passwords.json.generated 2>/dev/null || echo '(see the api-server log)')
cat <<MSG

Airflow UI:  http://localhost:8080
Login:       admin / $password
Task pods:   $KUBECTL get pods -n crypto-tasks -l dag_id=crypto_market_pipeline
MSG
