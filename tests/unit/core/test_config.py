from __future__ import annotations

from pathlib import Path

import pytest

from cryptopipe.cli import main
from cryptopipe.core.config import ApiPlan, load_settings
from cryptopipe.core.errors import ConfigError, ExitCode


def test_embedded_defaults(clean_env: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert s.coins.top_n == 250
    assert s.quote_currencies == ["usd"]
    assert s.api.plan is ApiPlan.KEYLESS
    assert s.api.effective_base_url == "https://api.coingecko.com/api/v3"
    assert s.api.key_header is None
    assert s.storage.uri == "file://./data"
    assert s.warehouse.url.get_secret_value().startswith("sqlite:///")


def test_yaml_then_env_precedence(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "coins:\n  top_n: 20\n  ids: [bitcoin]\nquote_currencies: [usd, eur]\napi:\n  retry:\n    max_attempts: 3\n"
    )
    clean_env.setenv("CRYPTOPIPE_COINS__TOP_N", "7")
    clean_env.setenv("CRYPTOPIPE_QUOTE_CURRENCIES", "usd,btc")
    s = load_settings(cfg)
    assert s.coins.top_n == 7  # env wins
    assert s.coins.ids == ["bitcoin"]  # from the file
    assert s.quote_currencies == ["usd", "btc"]
    assert s.api.retry.max_attempts == 3


@pytest.mark.parametrize(
    ("plan", "url", "header"),
    [("demo", "https://api.coingecko.com/api/v3", "x-cg-demo-api-key"),
     ("pro", "https://pro-api.coingecko.com/api/v3", "x-cg-pro-api-key")],
)  # fmt: skip
def test_plan_decides_url_and_header(clean_env: pytest.MonkeyPatch, plan: str, url: str, header: str) -> None:
    clean_env.setenv("CRYPTOPIPE_API__PLAN", plan)
    clean_env.setenv("CRYPTOPIPE_API__KEY", "CG-secretsecret")
    s = load_settings()
    assert (s.api.effective_base_url, s.api.key_header) == (url, header)
    assert "CG-secretsecret" not in str(s.public_dict())


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CRYPTOPIPE_API__RATE_LIMIT_PER_MINUTE": "0"}, "api.rate_limit_per_minute: Input should be greater than 0"),
        ({"CRYPTOPIPE_API__PLAN": "gold"}, "api.plan: Input should be 'keyless', 'demo' or 'pro'"),
        ({"CRYPTOPIPE_API__PLAN": "demo"}, "needs an API key in CRYPTOPIPE_API__KEY"),
        ({"CRYPTOPIPE_API__BASE_URL": "https://evil.example/api/v3"}, "host 'evil.example' is not one of"),
        ({"CRYPTOPIPE_API__BASE_URL": "http://api.coingecko.com/api/v3"}, "must use https"),
        ({"CRYPTOPIPE_ALERTS__SLACK_WEBHOOK_URL": "https://example.com/hook"}, "alerts.slack_webhook_url"),
        ({"CRYPTOPIPE_STORAGE__URI": "gs://bucket"}, "scheme 'gs' is not supported"),
        ({"CRYPTOPIPE_WAREHOUSE__URL": "mysql://x/y"}, "dialect 'mysql' is not supported"),
        ({"CRYPTOPIPE_COINS__TOP_N": "0"}, "nothing to fetch"),
        ({"CRYPTOPIPE_COINS__IDS": "Bit Coin"}, "is not a CoinGecko id"),
        ({"CRYPTOPIPE_QUALITY__PRICE_MIN": "5", "CRYPTOPIPE_QUALITY__PRICE_MAX": "1"}, "price_min must be below"),
        (
            {"CRYPTOPIPE_APII__PLAN": "demo"},
            "unknown configuration variable(s) in the environment: CRYPTOPIPE_APII__PLAN",
        ),
    ],
)
def test_bad_values_name_the_key(clean_env: pytest.MonkeyPatch, env: dict[str, str], message: str) -> None:
    for key, value in env.items():
        clean_env.setenv(key, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert message in str(err.value)


def test_loopback_http_allowed_for_replay_and_receivers(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CRYPTOPIPE_API__BASE_URL", "http://127.0.0.1:8765/api/v3")
    clean_env.setenv("CRYPTOPIPE_ALERTS__SLACK_WEBHOOK_URL", "http://127.0.0.1:9000/hook")
    assert load_settings().api.effective_base_url == "http://127.0.0.1:8765/api/v3"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("api:\n  key: CG-abc\n", "api.key is a secret; set it in the environment as CRYPTOPIPE_API__KEY"),
        ("alerts:\n  slack_webhook_url: https://hooks.slack.com/x\n", "alerts.slack_webhook_url is a secret"),
        ("warehouse:\n  url: postgresql://u:pw@db/x\n", "warehouse.url holds a password"),
        ("storage:\n  urii: file://x\n", "storage.urii: unknown key [from config file"),
        ("coins: [1, 2]\n", "coins: Input should be a valid dictionary"),
        ("- just\n- a list\n", "the top level must be a mapping"),
        ("api: {plan: demo\n", "not valid YAML"),
    ],
)
def test_bad_files(clean_env: pytest.MonkeyPatch, tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert message in str(err.value)


def test_missing_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(tmp_path / "absent.yaml")


def test_cli_bad_config_exits_2_and_starts_nothing(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("CRYPTOPIPE_STORAGE__URI", f"file://{tmp_path / 'data'}")
    clean_env.setenv("CRYPTOPIPE_API__TIMEOUT_SECONDS", "-3")
    code = main(["ingest", "--interval-start", "2026-11-22T13:00:00Z", "--interval-end", "2026-11-22T14:00:00Z"])
    assert code == ExitCode.CONFIG
    out = capsys.readouterr().out
    assert "api.timeout_seconds" in out
    assert not (tmp_path / "data").exists()  # nothing was started, nothing written


def test_cli_config_show_masks_secrets(clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    clean_env.setenv("CRYPTOPIPE_API__PLAN", "demo")
    clean_env.setenv("CRYPTOPIPE_API__KEY", "CG-verysecretkey")
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "CG-verysecretkey" not in out
    assert '"plan": "demo"' in out


def test_example_config_loads_and_documents_every_key(clean_env: pytest.MonkeyPatch) -> None:
    import yaml
    from pydantic import BaseModel

    from cryptopipe.core.config import SECRET_KEYS, Settings

    example = Path(__file__).resolve().parents[3] / "config" / "example.yaml"
    settings = load_settings(example)
    assert settings == load_settings()  # the example shows the embedded defaults

    def keys(model: type[BaseModel], prefix: str = "") -> set[str]:
        out = set()
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                out |= keys(ann, f"{prefix}{name}.")
            else:
                out.add(f"{prefix}{name}")
        return out

    def flat(data: dict[str, object], prefix: str = "") -> set[str]:
        out = set()
        for k, v in data.items():
            out |= flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}"}
        return out

    documented = flat(yaml.safe_load(example.read_text()))
    assert keys(Settings) - set(SECRET_KEYS) - {"warehouse.url"} <= documented


def test_warehouse_password_is_redacted_alone_and_decoded(clean_env: pytest.MonkeyPatch) -> None:
    import argparse

    from cryptopipe.cli import _settings
    from cryptopipe.core.logging import redact

    clean_env.setenv("CRYPTOPIPE_WAREHOUSE__URL", "postgresql://u:p%40ss%2Fw0rd!@db.internal:5432/wh")
    _settings(argparse.Namespace(config=None))
    assert redact("auth failed for password p@ss/w0rd! and p%40ss%2Fw0rd!") == "auth failed for password *** and ***"
