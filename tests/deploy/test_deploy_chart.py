"""Our chart: helm lint --strict, rendered objects valid (Kubernetes 1.33 strict / CRD schemas), and assertions on
the objects in the style of the official chart's helm tests."""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

import pytest
from deploy_support import CHART, STAGES, helm_template, run, validate_object

TASK_NS = "crypto-tasks"
SECRET_KEYS = {"CRYPTOPIPE_API__KEY", "CRYPTOPIPE_ALERTS__SLACK_WEBHOOK_URL", "CRYPTOPIPE_WAREHOUSE__URL"}


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


@pytest.mark.parametrize("values", ["values.yaml", "values-kind.yaml", "values-eks.yaml"])
def test_helm_lint_strict(helm: str, values: str) -> None:
    done = run([helm, "lint", "--strict", str(CHART), "-f", str(CHART / values)])
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("env", ["kind", "eks"])
def test_every_rendered_object_is_valid(env: str, request: pytest.FixtureRequest) -> None:
    docs = request.getfixturevalue(f"rendered_{env}")
    errors = [e for d in docs for e in validate_object(d)]
    assert not errors, "\n".join(errors)


def test_validation_rejects_a_misspelled_field(rendered_eks: list[dict[str, Any]]) -> None:
    """The validators must catch a typo in both a built-in kind and a custom resource."""
    quota = dict(one(rendered_eks, "ResourceQuota", "crypto-tasks-quota"))
    quota["spec"] = {"hrad": quota["spec"]["hard"]}
    assert validate_object(quota)
    es = one(rendered_eks, "ExternalSecret", "cryptopipe-secrets")
    bad = {**es, "spec": {**es["spec"], "refreshIntervall": "1h"}}
    assert any("refreshIntervall" in e for e in validate_object(bad))


def test_task_namespace_enforces_restricted_pod_security(rendered_kind: list[dict[str, Any]]) -> None:
    ns = one(rendered_kind, "Namespace", TASK_NS)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("env", ["kind", "eks"])
def test_rbac_only_in_task_namespace(env: str, request: pytest.FixtureRequest) -> None:
    docs = request.getfixturevalue(f"rendered_{env}")
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    role = one(docs, "Role", "airflow-pod-launcher")
    assert role["metadata"]["namespace"] == TASK_NS
    rules = {(tuple(r["apiGroups"]), res): set(r["verbs"]) for r in role["rules"] for res in r["resources"]}
    assert rules == {
        (("",), "pods"): {"create", "get", "list", "watch", "patch", "delete"},
        (("",), "pods/log"): {"get", "list"},
        (("",), "events"): {"get", "list", "watch"},
    }
    for r in role["rules"]:
        assert "*" not in r["verbs"] and "*" not in r["resources"]
    binding = one(docs, "RoleBinding", "airflow-pod-launcher")
    assert binding["metadata"]["namespace"] == TASK_NS
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "airflow-pod-launcher",
    }
    subjects = {(s["kind"], s["namespace"], s["name"]) for s in binding["subjects"]}
    assert subjects == {
        ("ServiceAccount", "airflow", "airflow-worker"),
        ("ServiceAccount", "airflow", "airflow-triggerer"),
    }


def test_pod_exec_is_opt_in(helm: str) -> None:
    docs = helm_template(helm, [CHART / "values-kind.yaml"], ["--set", "rbac.allowPodExec=true"])
    resources = {res for r in one(docs, "Role", "airflow-pod-launcher")["rules"] for res in r["resources"]}
    assert "pods/exec" in resources


@pytest.mark.parametrize("env", ["kind", "eks"])
def test_task_service_accounts(env: str, request: pytest.FixtureRequest) -> None:
    docs = request.getfixturevalue(f"rendered_{env}")
    sas = {d["metadata"]["name"]: d for d in by_kind(docs, "ServiceAccount")}
    assert set(sas) == {f"cryptopipe-{s}" for s in STAGES}
    for sa in sas.values():
        assert sa["metadata"]["namespace"] == TASK_NS
        assert sa["automountServiceAccountToken"] is False


def test_irsa_annotations_need_role_arns(helm: str) -> None:
    arns = [f"--set=aws.roleArns.{s}=arn:aws:iam::111122223333:role/crypto-{s}" for s in STAGES]
    docs = helm_template(helm, [CHART / "values-kind.yaml"], ["--set", "aws.identity=irsa", *arns])
    for s in STAGES:
        ann = one(docs, "ServiceAccount", f"cryptopipe-{s}")["metadata"]["annotations"]
        assert ann["eks.amazonaws.com/role-arn"] == f"arn:aws:iam::111122223333:role/crypto-{s}"
    done = run([helm, "template", "x", str(CHART), "--set", "aws.identity=irsa"])
    assert done.returncode != 0 and "roleArns" in done.stderr


def test_configmap_holds_no_secret(helm: str, rendered_kind: list[dict[str, Any]]) -> None:
    cm = one(rendered_kind, "ConfigMap", "cryptopipe-config")
    assert cm["metadata"]["namespace"] == TASK_NS
    assert all(k.startswith("CRYPTOPIPE_") for k in cm["data"])
    assert not SECRET_KEYS & set(cm["data"])
    done = run([helm, "template", "x", str(CHART), "--set", "config.env.CRYPTOPIPE_API__KEY=oops"])
    assert done.returncode != 0, "a secret key in the ConfigMap values must be refused"


