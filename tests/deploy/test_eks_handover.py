"""The EKS hand-over, end to end: Terraform's `helm_handover` output (parsed with python-hcl2) -> the marked
placeholders of charts/*/values-eks.yaml and k8s/eks/cluster-secret-store.yaml -> k8s/eks/render-values.py ->
the rendered files Argo CD reads (k8s/argocd/overlays/eks) -> the objects our chart renders from them."""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import hcl2
import pytest
import yaml
from deploy_support import AIRFLOW_VALUES, CHART, ROOT, deep_merge, helm_template, run, validate_object
from hcl2 import SerializationOptions
from test_deploy_airflow_values import errors_of

TF = ROOT / "terraform"
EXAMPLE = ROOT / "k8s" / "eks" / "helm_handover.example.json"
DOC = ROOT / "docs" / "deploy-eks.md"
# Handover keys no values file takes, and where they are used instead.
UNUSED = {"cluster_name": 'jq -r .cluster_name <<<"$H"'}  # docs/deploy-eks.md step 5: aws eks update-kubeconfig
# Strings that only an AWS-specific value contains: each occurrence must be a marked placeholder.
AWS_TOKENS = ("111122223333", "us-east-1", "cryptopipe-prod", "amazonaws.com", "arn:aws")
STORE = "aws-secrets-manager"


@cache
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_values", ROOT / "k8s" / "eks" / "render-values.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def hcl_dir(directory: Path) -> dict[str, list[Any]]:
    merged: dict[str, list[Any]] = {}
    options = SerializationOptions(strip_string_quotes=True, explicit_blocks=False)
    for path in sorted(directory.glob("*.tf")):
        with path.open() as handle:
            for key, value in hcl2.load(handle, serialization_options=options).items():
                if not key.startswith("__"):
                    merged.setdefault(key, []).extend(value if isinstance(value, list) else [value])
    return merged


def named(parsed: dict[str, list[Any]], kind: str) -> dict[str, Any]:
    return {name: body for block in parsed.get(kind, []) for name, body in block.items()}


def first_local(parsed: dict[str, list[Any]], name: str) -> Any:
    return next(block[name] for block in parsed["locals"] if name in block)


@cache
def handover_hcl(env: str = "prod") -> dict[str, str]:
    return named(hcl_dir(TF / "envs" / env), "output")["helm_handover"]["value"]


@cache
def airflow_secret_suffixes() -> dict[str, str]:
    """Terraform secrets module: airflow_* purpose -> name suffix (the Kubernetes Secret name as well)."""
    secrets = first_local(hcl_dir(TF / "modules" / "secrets"), "secrets")
    return {k: v["suffix"] for k, v in secrets.items() if k.startswith("airflow_")}


def example() -> dict[str, Any]:
    return json.loads(EXAMPLE.read_text())


def templates() -> dict[str, str]:
    return {t: (ROOT / t).read_text() for t in script().TEMPLATES}


def markers() -> list[Any]:
    return [m for t, text in templates().items() for m in script().find_markers(t, text)]


# --- Terraform <-> the example handover ------------------------------------------------------------------------


def test_handover_is_the_same_object_in_every_environment() -> None:
    assert set(handover_hcl("prod")) == set(handover_hcl("dev"))
    assert handover_hcl("prod") == handover_hcl("dev"), "envs/dev and envs/prod hand over different values"


def test_example_handover_has_exactly_the_terraform_keys() -> None:
    assert set(example()) == set(handover_hcl())
    assert set(example()["airflow_secret_names"]) == set(airflow_secret_suffixes())


