"""Property-based: any config file or environment ends in Settings or a ConfigError, never a crash."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cryptopipe.core.config import NON_SETTING_ENV, Settings, _known_env_names, load_settings
from cryptopipe.core.errors import ConfigError
from tests.support.envvars import environment

SECTIONS = ["coins", "quote_currencies", "api", "quality", "storage", "warehouse", "retention", "transform", "alerts"]
FIELDS = ["ids", "top_n", "plan", "base_url", "rate_limit_per_minute", "retry", "max_attempts", "uri", "url",
          "min_row_share", "price_min", "price_max", "working_days", "lookback_days", "zscore_threshold", "nope"]  # fmt: skip

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30), st.sampled_from(["usd", "demo", "pro", "file://./x", "s3://b/p", "http://127.0.0.1:1/api/v3",
                                            "https://api.coingecko.com/api/v3", "sqlite:///x.db", "1e-10", "-1"]),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.sampled_from(FIELDS), children, max_size=4)
    ),
    max_leaves=12,
)
documents = st.one_of(values, st.dictionaries(st.sampled_from(SECTIONS + FIELDS), values, max_size=6))


def _load_with(document: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(yaml.safe_dump(document, allow_unicode=True))
        try:
            assert isinstance(load_settings(path), Settings)
        except ConfigError as exc:
            assert str(exc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(documents)
def test_any_yaml_document_is_settings_or_config_error(clean_env: pytest.MonkeyPatch, document: Any) -> None:
    _load_with(document)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_any_file_bytes_are_settings_or_config_error(clean_env: pytest.MonkeyPatch, text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass") if "\ud800" not in text else None
        if not path.exists():
            return
        with contextlib.suppress(ConfigError):
            load_settings(path)


ENV_NAMES = sorted(_known_env_names() - NON_SETTING_ENV)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(ENV_NAMES), st.text(alphabet=st.characters(blacklist_categories=["Cs"],
                                                                                   blacklist_characters="\x00"),
                                                              max_size=40), max_size=5))  # fmt: skip
def test_any_environment_is_settings_or_config_error(clean_env: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    with environment(env):
        try:
            load_settings()
        except ConfigError as exc:
            assert str(exc)