def test_kind_renders_no_secret_and_eks_an_external_secret(
    rendered_kind: list[dict[str, Any]], rendered_eks: list[dict[str, Any]]
) -> None:
    assert not by_kind(rendered_kind, "Secret"), "kind secrets are generated at install time, not rendered"
    assert not by_kind(rendered_eks, "Secret")
    es = one(rendered_eks, "ExternalSecret", "cryptopipe-secrets")
    assert es["metadata"]["namespace"] == TASK_NS
    assert es["spec"]["target"]["name"] == "cryptopipe-secrets"
    assert set(es["spec"]["target"]["template"]["data"]) == SECRET_KEYS
    airflow_es = {
        d["metadata"]["name"]
        for d in by_kind(rendered_eks, "ExternalSecret")
        if d["metadata"]["namespace"] == "airflow"
    }
    assert airflow_es == {
        "airflow-metadata",
        "airflow-pgbouncer-config",
        "airflow-pgbouncer-stats",
        "airflow-fernet-key",
        "airflow-jwt-secret",
        "airflow-api-secret-key",
        "airflow-redis-password",
        "airflow-broker-url",
    }


def test_values_mode_secret_is_built_from_install_time_values(helm: str) -> None:
    url = "postgresql+psycopg://u:p@db:5432/w"
    docs = helm_template(
        helm,
        [CHART / "values-kind.yaml"],
        ["--set", "secrets.mode=values", "--set", f"secrets.values.CRYPTOPIPE_WAREHOUSE__URL={url}"],
    )
    secret = one(docs, "Secret", "cryptopipe-secrets")
    assert base64.b64decode(secret["data"]["CRYPTOPIPE_WAREHOUSE__URL"]).decode() == url
    assert "CRYPTOPIPE_API__KEY" not in secret["data"], "empty values are left out"
    done = run([helm, "template", "x", str(CHART), "--set", "secrets.mode=values"])
    assert done.returncode != 0 and "CRYPTOPIPE_WAREHOUSE__URL" in done.stderr


def egress_ports(policy: dict[str, Any]) -> set[tuple[str, int]]:
    return {(p["protocol"], p["port"]) for rule in policy["spec"].get("egress", []) for p in rule.get("ports", [])}


@pytest.mark.parametrize("env", ["kind", "eks"])
def test_network_policies_default_deny_and_egress_allow_list(env: str, request: pytest.FixtureRequest) -> None:
    docs = request.getfixturevalue(f"rendered_{env}")
    policies = {d["metadata"]["name"]: d for d in by_kind(docs, "NetworkPolicy")}
    assert all(p["metadata"]["namespace"] == TASK_NS for p in policies.values())
    deny = policies["default-deny-all"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for name, policy in policies.items():
        assert "ingress" not in policy["spec"], f"{name}: task pods accept no ingress"
        for rule in policy["spec"].get("egress", []):
            assert rule.get("to"), f"{name}: an egress rule without `to` allows every destination"
            assert rule.get("ports"), f"{name}: an egress rule without ports allows every port"
    common = policies["task-egress-dns-https"]
    assert common["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/part-of": "crypto-pipeline"}}
    assert {("UDP", 53), ("TCP", 53), ("TCP", 443)} <= egress_ports(common)
    https = next(
        r for r in common["spec"]["egress"] if ("TCP", 443) in {(p["protocol"], p["port"]) for p in r["ports"]}
    )
    for peer in https["to"]:
        excepted = [ipaddress.ip_network(c) for c in peer["ipBlock"].get("except", [])]
        for private in ("10.1.2.3", "172.20.0.1", "192.168.1.1", "169.254.169.254"):
            assert any(ipaddress.ip_address(private) in net for net in excepted), f"{private} reachable on 443"
    warehouse = policies["archive-egress-warehouse"]
    assert warehouse["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "archive"
    assert egress_ports(warehouse) == {("TCP", 5432)}
    if env == "eks":
        assert {("TCP", 80)} <= egress_ports(common), "Pod Identity agent"
        assert "task-egress-object-store" not in policies
    else:
        assert egress_ports(policies["task-egress-object-store"]) == {("TCP", 9000)}


def test_no_warehouse_policy_without_a_destination(helm: str) -> None:
    docs = helm_template(helm, [], [])
    assert "archive-egress-warehouse" not in {d["metadata"]["name"] for d in by_kind(docs, "NetworkPolicy")}


@pytest.mark.parametrize("env", ["kind", "eks"])
def test_quota_and_limits(env: str, request: pytest.FixtureRequest) -> None:
    docs = request.getfixturevalue(f"rendered_{env}")
    quota = one(docs, "ResourceQuota", "crypto-tasks-quota")
    assert quota["metadata"]["namespace"] == TASK_NS
    assert {"pods", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"} <= set(quota["spec"]["hard"])
    limits = one(docs, "LimitRange", "crypto-tasks-limits")["spec"]["limits"][0]
    assert limits["type"] == "Container"
    for key in ("default", "defaultRequest", "max"):
        assert {"cpu", "memory"} <= set(limits[key])


def test_monitoring_on_eks_only(rendered_kind: list[dict[str, Any]], rendered_eks: list[dict[str, Any]]) -> None:
    assert not by_kind(rendered_kind, "ServiceMonitor") and not by_kind(rendered_kind, "PrometheusRule")
    rule = one(rendered_eks, "PrometheusRule", "crypto-pipeline")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {"CryptoPipelineDagRunFailed", "CryptoPipelineTaskFailures", "CryptoPipelineDataStale"}
    for alert in alerts.values():
        assert 'dag_id="crypto_market_pipeline"' in alert["expr"]
        assert alert["annotations"]["runbook_url"].endswith("#" + alert["alert"].lower())
    sm = one(rendered_eks, "ServiceMonitor", "airflow-statsd")
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["airflow"]}


def test_schema_rejects_unknown_value(helm: str) -> None:
    done = run([helm, "lint", "--strict", str(CHART), "--set", "networkPolicy.enabeld=false"])
    assert done.returncode != 0 and "enabeld" in (done.stdout + done.stderr)