def test_example_handover_follows_terraform_naming() -> None:
    """Each example value is what the Terraform expression gives for prod / 111122223333 / us-east-1."""
    env_locals = hcl_dir(TF / "envs" / "prod")
    environment = first_local(env_locals, "environment")
    name = first_local(env_locals, "name").replace("${local.environment}", environment)
    account, region = "111122223333", "us-east-1"
    buckets = {
        k: v.replace("${var.name}", name).replace("${local.account_id}", account)
        for k, v in first_local(hcl_dir(TF / "modules" / "s3"), "buckets").items()
    }
    registry = f"{account}.dkr.ecr.{region}.amazonaws.com/{environment}"  # repository_namespace = environment
    vpc = ipaddress.ip_network(named(env_locals, "variable")["vpc_cidr"]["default"])
    db_subnets = [str(s) for s in list(vpc.subnets(new_prefix=24))[200:203]]  # cidrsubnet(vpc_cidr, 8, 200 + i)
    secret = lambda suffix: f"{name}/{suffix}"  # noqa: E731  (secrets module: "${var.name}/${suffix}")
    expressions = {
        "var.region": region,
        "module.eks.cluster_name": name,
        "module.ecr.registry": registry,
        'module.ecr.repository_urls["cryptopipe-airflow"]': f"{registry}/cryptopipe-airflow",
        "module.s3.datalake_bucket_name": buckets["datalake"],
        "module.s3.archive_bucket_name": buckets["archive"],
        "module.s3.airflow_logs_bucket_name": buckets["airflow_logs"],
        "module.rds.db_name": named(hcl_dir(TF / "modules" / "rds"), "variable")["db_name"]["default"],
        'module.secrets.secret_names["coingecko_api_key"]': secret("coingecko-api-key"),
        'module.secrets.secret_names["slack_webhook_url"]': secret("slack-webhook-url"),
    }
    ex = example()
    for key, expression in handover_hcl().items():
        refs = re.findall(r"\$\{([^{}]+)\}", expression)
        if refs and all(r in expressions for r in refs):
            expected = re.sub(r"\$\{([^{}]+)\}", lambda m: expressions[m.group(1)], expression)
            assert ex[key] == expected, f"{key}: {ex[key]!r} is not what {expression} gives ({expected!r})"
    assert ex["airflow_secret_names"] == {k: secret(s) for k, s in airflow_secret_suffixes().items()}
    assert ex["database_subnet_cidrs"] == db_subnets
    assert ex["rds_address"].startswith(f"{name}-postgres.") and ex["rds_address"].endswith(
        f".{region}.rds.amazonaws.com"
    )
    assert ex["rds_master_secret_arn"].startswith(f"arn:aws:secretsmanager:{region}:{account}:secret:rds!db-")
    assert ex["rds_port"] == 5432


# --- the placeholders ------------------------------------------------------------------------------------------


def test_every_placeholder_names_a_handover_key_and_every_key_is_used() -> None:
    handover, found = set(handover_hcl()), markers()
    used: set[str] = set()
    for m in (m for m in found if m.source == "handover"):
        assert m.path[0] in handover, f"{m.where}: .{'.'.join(m.path)} is not a key of helm_handover"
        if m.path[0] == "airflow_secret_names":
            assert len(m.path) == 2 and m.path[1] in airflow_secret_suffixes(), f"{m.where}: {m.path}"
        else:
            assert len(m.path) == 1, f"{m.where}: .{'.'.join(m.path)}: only airflow_secret_names is nested"
        kind_ok = isinstance(example()[m.path[0]], list) == (m.mode == "c") or len(m.path) == 2
        assert kind_ok, f"{m.where}: jq -{m.mode} for .{m.path[0]} (lists take -c, scalars -r)"
        used.add(m.path[0])
    assert handover - used == set(UNUSED), f"unused and undocumented: {sorted(handover - used - set(UNUSED))}"
    nested = {m.path[1] for m in found if m.path[:1] == ("airflow_secret_names",)}
    assert nested == set(airflow_secret_suffixes())
    doc = DOC.read_text()
    for key, usage in UNUSED.items():
        assert usage in doc, f"helm_handover.{key} is not used by the values; {DOC.name} must use it: {usage}"


def test_only_the_airflow_image_tag_comes_from_the_command_line() -> None:
    tags = [m for m in markers() if m.source == "image-tag"]
    assert [(m.template, yaml_path_of(m)) for m in tags] == [("charts/airflow/values-eks.yaml", "tag")]


def yaml_path_of(marker: Any) -> str:
    line = (ROOT / marker.template).read_text().splitlines()[marker.line - 1]
    return line.split(":", 1)[0].strip().lstrip("- ")


def test_every_aws_specific_value_is_a_marked_placeholder() -> None:
    for template, text in templates().items():
        marked = {m.line for m in script().find_markers(template, text)}
        for number, line in enumerate(text.splitlines(), start=1):
            if line.lstrip().startswith("#"):
                continue
            hits = [t for t in AWS_TOKENS if t in line]
            assert not hits or number in marked, f"{template}:{number}: {hits} in an unmarked value: {line.strip()}"
        assert "crypto-pipeline-prod" not in text, f"{template}: old name prefix (Terraform uses cryptopipe-<env>)"


