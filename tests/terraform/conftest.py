"""Fixtures of the Terraform tests: the offline toolchain and a scratch copy of terraform/."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.terraform.tfhelpers import Toolchain, copy_tree, find_toolchain, terraform_env, write_cli_config


@pytest.fixture(scope="session")
def toolchain() -> Toolchain:
    return find_toolchain()


@pytest.fixture(scope="session")
def offline_terraform(toolchain: Toolchain, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """(terraform binary, environment with our own CLI config), or a skip naming what is missing.

    Neither the binary nor the provider mirror is installed by `make tools` (they come with the machine
    image, see ../shared/notes/offline-toolbox.md), so their absence is a skip with the exact reason.
    """
    missing = toolchain.missing()
    if missing:
        pytest.skip(f"terraform init/validate/plan skipped: {missing}")
    assert toolchain.terraform is not None and toolchain.mirror is not None
    config = write_cli_config(tmp_path_factory.mktemp("tfcli") / "offline.tfrc", toolchain.mirror)
    return toolchain.terraform, terraform_env(config)


@pytest.fixture(scope="session")
def tf_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch copy of terraform/ (with the fixtures) where init may write .terraform/ and lock files."""
    return copy_tree(tmp_path_factory.mktemp("tfcopy"))
