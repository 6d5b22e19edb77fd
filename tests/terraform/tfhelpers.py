"""Helpers of the Terraform tests: HCL parsing (python-hcl2) and an offline Terraform runner."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2
from hcl2 import SerializationOptions

from tests.conftest import REPO

TERRAFORM_DIR = REPO / "terraform"
MODULES_DIR = TERRAFORM_DIR / "modules"
ENVS_DIR = TERRAFORM_DIR / "envs"
FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"
# Where this machine image keeps an unpacked mirror of hashicorp/aws (docs/deploy-eks.md, "Offline tests").
DEFAULT_PROVIDER_MIRROR = Path("/opt/tf-plugins")
AWS_PROVIDER = "registry.terraform.io/hashicorp/aws"

_HCL_OPTIONS = SerializationOptions(strip_string_quotes=True, explicit_blocks=False)


def module_dirs() -> list[Path]:
    return sorted(p for p in MODULES_DIR.iterdir() if p.is_dir())


def env_dirs() -> list[Path]:
    return sorted(p for p in ENVS_DIR.iterdir() if p.is_dir())


def rel(path: Path) -> str:
    return str(path.relative_to(TERRAFORM_DIR))


def load_file(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        try:
            return hcl2.load(handle, serialization_options=_HCL_OPTIONS)
        except Exception as exc:  # the parser raises several lark error types
            raise AssertionError(f"{path}: not parseable HCL: {exc}") from exc


def load_dir(directory: Path) -> dict[str, list[Any]]:
    """All top-level blocks of a Terraform directory, merged across its .tf files."""
    merged: dict[str, list[Any]] = {}
    for tf in sorted(directory.glob("*.tf")):
        for key, value in load_file(tf).items():
            if key.startswith("__"):
                continue
            merged.setdefault(key, []).extend(value if isinstance(value, list) else [value])
    return merged


def blocks(parsed: dict[str, list[Any]], kind: str) -> dict[str, dict[str, Any]]:
    """Named blocks (variable, output, module) as {name: body}."""
    return {name: body for item in parsed.get(kind, []) for name, body in item.items()}


def typed_blocks(parsed: dict[str, list[Any]], kind: str) -> dict[str, dict[str, dict[str, Any]]]:
    """resource/data blocks as {type: {name: body}}."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for item in parsed.get(kind, []):
        for rtype, named in item.items():
            for name, body in named.items():
                out.setdefault(rtype, {})[name] = body
    return out


def locals_of(parsed: dict[str, list[Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for item in parsed.get("locals", []):
        merged.update({k: v for k, v in item.items() if not k.startswith("__")})
    return merged


def resolve_local(value: Any, local_values: dict[str, Any]) -> Any:
    """`${local.x}` -> the literal value of local x (one level), anything else unchanged."""
    if isinstance(value, str):
        match = re.fullmatch(r"\$\{local\.([A-Za-z0-9_]+)\}", value)
        if match:
            return local_values[match.group(1)]
    return value


@dataclass(frozen=True)
class RemoteModule:
    source: str
    version: str
    via: str


def remote_modules(directory: Path, seen: frozenset[Path] = frozenset()) -> list[RemoteModule]:
    """Registry/remote module calls reachable from a directory through local module calls."""
    found: list[RemoteModule] = []
    for name, body in blocks(load_dir(directory), "module").items():
        source = str(body.get("source", ""))
        if source.startswith(("./", "../")):
            target = (directory / source).resolve()
            if target not in seen:
                found.extend(remote_modules(target, seen | {directory.resolve()}))
        else:
            version = str(body.get("version", "(no version)"))
            found.append(RemoteModule(source, version, f"{rel(directory)} module.{name}"))
    return found


@dataclass(frozen=True)
class Toolchain:
    terraform: Path | None
    mirror: Path | None

    def missing(self) -> str | None:
        """What prevents offline init/validate, in words, or None when everything is present."""
        if self.terraform is None:
            return "the terraform binary is not on PATH (nor in $TERRAFORM)"
        if self.mirror is None:
            return (
                f"no filesystem mirror of {AWS_PROVIDER} found (looked in $TF_PROVIDER_MIRROR and "
                f"{DEFAULT_PROVIDER_MIRROR}); registry.terraform.io is unreachable offline"
            )
        return None


def find_toolchain() -> Toolchain:
    explicit = os.environ.get("TERRAFORM")
    terraform = Path(explicit) if explicit else (Path(p) if (p := shutil.which("terraform")) else None)
    if terraform is not None and not terraform.is_file():
        terraform = None
    mirror: Path | None = None
    for candidate in filter(None, [os.environ.get("TF_PROVIDER_MIRROR"), str(DEFAULT_PROVIDER_MIRROR)]):
        root = Path(candidate)
        # Unpacked (<version>/<os_arch>/) or packed (*.zip) layouts both count.
        if any((root / AWS_PROVIDER).glob("*/linux_amd64")) or any((root / AWS_PROVIDER).glob("*.zip")):
            mirror = root
            break
    return Toolchain(terraform, mirror)


def write_cli_config(path: Path, mirror: Path) -> Path:
    """A CLI config of our own: the aws provider from the mirror only, never the network.

    The machine's environment sets TF_CLI_CONFIG_FILE=/root/.terraformrc, a file that does not exist,
    which is why a bare `terraform version` warns "There are some problems with the CLI configuration".
    """
    path.write_text(
        "provider_installation {\n"
        f'  filesystem_mirror {{\n    path    = "{mirror}"\n    include = ["{AWS_PROVIDER}"]\n  }}\n'
        f'  direct {{\n    exclude = ["{AWS_PROVIDER}"]\n  }}\n'
        "}\n"
    )
    return path


def terraform_env(cli_config: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    env.update({"TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1", "TF_INPUT": "0"})
    if cli_config is not None:
        env["TF_CLI_CONFIG_FILE"] = str(cli_config)
    return env


def run_terraform(
    terraform: Path, args: list[str], cwd: Path, env: dict[str, str], timeout: int = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(terraform), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def copy_tree(dest: Path) -> Path:
    """terraform/ plus the test fixtures, copied so init never writes into the working tree."""
    target = dest / "terraform"
    shutil.copytree(
        TERRAFORM_DIR, target, ignore=shutil.ignore_patterns(".terraform", ".terraform.lock.hcl", "*.tfstate*")
    )
    shutil.copytree(FIXTURES_DIR, target / "fixtures")
    return target