def test_placeholders_are_the_example_handover() -> None:
    """Rendering the templates with the example handover changes nothing but the header."""
    for template, text in templates().items():
        out = script().render(template, text, example(), "0000000example")
        assert out.splitlines()[2:] == text.splitlines(), f"{template}: a placeholder differs from {EXAMPLE.name}"


# --- rendering -------------------------------------------------------------------------------------------------


def other_handover() -> dict[str, Any]:
    """A dev environment in another account and region: every value differs from the placeholders."""
    text = json.dumps(example())
    for old, new in (("111122223333", "444455556666"), ("us-east-1", "eu-west-1"), ("prod", "dev")):
        text = text.replace(old, new)
    data = json.loads(text)
    data["rds_port"] = 6432
    data["rds_db_name"] = "airflow_meta"
    data["database_subnet_cidrs"] = ["10.40.200.0/24", "10.40.201.0/24", "10.40.202.0/24"]
    return data


RENDER_ARGS = ("--image-tag", "a1b2c3d4e5f6", "--out")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("rendered")
    handover = tmp_path_factory.mktemp("in") / "handover.json"
    # Exactly what `terraform output -json` prints: also accepted whole (all outputs).
    handover.write_text(json.dumps({"helm_handover": {"sensitive": False, "value": other_handover()}}))
    done = subprocess.run(
        [sys.executable, str(ROOT / "k8s/eks/render-values.py"), "--handover", str(handover), *RENDER_ARGS, str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    files = {p.name: p for p in out.iterdir()}
    assert set(files) == set(script().TEMPLATES.values())
    return {"dir": out, "files": files, "yaml": {n: yaml.safe_load(p.read_text()) for n, p in files.items()}}


def test_rendered_files_hold_no_placeholder(rendered: dict[str, Any]) -> None:
    for name, path in rendered["files"].items():
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.lstrip().startswith("#"):
                assert not [t for t in ("111122223333", "us-east-1", "cryptopipe-prod") if t in line], (
                    f"{name}:{number}: {line}"
                )


def test_rendered_values_carry_the_handover(rendered: dict[str, Any]) -> None:
    h, v = other_handover(), rendered["yaml"]
    ours, airflow = v["crypto-pipeline-values.yaml"], v["airflow-values.yaml"]
    assert ours["config"]["env"]["CRYPTOPIPE_STORAGE__URI"] == h["storage_uri"]
    assert ours["config"]["env"]["CRYPTOPIPE_STORAGE__ARCHIVE_URI"] == h["storage_archive_uri"]
    assert ours["config"]["env"]["CRYPTOPIPE_STORAGE__S3_REGION"] == h["region"]
    assert ours["networkPolicy"]["warehouse"] == {"port": h["rds_port"], "cidrs": h["database_subnet_cidrs"]}
    db = ours["airflowSecrets"]["externalSecrets"]["database"]
    assert (db["rdsSecretKey"], db["host"], db["port"], db["name"]) == (
        h["rds_master_secret_arn"],
        h["rds_address"],
        h["rds_port"],
        h["rds_db_name"],
    )
    assert airflow["images"]["airflow"] == {
        "repository": h["airflow_image_repository"],
        "tag": "a1b2c3d4e5f6",
        "pullPolicy": "IfNotPresent",
    }
    assert airflow["config"]["logging"]["remote_base_log_folder"] == h["airflow_remote_base_log_folder"]
    env = {e["name"]: e["value"] for e in airflow["env"]}
    assert env["PIPELINE_IMAGE_REGISTRY"] == h["image_registry"]
    assert env["PIPELINE_STORAGE_URI"] == h["storage_uri"] and env["AWS_DEFAULT_REGION"] == h["region"]
    assert h["airflow_image_repository"] == f"{h['image_registry']}/cryptopipe-airflow"
    store = v["cluster-secret-store.yaml"]
    assert store["spec"]["provider"]["aws"]["region"] == h["region"] and not validate_object(store)


def test_rendered_airflow_values_pass_the_official_schema(rendered: dict[str, Any]) -> None:
    base = yaml.safe_load((AIRFLOW_VALUES / "values.yaml").read_text())
    assert errors_of(deep_merge(base, rendered["yaml"]["airflow-values.yaml"])) == []


def test_our_chart_renders_the_handover_into_external_secrets(helm: str, rendered: dict[str, Any]) -> None:
    h = other_handover()
    docs = helm_template(helm, [rendered["files"]["crypto-pipeline-values.yaml"]])
    errors = [e for d in docs for e in validate_object(d)]
    assert not errors, "\n".join(errors)
    es = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ExternalSecret"}
    assert all(d["spec"]["secretStoreRef"] == {"name": STORE, "kind": "ClusterSecretStore"} for d in es.values())
    task = es["cryptopipe-secrets"]["spec"]
    keys = {d["secretKey"]: d["remoteRef"]["key"] for d in task["data"]}
    assert (
        keys["api_key"] == h["coingecko_api_key_secret"] and keys["slack_webhook_url"] == h["slack_webhook_url_secret"]
    )
    assert keys["wh_username"] == keys["wh_password"] == h["rds_master_secret_arn"]
    url = task["target"]["template"]["data"]["CRYPTOPIPE_WAREHOUSE__URL"]
    assert url.endswith(f"@{h['rds_address']}:{h['rds_port']}/warehouse?sslmode=require"), url
    ini = es["airflow-pgbouncer-config"]["spec"]["target"]["template"]["data"]["pgbouncer.ini"]
    assert f"host={h['rds_address']} dbname={h['rds_db_name']} port={h['rds_port']}" in ini
    assert re.search(r"^server_tls_sslmode = require$", ini, re.M), ini
    for purpose, suffix in airflow_secret_suffixes().items():
        assert es[suffix]["spec"]["data"][0]["remoteRef"]["key"] == h["airflow_secret_names"][purpose]
    policy = next(
        d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "archive-egress-warehouse"
    )
    peers = {p["ipBlock"]["cidr"] for r in policy["spec"]["egress"] for p in r["to"] if "ipBlock" in p}
    assert peers == set(h["database_subnet_cidrs"])
    assert {p["port"] for r in policy["spec"]["egress"] for p in r["ports"]} == {h["rds_port"]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h: h.pop("storage_uri"), "has no .storage_uri"),
        (
            lambda h: h["airflow_secret_names"].pop("airflow_jwt_secret"),
            "has no .airflow_secret_names.airflow_jwt_secret",
        ),
        (lambda h: h.update(region=["us-east-1"]), ".region is not a scalar"),
        (lambda h: h.update(rds_address=""), ".rds_address is empty"),
    ],
)
def test_a_bad_handover_is_refused_naming_the_key(change: Any, message: str, tmp_path: Path) -> None:
    h = example()
    change(h)
    with pytest.raises(script().RenderError, match=re.escape(message)) as info:
        script().render_all(h, "abc123", tmp_path)
    assert re.search(r"\.yaml:\d+:", str(info.value)), "the error names the template line"
    assert not list(tmp_path.iterdir()), "nothing is written when a template fails"


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(script().RenderError, match="bare image tag"):
        script().render_all(example(), "repo:tag", tmp_path)
    (tmp_path / "h.json").write_text("{not json")
    with pytest.raises(script().RenderError, match="not JSON"):
        script().load_handover(str(tmp_path / "h.json"))
    with pytest.raises(script().RenderError, match="malformed marker"):
        script().find_markers("x.yaml", "# terraform output -json helm_handover | jq .region\nregion: x\n")
    with pytest.raises(script().RenderError, match="followed by a `key: value` line"):
        script().find_markers("x.yaml", "# terraform output -json helm_handover | jq -r .region\n# oops\n")


