"""Plan modules/identities offline and assert the IAM it would create: least privilege per workload.

The plan renders every aws_iam_policy_document locally (fake credentials, no API call), so these tests
check the JSON AWS would receive, not the HCL that builds it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.terraform.tfhelpers import run_terraform

DATALAKE = "arn:aws:s3:::cp-test-datalake"
ARCHIVE = "arn:aws:s3:::cp-test-archive"
LOGS = "arn:aws:s3:::cp-test-airflow-logs"
S3_KEY = "arn:aws:kms:eu-west-1:111122223333:key/11111111-2222-3333-4444-555555555555"
WORKING = {"raw/", "staging/", "validated/", "quarantine/", "quality/", "analytics/", "alerts/", "reports/"}

# The design, written independently of the module: {workload: {(bucket, kind): prefixes}}.
EXPECTED_S3: dict[str, dict[tuple[str, str], set[str]]] = {
    "ingest": {
        (DATALAKE, "read"): {"raw/"},  # write-once check of raw pages
        (DATALAKE, "write"): {"raw/", "staging/", "runs/"},
    },
    "validate": {
        (DATALAKE, "read"): {"staging/", "validated/", "quarantine/", "quality/", "runs/daily/"},
        (DATALAKE, "write"): {"validated/", "quarantine/", "quality/", "runs/"},
        (DATALAKE, "delete"): {"validated/", "quarantine/", "quality/"},  # what a rerun supersedes
    },
    "transform": {
        (DATALAKE, "read"): {"validated/", "quality/", "analytics/indicators/", "alerts/", "reports/", "runs/daily/"},
        (DATALAKE, "write"): {"validated/market_snapshots_daily/", "analytics/", "alerts/", "reports/", "runs/"},
        (DATALAKE, "delete"): {"analytics/indicators/", "alerts/", "reports/"},  # hourly objects a daily run replaces
    },
    "archive": {
        (DATALAKE, "read"): WORKING | {"manifests/", "runs/"},
        (DATALAKE, "write"): {"manifests/", "runs/"},
        (DATALAKE, "delete"): WORKING,
        (ARCHIVE, "read"): {"archive/"},
        (ARCHIVE, "write"): {"archive/"},
    },
    "airflow": {
        (DATALAKE, "read"): {"alerts/"},
        (LOGS, "read"): {"logs/"},
        (LOGS, "write"): {"logs/"},
    },
}
KIND_OF_ACTION = {
    "s3:GetObject": "read",
    "s3:PutObject": "write",
    "s3:AbortMultipartUpload": "write",
    "s3:DeleteObject": "delete",
}
EXPECTED_SERVICE_ACCOUNTS = {
    "ingest": ("crypto-tasks", {"cryptopipe-ingest"}),
    "validate": ("crypto-tasks", {"cryptopipe-validate"}),
    "transform": ("crypto-tasks", {"cryptopipe-transform"}),
    "archive": ("crypto-tasks", {"cryptopipe-archive"}),
    # Service accounts of the official chart for release "airflow": <release>-<component>.
    "airflow": (
        "airflow",
        {"airflow-worker", "airflow-triggerer", "airflow-scheduler", "airflow-api-server", "airflow-dag-processor"},
    ),
    "external_secrets": ("external-secrets", {"external-secrets"}),
}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _plan(terraform: Path, env: dict[str, str], workdir: Path, *extra: str) -> tuple[int, str]:
    result = run_terraform(
        terraform, ["plan", "-refresh=false", "-input=false", "-no-color", "-out=test.tfplan", *extra], workdir, env
    )
    return result.returncode, result.stdout + result.stderr


@pytest.fixture(scope="module")
def plan_workdir(offline_terraform: tuple[Path, dict[str, str]], tf_copy: Path) -> Path:
    terraform, env = offline_terraform
    workdir = tf_copy / "fixtures" / "identities_plan"
    init = run_terraform(terraform, ["init", "-backend=false", "-input=false", "-no-color"], workdir, env)
    assert init.returncode == 0, init.stdout + init.stderr
    return workdir


@pytest.fixture(scope="module")
def planned(plan_workdir: Path, offline_terraform: tuple[Path, dict[str, str]]) -> dict[str, dict[str, Any]]:
    """Planned resources of the module by address."""
    terraform, env = offline_terraform
    code, output = _plan(terraform, env, plan_workdir)
    assert code == 0, f"offline plan of modules/identities failed:\n{output}"
    show = run_terraform(terraform, ["show", "-json", "test.tfplan"], plan_workdir, env)
    assert show.returncode == 0, show.stderr
    module = json.loads(show.stdout)["planned_values"]["root_module"]["child_modules"][0]
    return {r["address"].removeprefix("module.identities."): r for r in module["resources"]}


def _policy(planned: dict[str, dict[str, Any]], rtype: str, workload: str, attribute: str) -> dict[str, Any]:
    return json.loads(planned[f'{rtype}.this["{workload}"]']["values"][attribute])


def _s3_grants(policy: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """{(bucket ARN, kind): prefixes} granted by the object-level statements of a policy."""
    grants: dict[tuple[str, str], set[str]] = defaultdict(set)
    for statement in policy["Statement"]:
        actions = _as_list(statement["Action"])
        if not any(a.startswith("s3:") and a != "s3:ListBucket" for a in actions):
            continue
        for action in actions:
            for resource in _as_list(statement["Resource"]):
                bucket, _, key = resource.partition("/")
                assert key.endswith("*") and len(key) > 1, f"{resource}: object access must name a prefix"
                grants[(bucket, KIND_OF_ACTION[action])].add(key.removesuffix("*"))
    return dict(grants)


@pytest.mark.parametrize("workload", sorted(EXPECTED_S3))
def test_s3_prefixes_exactly_as_designed(planned: dict[str, dict[str, Any]], workload: str) -> None:
    policy = _policy(planned, "aws_iam_policy", workload, "policy")
    assert _s3_grants(policy) == EXPECTED_S3[workload]


@pytest.mark.parametrize("workload", sorted(EXPECTED_SERVICE_ACCOUNTS))
def test_no_wildcard_actions_or_resources(planned: dict[str, dict[str, Any]], workload: str) -> None:
    policy = _policy(planned, "aws_iam_policy", workload, "policy")
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        for action in _as_list(statement["Action"]):
            assert "*" not in action, f"{workload}: wildcard action {action}"
        for resource in _as_list(statement["Resource"]):
            assert resource != "*" and not resource.endswith(":::*"), f"{workload}: wildcard resource {resource}"
            assert not resource.endswith("/*") or resource.count("/") >= 2, f"{workload}: whole-bucket {resource}"


@pytest.mark.parametrize("workload", sorted(EXPECTED_S3))
def test_listing_is_limited_to_readable_prefixes(planned: dict[str, dict[str, Any]], workload: str) -> None:
    policy = _policy(planned, "aws_iam_policy", workload, "policy")
    readable = {bucket: prefixes for (bucket, kind), prefixes in EXPECTED_S3[workload].items() if kind == "read"}
    listed = {}
    for statement in policy["Statement"]:
        if _as_list(statement["Action"]) == ["s3:ListBucket"]:
            prefixes = set(_as_list(statement["Condition"]["StringLike"]["s3:prefix"]))
            listed[statement["Resource"]] = {p.removesuffix("*") for p in prefixes}
    assert listed == readable


@pytest.mark.parametrize("workload", sorted(EXPECTED_S3))
def test_kms_only_through_s3(planned: dict[str, dict[str, Any]], workload: str) -> None:
    policy = _policy(planned, "aws_iam_policy", workload, "policy")
    kms = [s for s in policy["Statement"] if any(a.startswith("kms:") for a in _as_list(s["Action"]))]
    assert len(kms) == 1
    assert kms[0]["Resource"] == S3_KEY
    assert kms[0]["Condition"] == {"StringEquals": {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}}
    writes = any(kind == "write" for _, kind in EXPECTED_S3[workload])
    expected = {"kms:Decrypt", "kms:GenerateDataKey"} if writes else {"kms:Decrypt"}
    assert set(_as_list(kms[0]["Action"])) == expected


def test_external_secrets_reads_only_the_pipeline_secrets(planned: dict[str, dict[str, Any]]) -> None:
    policy = _policy(planned, "aws_iam_policy", "external_secrets", "policy")
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert set(by_sid) == {"ReadPipelineSecrets", "DecryptSecretsThroughSecretsManager"}
    assert set(_as_list(by_sid["ReadPipelineSecrets"]["Action"])) == {
        "secretsmanager:GetSecretValue",
        "secretsmanager:DescribeSecret",
    }
    assert len(_as_list(by_sid["ReadPipelineSecrets"]["Resource"])) == 3
    assert by_sid["DecryptSecretsThroughSecretsManager"]["Condition"] == {
        "StringEquals": {"kms:ViaService": "secretsmanager.eu-west-1.amazonaws.com"}
    }
    assert not any(s.startswith("s3:") for st in policy["Statement"] for s in _as_list(st["Action"]))


@pytest.mark.parametrize("workload", sorted(EXPECTED_SERVICE_ACCOUNTS))
def test_trust_is_pod_identity_for_its_service_accounts_only(planned: dict[str, dict[str, Any]], workload: str) -> None:
    trust = _policy(planned, "aws_iam_role", workload, "assume_role_policy")
    (statement,) = trust["Statement"]
    assert statement["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert set(statement["Action"]) == {"sts:AssumeRole", "sts:TagSession"}
    namespace, accounts = EXPECTED_SERVICE_ACCOUNTS[workload]
    conditions = statement["Condition"]["StringEquals"]
    assert conditions["aws:RequestTag/eks-cluster-name"] == "cp-test"
    assert conditions["aws:RequestTag/kubernetes-namespace"] == namespace
    assert set(_as_list(conditions["aws:RequestTag/kubernetes-service-account"])) == accounts


def test_one_pod_identity_association_per_service_account(planned: dict[str, dict[str, Any]]) -> None:
    associations = {
        (r["values"]["namespace"], r["values"]["service_account"])
        for address, r in planned.items()
        if address.startswith("aws_eks_pod_identity_association.")
    }
    expected = {(ns, sa) for ns, accounts in EXPECTED_SERVICE_ACCOUNTS.values() for sa in accounts}
    assert associations == expected


def test_bad_input_is_refused_with_its_name(plan_workdir: Path, offline_terraform: tuple[Path, dict[str, str]]) -> None:
    terraform, env = offline_terraform
    code, output = _plan(
        terraform,
        env,
        plan_workdir,
        "-var=datalake_bucket_arn=arn:aws:s3:::cp-test-datalake/*",
        "-var=task_namespace=Crypto_Tasks",
    )
    assert code != 0
    text = " ".join(output.split())
    assert "datalake_bucket_arn must be an S3 bucket ARN" in text, output
    assert "task_namespace must be a valid Kubernetes namespace name" in text, output
