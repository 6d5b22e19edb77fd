"""docs/deploy-eks.md stays in step with the Terraform outputs and the repository paths it sends users to."""

from __future__ import annotations

import re

from tests.conftest import REPO
from tests.terraform.tfhelpers import ENVS_DIR, blocks, load_dir

DOC = REPO / "docs" / "deploy-eks.md"


def test_every_handover_value_is_mapped_in_the_walkthrough() -> None:
    text = DOC.read_text()
    handover = blocks(load_dir(ENVS_DIR / "prod"), "output")["helm_handover"]["value"]
    for key in handover:
        if key in {"cluster_name", "rds_db_name"}:
            continue  # used by the cluster-access and database steps, not a values key
        assert f"`{key}`" in text, f"helm_handover.{key} is not mapped to a Helm value in {DOC.name}"


def test_outputs_named_in_the_walkthrough_exist() -> None:
    text = DOC.read_text()
    outputs = set(blocks(load_dir(ENVS_DIR / "prod"), "output"))
    handover = set(blocks(load_dir(ENVS_DIR / "prod"), "output")["helm_handover"]["value"])
    named = set(re.findall(r"terraform output (?:-json |-raw )?([a-z_]+)", text))
    assert named, "the walk-through reads no Terraform output"
    assert named <= outputs, f"unknown outputs {sorted(named - outputs)}"
    read_from_handover = set(re.findall(r"jq -r \.([a-z_]+) <<<\"\$H\"", text))
    assert read_from_handover, "the walk-through reads nothing from helm_handover"
    assert read_from_handover <= handover, f"not in helm_handover: {sorted(read_from_handover - handover)}"


def test_paths_in_the_walkthrough_exist() -> None:
    text = DOC.read_text()
    paths = set(re.findall(r"`((?:k8s|charts|terraform)/[A-Za-z0-9_./-]+?)/?`", text))
    assert {
        "k8s/argocd/overlays/eks",
        "charts/airflow/values-eks.yaml",
        "charts/crypto-pipeline/values-eks.yaml",
    } <= paths
    for path in paths:
        if "*" in path or "<" in path:
            continue
        assert (REPO / path).exists(), f"{DOC.name} refers to {path}, which does not exist"
