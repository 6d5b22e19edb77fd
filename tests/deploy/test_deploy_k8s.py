"""k8s/: kustomize overlays build, Argo CD Applications and kind manifests validate, secret generator output."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import ROOT, run, validate_object

OVERLAYS = sorted(p.parent for p in (ROOT / "k8s").rglob("kustomization.yaml"))


def kustomize(kubectl: str, path: Path) -> list[dict[str, Any]]:
    done = run([kubectl, "kustomize", str(path)])
    assert done.returncode == 0, f"kubectl kustomize {path.relative_to(ROOT)}:\n{done.stderr}"
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def test_overlays_found() -> None:
    names = {str(p.relative_to(ROOT)) for p in OVERLAYS}
    assert {"k8s/argocd/base", "k8s/argocd/overlays/kind", "k8s/argocd/overlays/eks", "k8s/kind/infra"} <= names


@pytest.mark.parametrize("path", OVERLAYS, ids=lambda p: str(p.relative_to(ROOT)))
def test_kustomize_builds_valid_objects(kubectl: str, path: Path) -> None:
    docs = kustomize(kubectl, path)
    assert docs
    errors = [e for d in docs for e in validate_object(d)]
    assert not errors, "\n".join(errors)


# Values files per environment: kind reads the committed overlays; EKS reads the copies k8s/eks/render-values.py
# fills from Terraform (the templates and add-on applications are checked in test_eks_handover.py).
VALUE_FILES = {
    "kind": ("values-kind.yaml", "$values/charts/airflow/values-kind.yaml"),
    "eks": ("../../k8s/eks/rendered/crypto-pipeline-values.yaml", "$values/k8s/eks/rendered/airflow-values.yaml"),
}
ADDONS = {"kind": set(), "eks": {"external-secrets", "keda", "cluster-secret-store"}}


@pytest.mark.parametrize("env", ["kind", "eks"])
def test_app_of_apps(kubectl: str, env: str) -> None:
    apps = {d["metadata"]["name"]: d for d in kustomize(kubectl, ROOT / "k8s" / "argocd" / "overlays" / env)}
    assert set(apps) == {"crypto-pipeline-root", "crypto-pipeline", "airflow"} | ADDONS[env]
    root = apps["crypto-pipeline-root"]["spec"]
    assert root["source"]["path"] == f"k8s/argocd/overlays/{env}"
    ours, airflow = apps["crypto-pipeline"], apps["airflow"]
    # Sync waves: our chart (namespace, RBAC, secrets) before the official chart.
    wave = lambda a: int(a["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])  # noqa: E731
    assert wave(ours) < wave(airflow)
    assert ours["spec"]["source"]["path"] == "charts/crypto-pipeline"
    assert ours["spec"]["source"]["helm"]["valueFiles"] == ["values.yaml", VALUE_FILES[env][0]]
    chart_src, values_src = airflow["spec"]["sources"]
    assert chart_src["repoURL"] == "https://airflow.apache.org" and chart_src["chart"] == "airflow"
    assert chart_src["targetRevision"].startswith("1.22.")
    assert chart_src["helm"]["valueFiles"] == [
        "$values/charts/airflow/values.yaml",
        VALUE_FILES[env][1],
    ]
    assert values_src["ref"] == "values"
    for app in (ours, airflow):
        assert app["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    for rel in (f"charts/crypto-pipeline/values-{env}.yaml", f"charts/airflow/values-{env}.yaml"):
        assert (ROOT / rel).exists(), rel


def test_application_schema_catches_a_typo(kubectl: str) -> None:
    app = next(d for d in kustomize(kubectl, ROOT / "k8s/argocd/overlays/kind") if d["metadata"]["name"] == "airflow")
    app["spec"]["syncPolicy"]["automated"]["selfHeals"] = True
    assert any("selfHeals" in e for e in validate_object(app))


def test_kind_config() -> None:
    cfg = yaml.safe_load((ROOT / "k8s/kind/kind-config.yaml").read_text())
    assert cfg["kind"] == "Cluster" and cfg["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    ports = [p for n in cfg["nodes"] for p in n.get("extraPortMappings", [])]
    assert {"containerPort": 30080, "hostPort": 8080, "listenAddress": "127.0.0.1", "protocol": "TCP"} in ports


def test_kind_secret_generator_makes_fresh_complete_secrets() -> None:
    spec = importlib.util.spec_from_file_location("gen_secrets", ROOT / "k8s/kind/gen_secrets.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    first, second = module.build("airflow", "crypto-tasks"), module.build("airflow", "crypto-tasks")
    names = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in first}
    # Every Secret the charts and manifests reference by name.
    airflow_values = yaml.safe_load((ROOT / "charts/airflow/values.yaml").read_text())
    referenced = {
        airflow_values["fernetKeySecretName"],
        airflow_values["jwtSecretName"],
        airflow_values["apiSecretKeySecretName"],
        airflow_values["data"]["metadataSecretName"],
        airflow_values["data"]["brokerUrlSecretName"],
        airflow_values["redis"]["passwordSecretName"],
        airflow_values["pgbouncer"]["configSecretName"],
        airflow_values["pgbouncer"]["metricsExporterSidecar"]["statsSecretName"],
    }
    assert {("airflow", n) for n in referenced} <= names
    assert {("crypto-tasks", "cryptopipe-secrets"), ("infra", "minio-root"), ("infra", "postgres-superuser")} <= names
    task = next(d for d in first if d["metadata"]["name"] == "cryptopipe-secrets")["stringData"]
    assert task["CRYPTOPIPE_WAREHOUSE__URL"].startswith("postgresql+psycopg://warehouse:")
    assert first != second, "values must be random on every generation"
    for doc in first:
        assert not validate_object(doc)


def test_runbook_has_a_section_per_alert(rendered_eks: list[dict[str, Any]]) -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    rule = next(d for d in rendered_eks if d["kind"] == "PrometheusRule")
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            assert f"### {r['alert']}\n" in runbook, f"docs/runbook.md lacks a section for {r['alert']}"
