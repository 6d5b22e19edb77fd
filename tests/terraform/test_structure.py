"""Structural tests of terraform/ with python-hcl2: conventions, encryption, exposure, least privilege.

They need no Terraform binary, so they run everywhere; the offline plan (test_identities_plan.py)
checks the rendered IAM JSON where Terraform is available.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from packaging.specifiers import SpecifierSet

from tests.terraform.tfhelpers import (
    ENVS_DIR,
    FIXTURES_DIR,
    MODULES_DIR,
    TERRAFORM_DIR,
    blocks,
    env_dirs,
    load_dir,
    load_file,
    locals_of,
    module_dirs,
    rel,
    remote_modules,
    resolve_local,
    typed_blocks,
)

ALL_DIRS = [*module_dirs(), *env_dirs(), FIXTURES_DIR / "identities_plan"]
MODULE_FILES = {"main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md"}
ENV_FILES = {
    "main.tf",
    "variables.tf",
    "outputs.tf",
    "versions.tf",
    "backend.tf",
    "providers.tf",
    "terraform.tfvars.example",
    "backend.hcl.example",
}
EXPECTED_MODULES = {"network", "eks", "rds", "s3", "ecr", "identities", "secrets"}
WORKING = ["raw/", "staging/", "validated/", "quarantine/", "quality/", "analytics/", "alerts/", "reports/"]
MIRROR_PROVIDER_VERSION = "5.100.0"

# The S3 access design (docs/deploy-eks.md, "Identities"); the plan test checks the rendered policies.
EXPECTED_ACCESS: dict[str, dict[str, dict[str, list[str]]]] = {
    "ingest": {"datalake": {"read": ["raw/"], "write": ["raw/", "staging/", "runs/"], "delete": []}},
    "validate": {
        "datalake": {
            "read": ["staging/", "validated/", "quarantine/", "quality/", "runs/daily/"],
            "write": ["validated/", "quarantine/", "quality/", "runs/"],
            "delete": ["validated/", "quarantine/", "quality/"],
        }
    },
    "transform": {
        "datalake": {
            "read": ["validated/", "quality/", "analytics/indicators/", "alerts/", "reports/", "runs/daily/"],
            "write": ["validated/market_snapshots_daily/", "analytics/", "alerts/", "reports/", "runs/"],
            "delete": ["analytics/indicators/", "alerts/", "reports/"],
        }
    },
    "archive": {
        "datalake": {"read": [*WORKING, "manifests/", "runs/"], "write": ["manifests/", "runs/"], "delete": WORKING},
        "archive": {"read": ["archive/"], "write": ["archive/"], "delete": []},
    },
    "airflow": {
        "datalake": {"read": ["alerts/"], "write": [], "delete": []},
        "airflow_logs": {"read": ["${var.airflow_logs_prefix}"], "write": ["${var.airflow_logs_prefix}"], "delete": []},
    },
}


def _parsed(directory: Path) -> dict[str, list[Any]]:
    return load_dir(directory)


def _s3() -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, Any]]:
    parsed = _parsed(MODULES_DIR / "s3")
    return typed_blocks(parsed, "resource"), locals_of(parsed)


def _one(value: Any) -> dict[str, Any]:
    """A nested block as hcl2 gives it (a list of one dict)."""
    assert isinstance(value, list) and len(value) == 1, value
    return value[0]


def _buckets_covered(body: dict[str, Any], bucket_keys: list[str]) -> set[str]:
    """Which buckets a bucket-attached resource applies to: this[<key>] or access_logs."""
    ref = str(body["bucket"])
    if ref == "${aws_s3_bucket.this[each.key].id}":
        assert body.get("for_each") == "${local.buckets}", (
            f"for_each must cover all buckets, got {body.get('for_each')}"
        )
        return {f"this[{k}]" for k in bucket_keys}
    if match := re.fullmatch(r'\$\{aws_s3_bucket\.this\["([a-z_]+)"\]\.id\}', ref):
        return {f"this[{match.group(1)}]"}
    if ref == "${aws_s3_bucket.access_logs.id}":
        return {"access_logs"}
    raise AssertionError(f"unrecognised bucket reference {ref}")


def _coverage(resources: dict[str, dict[str, dict[str, Any]]], rtype: str, keys: list[str]) -> set[str]:
    covered: set[str] = set()
    for body in resources.get(rtype, {}).values():
        covered |= _buckets_covered(body, keys)
    return covered


# --- conventions --------------------------------------------------------------------------------------


def test_modules_and_files_follow_the_conventions() -> None:
    assert {d.name for d in module_dirs()} == EXPECTED_MODULES
    for directory in module_dirs():
        missing = MODULE_FILES - {p.name for p in directory.iterdir()}
        assert not missing, f"{rel(directory)} lacks {sorted(missing)}"
    assert {d.name for d in env_dirs()} == {"dev", "prod"}
    for directory in env_dirs():
        missing = ENV_FILES - {p.name for p in directory.iterdir()}
        assert not missing, f"{rel(directory)} lacks {sorted(missing)}"


@pytest.mark.parametrize("directory", ALL_DIRS, ids=lambda d: d.name if d.parent == FIXTURES_DIR else rel(d))
def test_every_variable_typed_and_described_every_output_described(directory: Path) -> None:
    parsed = _parsed(directory)
    for name, body in blocks(parsed, "variable").items():
        assert str(body.get("description", "")).strip(), f"{directory}: variable {name} has no description"
        assert "type" in body, f"{directory}: variable {name} has no type"
    for name, body in blocks(parsed, "output").items():
        assert str(body.get("description", "")).strip(), f"{directory}: output {name} has no description"


@pytest.mark.parametrize("directory", [*module_dirs(), *env_dirs()], ids=rel)
def test_versions_pin_terraform_and_an_aws_provider_the_mirror_satisfies(directory: Path) -> None:
    terraform = _one(load_file(directory / "versions.tf")["terraform"])
    required = SpecifierSet(terraform["required_version"].replace(" ", ""))
    assert "1.11.4" in required
    aws = _one(terraform["required_providers"])["aws"]
    assert aws["source"] == "hashicorp/aws"
    constraint = SpecifierSet(aws["version"].replace(" ", ""))
    assert MIRROR_PROVIDER_VERSION in constraint, f"{rel(directory)}: {aws['version']} excludes the mirror's 5.100.0"
    assert "6.0.0" not in constraint, f"{rel(directory)}: {aws['version']} admits the 6.x major (breaking)"
    if directory.parent == ENVS_DIR:
        assert "1.10.9" not in required, "use_lockfile needs Terraform >= 1.11"


def test_registry_modules_are_pinned() -> None:
    remote = {m for d in module_dirs() for m in remote_modules(d)}
    assert {m.source for m in remote} == {"terraform-aws-modules/vpc/aws", "terraform-aws-modules/eks/aws"}
    for module in remote:
        assert re.fullmatch(r"~> \d+\.\d+", module.version), f"{module.source}: pin {module.version!r}"


def test_checkov_skips_carry_a_reason() -> None:
    found = 0
    for tf in TERRAFORM_DIR.rglob("*.tf"):
        for line in tf.read_text().splitlines():
            if "checkov:skip" in line:
                match = re.search(r"#checkov:skip=(CKV2?_[A-Z0-9]+_\d+):(.+)$", line.strip())
                assert match, f"{tf}: malformed skip {line.strip()!r}"
                assert len(match.group(2).strip()) >= 30, f"{tf}: skip {match.group(1)} needs a real reason"
                found += 1
    assert found > 0


# --- S3 -----------------------------------------------------------------------------------------------


def test_buckets_are_created_only_by_the_s3_module() -> None:
    for directory in [*module_dirs(), *env_dirs()]:
        if directory.name != "s3":
            assert "aws_s3_bucket" not in typed_blocks(_parsed(directory), "resource"), rel(directory)


def test_every_bucket_is_encrypted_private_versioned_tls_only_and_has_lifecycle() -> None:
    resources, local_values = _s3()
    keys = list(local_values["buckets"])
    assert set(keys) == {"datalake", "archive", "airflow_logs"}
    all_buckets = {f"this[{k}]" for k in keys} | {"access_logs"}
    assert set(resources["aws_s3_bucket"]) == {"this", "access_logs"}
    for rtype in (
        "aws_s3_bucket_server_side_encryption_configuration",
        "aws_s3_bucket_public_access_block",
        "aws_s3_bucket_versioning",
        "aws_s3_bucket_ownership_controls",
        "aws_s3_bucket_policy",
        "aws_s3_bucket_lifecycle_configuration",
    ):
        assert _coverage(resources, rtype, keys) == all_buckets, rtype
    # The access-log target itself is the only bucket without access logging.
    assert _coverage(resources, "aws_s3_bucket_logging", keys) == all_buckets - {"access_logs"}
    for body in resources["aws_s3_bucket_public_access_block"].values():
        for flag in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
            assert body[flag] is True, flag
    for body in resources["aws_s3_bucket_versioning"].values():
        assert _one(body["versioning_configuration"])["status"] == "Enabled"
    for body in resources["aws_s3_bucket_ownership_controls"].values():
        assert _one(body["rule"])["object_ownership"] == "BucketOwnerEnforced"


def test_data_buckets_use_the_kms_key_and_access_logs_sse_s3() -> None:
    resources, _ = _s3()
    sse = resources["aws_s3_bucket_server_side_encryption_configuration"]
    data_default = _one(_one(sse["this"]["rule"])["apply_server_side_encryption_by_default"])
    assert data_default == {"sse_algorithm": "aws:kms", "kms_master_key_id": "${aws_kms_key.s3.arn}"}
    logs_default = _one(_one(sse["access_logs"]["rule"])["apply_server_side_encryption_by_default"])
    # Server access logging cannot deliver to SSE-KMS buckets: SSE-S3 there, and nowhere else.
    assert logs_default == {"sse_algorithm": "AES256"}
    assert resources["aws_kms_key"]["s3"]["enable_key_rotation"] is True


def test_bucket_policies_deny_non_tls_for_every_bucket() -> None:
    parsed = _parsed(MODULES_DIR / "s3")
    doc = typed_blocks(parsed, "data")["aws_iam_policy_document"]["tls_only"]
    assert "aws_s3_bucket.this" in doc["for_each"] and "aws_s3_bucket.access_logs.arn" in doc["for_each"]
    statements = {s["sid"]: s for s in doc["statement"]}
    deny = statements["DenyInsecureTransport"]
    assert deny["effect"] == "Deny" and deny["actions"] == ["s3:*"]
    assert deny["resources"] == ["${each.value}", "${each.value}/*"]
    assert _one(deny["principals"]) == {"type": "*", "identifiers": ["*"]}
    assert _one(deny["condition"]) == {"test": "Bool", "variable": "aws:SecureTransport", "values": ["false"]}
    for policy in typed_blocks(parsed, "resource")["aws_s3_bucket_policy"].values():
        assert "data.aws_iam_policy_document.tls_only[" in policy["policy"]


def test_no_allow_statement_with_wildcards_anywhere() -> None:
    for directory in [*module_dirs(), *env_dirs()]:
        docs = typed_blocks(_parsed(directory), "data").get("aws_iam_policy_document", {})
        for name, doc in docs.items():
            statements = list(doc.get("statement", []))
            statements += [_one(d["statement"]["content"]) for d in doc.get("dynamic", []) if "statement" in d]
            for statement in statements:
                if statement.get("effect", "Allow") != "Allow":
                    continue
                actions = statement["actions"] if isinstance(statement["actions"], list) else []
                assert not any("*" in a for a in actions), f"{rel(directory)} {name}: {actions}"
                resources = statement.get("resources", [])
                assert "*" not in (resources if isinstance(resources, list) else [resources]), f"{name}: *"


def test_lifecycle_expires_working_prefixes_and_keeps_the_archive() -> None:
    resources, local_values = _s3()
    assert local_values["working_prefixes"] == WORKING
    lifecycle = resources["aws_s3_bucket_lifecycle_configuration"]
    dynamic_rule = _one(lifecycle["datalake"]["dynamic"])["rule"]
    assert dynamic_rule["for_each"] == "${local.working_prefixes}"
    content = _one(dynamic_rule["content"])
    assert _one(content["filter"]) == {"prefix": "${rule.value}"}
    assert _one(content["expiration"])["days"] == "${var.retention_working_days + var.lifecycle_grace_days}"
    for rule in lifecycle["datalake"]["rule"]:
        assert "expiration" not in rule, f"{rule['id']}: only working prefixes expire"
    archive_rule = _one(lifecycle["archive"]["rule"])
    assert "expiration" not in archive_rule
    assert [t["storage_class"] for t in archive_rule["transition"]] == ["GLACIER_IR", "DEEP_ARCHIVE"]
    for body in lifecycle.values():
        rules = list(body.get("rule", [])) + [_one(d["rule"]["content"]) for d in body.get("dynamic", [])]
        for rule in rules:
            assert _one(rule["abort_incomplete_multipart_upload"])["days_after_initiation"] <= 7


# --- identities ---------------------------------------------------------------------------------------


def test_access_design_exactly_as_documented() -> None:
    local_values = locals_of(_parsed(MODULES_DIR / "identities"))
    assert local_values["s3_access"] == EXPECTED_ACCESS
    assert local_values["working_prefixes"] == WORKING
    assert local_values["s3_actions"] == {
        "read": ["s3:GetObject"],
        "write": ["s3:PutObject", "s3:AbortMultipartUpload"],
        "delete": ["s3:DeleteObject"],
    }


def test_workloads_use_the_deployment_names() -> None:
    parsed = _parsed(MODULES_DIR / "identities")
    workloads = locals_of(parsed)["workloads"]
    for stage in ("ingest", "validate", "transform", "archive"):
        assert workloads[stage] == {"namespace": "${var.task_namespace}", "service_accounts": [f"cryptopipe-{stage}"]}
    variables = blocks(parsed, "variable")
    assert variables["task_namespace"]["default"] == "crypto-tasks"
    assert variables["airflow_namespace"]["default"] == "airflow"
    assert variables["airflow_release_name"]["default"] == "airflow"
    assert set(variables["airflow_components"]["default"]) == {
        "worker",
        "triggerer",
        "scheduler",
        "api-server",
        "dag-processor",
    }


# --- RDS ----------------------------------------------------------------------------------------------


def test_rds_is_encrypted_private_tls_only_and_managed_password() -> None:
    parsed = _parsed(MODULES_DIR / "rds")
    resources = typed_blocks(parsed, "resource")
    db = resources["aws_db_instance"]["this"]
    assert db["storage_encrypted"] is True and db["kms_key_id"] == "${aws_kms_key.rds.arn}"
    assert db["publicly_accessible"] is False
    assert db["manage_master_user_password"] is True and "password" not in db
    assert db["master_user_secret_kms_key_id"] == "${aws_kms_key.rds.arn}"
    assert db["performance_insights_enabled"] is True
    assert db["performance_insights_kms_key_id"] == "${aws_kms_key.rds.arn}"
    assert db["backup_retention_period"] == "${var.backup_retention_period}"
    assert db["multi_az"] == "${var.multi_az}" and db["deletion_protection"] == "${var.deletion_protection}"
    params = {p["name"]: p["value"] for p in resources["aws_db_parameter_group"]["this"]["parameter"]}
    assert params["rds.force_ssl"] == "1"
    # Reachable from the listed security groups only: no CIDR-based rule, no other rule type.
    assert set(resources) >= {"aws_vpc_security_group_ingress_rule"}
    assert "aws_security_group_rule" not in resources and "aws_vpc_security_group_egress_rule" not in resources
    for rule in resources["aws_vpc_security_group_ingress_rule"].values():
        assert rule["referenced_security_group_id"] == "${each.value}"
        assert not {"cidr_ipv4", "cidr_ipv6", "prefix_list_id"} & set(rule)
        assert rule["from_port"] == rule["to_port"] == 5432
    assert "ingress" not in resources["aws_security_group"]["this"]
    variables = blocks(parsed, "variable")
    assert variables["multi_az"]["default"] is True and variables["deletion_protection"]["default"] is True
    assert "var.backup_retention_period >= 1" in _one(variables["backup_retention_period"]["validation"])["condition"]


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_environment_database_settings(env: str) -> None:
    parsed = _parsed(ENVS_DIR / env)
    local_values = locals_of(parsed)
    rds = blocks(parsed, "module")["rds"]
    settings = {
        k: resolve_local(rds[k], local_values) for k in ("multi_az", "deletion_protection", "skip_final_snapshot")
    }
    retention = resolve_local(rds["backup_retention_period"], local_values)
    assert retention >= 1, "automated backups are on in every environment"
    if env == "prod":
        assert settings == {"multi_az": True, "deletion_protection": True, "skip_final_snapshot": False}
        assert retention >= 7
        assert resolve_local(blocks(parsed, "module")["network"]["single_nat_gateway"], local_values) is False
    assert rds["allowed_security_group_ids"] == {"eks_nodes": "${module.eks.node_security_group_id}"}


# --- ECR, secrets, EKS --------------------------------------------------------------------------------


def test_ecr_repositories_immutable_scanned_encrypted_with_lifecycle() -> None:
    parsed = _parsed(MODULES_DIR / "ecr")
    resources = typed_blocks(parsed, "resource")
    repo = resources["aws_ecr_repository"]["this"]
    assert repo["image_tag_mutability"] == "IMMUTABLE"
    assert _one(repo["image_scanning_configuration"])["scan_on_push"] is True
    assert _one(repo["encryption_configuration"])["encryption_type"] == "KMS"
    assert resources["aws_ecr_lifecycle_policy"]["this"]["for_each"] == "${aws_ecr_repository.this}"
    assert blocks(parsed, "variable")["images"]["default"] == [
        "cryptopipe-ingest",
        "cryptopipe-validate",
        "cryptopipe-transform",
        "cryptopipe-archive",
        "cryptopipe-airflow",
    ]


def test_secret_values_never_enter_terraform_state() -> None:
    for directory in [*module_dirs(), *env_dirs()]:
        resources = typed_blocks(_parsed(directory), "resource")
        assert "aws_secretsmanager_secret_version" not in resources, rel(directory)
    resources = typed_blocks(_parsed(MODULES_DIR / "secrets"), "resource")
    assert resources["aws_secretsmanager_secret"]["this"]["kms_key_id"] == "${aws_kms_key.secrets.arn}"
    local_values = locals_of(_parsed(MODULES_DIR / "secrets"))
    assert set(local_values["secrets"]) == {
        "coingecko_api_key",
        "slack_webhook_url",
        "airflow_fernet_key",
        "airflow_jwt_secret",
        "airflow_api_secret_key",
        "airflow_redis_password",
        "airflow_broker_url",
    }


def test_eks_private_endpoint_logging_secrets_encryption_pod_identity() -> None:
    parsed = _parsed(MODULES_DIR / "eks")
    eks = blocks(parsed, "module")["eks"]
    assert eks["cluster_endpoint_private_access"] is True
    assert set(eks["cluster_enabled_log_types"]) == {"api", "audit", "authenticator", "controllerManager", "scheduler"}
    assert eks["create_kms_key"] is True and eks["cluster_encryption_config"] == {"resources": ["secrets"]}
    assert "eks-pod-identity-agent" in eks["cluster_addons"]
    condition = _one(blocks(parsed, "variable")["endpoint_public_access_cidrs"]["validation"])["condition"]
    assert '"0.0.0.0/0"' in condition


# --- environments -------------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_environment_backend_tags_and_examples(env: str) -> None:
    directory = ENVS_DIR / env
    parsed = _parsed(directory)
    backend = _one(_one(load_file(directory / "backend.tf")["terraform"])["backend"])["s3"]
    assert backend["use_lockfile"] is True and backend["encrypt"] is True
    assert backend["key"] == f"cryptopipe/{env}/terraform.tfstate"
    assert "dynamodb_table" not in backend
    provider = blocks(parsed, "provider")["aws"]
    assert _one(provider["default_tags"])["tags"] == "${local.tags}"
    tags = locals_of(parsed)["tags"]
    for key in ("Project", "Environment", "ManagedBy"):
        assert f"{key} = " in tags
    assert locals_of(parsed)["environment"] == env
    assert {name for name in blocks(parsed, "module")} == EXPECTED_MODULES
    example = load_file(directory / "terraform.tfvars.example")
    unknown = set(example) - set(blocks(parsed, "variable")) - {"__comments__"}
    assert not unknown, f"{env}/terraform.tfvars.example sets undeclared variables {sorted(unknown)}"
    assert {"bucket", "region"} <= set(load_file(directory / "backend.hcl.example"))
    outputs = blocks(parsed, "output")
    assert {"image_registry", "storage_uri", "storage_archive_uri", "rds_address", "helm_handover"} <= set(outputs)


@pytest.mark.parametrize("directory", module_dirs(), ids=rel)
def test_module_readme_lists_every_input_and_output(directory: Path) -> None:
    readme = (directory / "README.md").read_text()
    parsed = _parsed(directory)
    for kind in ("variable", "output"):
        for name in blocks(parsed, kind):
            assert f"| `{name}` |" in readme, f"{rel(directory)}/README.md does not list {kind} {name}"
