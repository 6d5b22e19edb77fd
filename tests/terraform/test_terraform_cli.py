"""terraform fmt and offline init/validate of every module that resolves without the registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.terraform.tfhelpers import (
    FIXTURES_DIR,
    TERRAFORM_DIR,
    Toolchain,
    env_dirs,
    module_dirs,
    rel,
    remote_modules,
    run_terraform,
    terraform_env,
)

ROOTS = [*module_dirs(), *env_dirs()]
# The modules designed to need nothing but hashicorp/aws; a registry dependency creeping into one of
# them would silently shrink what CI validates, so it is a failure here.
OFFLINE_MODULES = {"modules/ecr", "modules/identities", "modules/rds", "modules/s3", "modules/secrets"}


def test_fmt_check(toolchain: Toolchain) -> None:
    if toolchain.terraform is None:
        pytest.skip("terraform fmt skipped: the terraform binary is not on PATH (nor in $TERRAFORM)")
    for target in (TERRAFORM_DIR, FIXTURES_DIR):
        result = run_terraform(
            toolchain.terraform, ["fmt", "-check", "-recursive", "-diff", str(target)], target, terraform_env(None)
        )
        assert result.returncode == 0, f"terraform fmt -check failed in {target}:\n{result.stdout}{result.stderr}"


def test_offline_modules_are_the_designed_ones() -> None:
    offline = {rel(d) for d in ROOTS if not remote_modules(d)}
    assert offline == OFFLINE_MODULES


@pytest.mark.parametrize("root", ROOTS, ids=rel)
def test_init_and_validate(root: Path, offline_terraform: tuple[Path, dict[str, str]], tf_copy: Path) -> None:
    remote = remote_modules(root)
    if remote:
        needs = "; ".join(f"{m.source} {m.version} (via {m.via})" for m in remote)
        pytest.skip(
            f"terraform validate skipped for {rel(root)}: needs registry module(s) {needs}, "
            "which cannot be downloaded offline (only the hashicorp/aws provider mirror is available)"
        )
    terraform, env = offline_terraform
    workdir = tf_copy / rel(root)
    init = run_terraform(terraform, ["init", "-backend=false", "-input=false", "-no-color"], workdir, env)
    assert init.returncode == 0, f"terraform init failed in {rel(root)}:\n{init.stdout}{init.stderr}"
    validate = run_terraform(terraform, ["validate", "-no-color"], workdir, env)
    assert validate.returncode == 0, f"terraform validate failed in {rel(root)}:\n{validate.stdout}{validate.stderr}"
    assert "The configuration is valid" in validate.stdout