# --- names shared by Terraform, the charts and Argo CD --------------------------------------------------------


def test_external_secrets_are_exactly_the_airflow_secrets_terraform_creates() -> None:
    static = yaml.safe_load((CHART / "values-eks.yaml").read_text())["airflowSecrets"]["externalSecrets"]["static"]
    base = yaml.safe_load((AIRFLOW_VALUES / "values.yaml").read_text())
    read_by_chart = {
        base["fernetKeySecretName"],
        base["jwtSecretName"],
        base["apiSecretKeySecretName"],
        base["redis"]["passwordSecretName"],
        base["data"]["brokerUrlSecretName"],
    }
    assert {s["secretName"] for s in static} == set(airflow_secret_suffixes().values()) == read_by_chart
    by_line = {m.line: m for m in markers() if m.template == "charts/crypto-pipeline/values-eks.yaml"}
    lines = (CHART / "values-eks.yaml").read_text().splitlines()
    for purpose, suffix in airflow_secret_suffixes().items():
        marker = next(m for m in by_line.values() if m.path == ("airflow_secret_names", purpose))
        # the marked remoteKey belongs to the static entry whose secretName is the Terraform suffix
        entry_start = max(i for i, line in enumerate(lines[: marker.line]) if "- secretName:" in line)
        assert lines[entry_start].split(":", 1)[1].strip() == suffix, f"{marker.where}: remoteKey of another secret"


