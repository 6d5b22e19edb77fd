"""Our values for the official Airflow chart (1.22.x) against its values.schema.json (vendored copy in
tests/deploy/schemas, from ../shared/airflow-chart): chart defaults + base + overlay, coalesced as Helm does."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import jsonschema
import pytest
import yaml
from deploy_support import AIRFLOW_VALUES, HERE, ROOT, deep_merge, run

SCHEMAS = HERE / "schemas"
SHARED = ROOT.parent / "shared" / "airflow-chart"
OVERLAYS = ("values-kind.yaml", "values-eks.yaml")
VENDORED_CHART = AIRFLOW_VALUES / "vendor" / "airflow-1.22.0.tgz"


@cache
def schema() -> dict[str, Any]:
    return json.loads((SCHEMAS / "airflow-1.22-values.schema.json").read_text())


@cache
def chart_defaults() -> dict[str, Any]:
    return yaml.safe_load((SCHEMAS / "airflow-1.22-values.yaml").read_text())


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((AIRFLOW_VALUES / name).read_text())


def errors_of(values: dict[str, Any]) -> list[str]:
    """Schema errors, plus unknown top-level keys (the official schema leaves the root open)."""
    merged = deep_merge(chart_defaults(), values)
    validator = jsonschema.Draft7Validator(schema())
    out = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(merged)]
    unknown = set(values) - set(schema()["properties"])
    out += [f"{key}: not a value of the official chart" for key in sorted(unknown)]
    return out


def test_vendored_schema_matches_shared_copy() -> None:
    if not SHARED.exists():
        pytest.skip(f"{SHARED} absent: cannot compare the vendored copy (the vendored one is still used)")
    assert (SCHEMAS / "airflow-1.22-values.schema.json").read_bytes() == (SHARED / "values.schema.json").read_bytes()
    assert (SCHEMAS / "airflow-1.22-values.yaml").read_bytes() == (SHARED / "values.yaml").read_bytes()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_values_validate_against_official_schema(overlay: str) -> None:
    values = deep_merge(load("values.yaml"), load(overlay))
    assert errors_of(values) == []


@pytest.mark.parametrize(
    ("path", "typo"),
    [
        (("workers", "celery", "keda"), "maxReplicas"),  # real key: maxReplicaCount
        (("pgbouncer",), "enable"),  # real key: enabled
        (("migrateDatabaseJob",), "useHelmHook"),  # real key: useHelmHooks
        ((), "pgbouncr"),  # top level
    ],
)
def test_a_misspelled_key_fails(path: tuple[str, ...], typo: str) -> None:
    values = deep_merge(load("values.yaml"), load("values-eks.yaml"))
    node = values
    for key in path:
        node = node[key]
    node[typo] = 1
    errors = errors_of(values)
    assert any(typo in e for e in errors), errors


def test_wrong_type_fails() -> None:
    values = deep_merge(load("values.yaml"), {"triggerer": {"replicas": "two"}})
    assert any("triggerer.replicas" in e for e in errors_of(values))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_required_choices(overlay: str) -> None:
    v = deep_merge(load("values.yaml"), load(overlay))
    assert v["executor"] == "CeleryExecutor" and v["workers"]["celery"]["keda"]["enabled"] is True
    assert v["triggerer"]["enabled"] is True and v["triggerer"]["replicas"] >= 1
    assert v["postgresql"]["enabled"] is False and v["data"]["metadataSecretName"]
    assert v["pgbouncer"]["enabled"] is True
    for key in ("fernetKeySecretName", "jwtSecretName", "apiSecretKeySecretName"):
        assert v[key], key
    assert v["redis"]["passwordSecretName"] and v["data"]["brokerUrlSecretName"]
    assert v["migrateDatabaseJob"]["useHelmHooks"] is False
    assert v["migrateDatabaseJob"]["jobAnnotations"]["argocd.argoproj.io/hook"] == "Sync"
    assert v["createUserJob"]["useHelmHooks"] is False
    logging = v["config"]["logging"]
    assert logging["remote_logging"] == "True" and logging["remote_base_log_folder"].startswith("s3://")
    assert v["images"]["airflow"]["repository"].endswith("/cryptopipe-airflow")
    pod, ctr = v["securityContexts"]["pod"], v["securityContexts"]["containers"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0
    assert ctr["allowPrivilegeEscalation"] is False and ctr["capabilities"]["drop"] == ["ALL"]
    assert v["workers"]["celery"]["serviceAccount"]["name"] == "airflow-worker"
    assert v["triggerer"]["serviceAccount"]["name"] == "airflow-triggerer"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_values(overlay: str) -> None:
    v = deep_merge(load("values.yaml"), load(overlay))
    for key in ("fernetKey", "jwtSecret", "apiSecretKey", "webserverSecretKey"):
        assert key not in v, f"{key}: secrets are referenced by Secret name only"
    assert "metadataConnection" not in v["data"] and "password" not in v.get("redis", {})


COMPONENTS = (
    ("apiServer",),
    ("scheduler",),
    ("dagProcessor",),
    ("triggerer",),
    ("workers", "celery"),
    ("redis",),
    ("statsd",),
    ("pgbouncer",),
    ("pgbouncer", "metricsExporterSidecar"),
    ("migrateDatabaseJob",),
    ("scheduler", "logGroomerSidecar"),
    ("triggerer", "logGroomerSidecar"),
    ("workers", "celery", "logGroomerSidecar"),
    ("dagProcessor", "logGroomerSidecar"),
)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_resources_on_every_component(overlay: str) -> None:
    v = deep_merge(load("values.yaml"), load(overlay))
    for path in COMPONENTS:
        node = v
        for key in path:
            node = node[key]
        res = node.get("resources", {})
        assert {"cpu", "memory"} <= set(res.get("requests", {})), f"{'.'.join(path)}: requests"
        assert {"cpu", "memory"} <= set(res.get("limits", {})), f"{'.'.join(path)}: limits"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_dag_environment(overlay: str) -> None:
    env = {e["name"]: e["value"] for e in deep_merge(load("values.yaml"), load(overlay))["env"]}
    assert env["PIPELINE_TASK_NAMESPACE"] == "crypto-tasks"
    assert env["PIPELINE_CONFIGMAP"] == "cryptopipe-config" and env["PIPELINE_SECRET"] == "cryptopipe-secrets"
    assert env["PIPELINE_RUNTIME"] == "kubernetes"
    assert env["PIPELINE_KUBERNETES_CONN_ID"] == "kubernetes_default"
    assert json.loads(env["AIRFLOW_CONN_KUBERNETES_DEFAULT"])["extra"]["in_cluster"] is True


def test_full_render_with_vendored_official_chart(helm: str) -> None:
    """Only with the real chart (`make chart-deps`, needs internet): render it with our values."""
    if not VENDORED_CHART.exists():
        pytest.skip(f"{VENDORED_CHART.relative_to(ROOT)} absent: `make chart-deps` needs internet")
    from deploy_support import validate_object

    for overlay in OVERLAYS:
        cmd = [
            helm,
            "template",
            "airflow",
            str(VENDORED_CHART),
            "-n",
            "airflow",
            "-f",
            str(AIRFLOW_VALUES / "values.yaml"),
            "-f",
            str(AIRFLOW_VALUES / overlay),
        ]
        done = run(cmd)
        assert done.returncode == 0, done.stderr
        docs = [d for d in yaml.safe_load_all(done.stdout) if d]
        assert any(d["kind"] == "ScaledObject" for d in docs)
        errors = [e for d in docs for e in validate_object(d)]
        assert not errors, "\n".join(errors)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingest_pool_is_created_with_the_schema(overlay: str) -> None:
    """The DAG puts ingest in pool `coingecko_api`; the scheduler never queues a task whose pool is missing."""
    job = deep_merge(load("values.yaml"), load(overlay))["migrateDatabaseJob"]
    script = job["args"][-1]
    assert job["args"][:2] == ["bash", "-c"]
    assert script.index("airflow db migrate") < script.index("airflow pools set --include-deferred coingecko_api")
    # ingest pods wait deferred: only a pool that counts deferred tasks bounds concurrent CoinGecko calls
    assert "set -euo pipefail" in script  # a failed migration must fail the sync, not be followed by more work
    dag_source = (ROOT / "dags" / "stage_launch.py").read_text()
    assert '"coingecko_api"' in dag_source