def test_secret_store_name_matches_everywhere() -> None:
    values = yaml.safe_load((CHART / "values-eks.yaml").read_text())
    assert values["secrets"]["externalSecret"]["secretStoreRef"] == {"name": STORE, "kind": "ClusterSecretStore"}
    store = yaml.safe_load((ROOT / "k8s/eks/cluster-secret-store.yaml").read_text())
    assert store["metadata"]["name"] == STORE and store["kind"] == "ClusterSecretStore"
    assert "auth" not in store["spec"]["provider"]["aws"], "credentials come from Pod Identity"
    assert not validate_object(store)


def argo_apps(kubectl: str) -> dict[str, dict[str, Any]]:
    done = run([kubectl, "kustomize", str(ROOT / "k8s/argocd/overlays/eks")])
    assert done.returncode == 0, done.stderr
    return {d["metadata"]["name"]: d for d in yaml.safe_load_all(done.stdout) if d}


def test_argocd_installs_the_cluster_add_ons_first(kubectl: str) -> None:
    apps = argo_apps(kubectl)
    wave = {
        n: int(a["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])
        for n, a in apps.items()
        if n != "crypto-pipeline-root"
    }
    assert wave["external-secrets"] < wave["cluster-secret-store"] < wave["crypto-pipeline"] < wave["airflow"]
    assert wave["keda"] < wave["airflow"]
    identities = named(hcl_dir(TF / "modules" / "identities"), "variable")
    eso = apps["external-secrets"]["spec"]
    assert (
        eso["source"]["chart"] == "external-secrets"
        and eso["source"]["repoURL"] == "https://charts.external-secrets.io"
    )
    assert eso["destination"]["namespace"] == identities["external_secrets_namespace"]["default"]
    assert (
        eso["source"]["helm"]["valuesObject"]["serviceAccount"]["name"]
        == (identities["external_secrets_service_account"]["default"])
    )
    keda = apps["keda"]["spec"]
    kind_keda = re.search(r"KEDA_CHART_VERSION:=([0-9.]+)", (ROOT / "k8s/kind/kind-up.sh").read_text())
    assert kind_keda and keda["source"]["targetRevision"] == kind_keda.group(1), "same KEDA on kind and EKS"
    for app in (eso, keda):
        assert re.fullmatch(r"\d+\.\d+\.\d+", app["source"]["targetRevision"]), "chart versions are pinned"
        assert "ServerSideApply=true" in app["syncPolicy"]["syncOptions"]
        assert app["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    store = apps["cluster-secret-store"]["spec"]["source"]
    root = apps["crypto-pipeline-root"]["spec"]["source"]
    assert (store["repoURL"], store["targetRevision"]) == (root["repoURL"], root["targetRevision"])
    assert store["path"] == "k8s/eks/rendered" and store["directory"]["include"] == "cluster-secret-store.yaml"


def test_argocd_reads_the_rendered_files(kubectl: str) -> None:
    apps = argo_apps(kubectl)
    out = Path(script().DEFAULT_OUT).relative_to(ROOT)
    ours = apps["crypto-pipeline"]["spec"]["source"]
    chart_dir = ROOT / ours["path"]
    read = [(chart_dir / f).resolve() for f in ours["helm"]["valueFiles"]]
    read += [ROOT / f.removeprefix("$values/") for f in apps["airflow"]["spec"]["sources"][0]["helm"]["valueFiles"]]
    read.append(ROOT / apps["cluster-secret-store"]["spec"]["source"]["path"] / "cluster-secret-store.yaml")
    rendered = {ROOT / out / name for name in script().TEMPLATES.values()}
    assert rendered <= set(read), f"Argo CD does not read {sorted(map(str, rendered - set(read)))}"
    assert not {p for p in read if p.name.endswith("-eks.yaml")}, "the templates are never deployed"
    for name in script().TEMPLATES.values():
        ignored = run(["git", "check-ignore", "-q", str(out / name)])
        assert ignored.returncode == 0, f"{out / name} must be git-ignored (one account's names)"


def test_walkthrough_uses_the_renderer_and_the_rendered_files() -> None:
    doc = DOC.read_text()
    assert "k8s/eks/render-values.py --handover" in doc
    assert "git add -f k8s/eks/rendered" in doc
    assert "resource.customizations.health.argoproj.io_Application" in doc, "waves between Applications need it"
    assert "helm upgrade --install external-secrets" not in doc, "add-ons come from Argo CD, not by hand"
