"""Pipeline configuration: one YAML file, every key overridable by a ``CRYPTOPIPE_*`` environment variable.

Precedence (highest first): environment, YAML file, embedded defaults. Secrets (API key, Slack webhook,
a warehouse URL with a password) are accepted from the environment only, so none can end up in git.
Every problem is reported as one ``ConfigError`` that names the key, the source and the reason.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from cryptopipe.core.errors import ConfigError

ENV_PREFIX = "CRYPTOPIPE_"
ENV_DELIMITER = "__"
CONFIG_PATH_ENV = "CRYPTOPIPE_CONFIG"
# CRYPTOPIPE_* variables that are not settings: the config path, the demo's log level, the replay server's key.
NON_SETTING_ENV: frozenset[str] = frozenset({CONFIG_PATH_ENV, "CRYPTOPIPE_LOG_LEVEL", "CRYPTOPIPE_REPLAY_API_KEY"})

COINGECKO_PUBLIC_URL = "https://api.coingecko.com/api/v3"
COINGECKO_PRO_URL = "https://pro-api.coingecko.com/api/v3"
COINGECKO_HOSTS = frozenset({"api.coingecko.com", "pro-api.coingecko.com"})
SLACK_HOSTS = frozenset({"hooks.slack.com"})

# Dotted keys that may only come from the environment.
SECRET_KEYS = ("api.key", "alerts.slack_webhook_url")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_outbound_url(url: str, allowed_hosts: frozenset[str]) -> str:
    """Allow https to an expected host, or http(s) to loopback (replay server, test receivers) only.

    This is what keeps a bad config from sending data or keys anywhere else. Everything a URL parser and an
    HTTP client could read differently is refused: whitespace or control characters, credentials
    (``https://api.coingecko.com@evil.com``), a query or fragment, an invalid port, and on the expected
    hosts any port but 443.
    """
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError("must not contain whitespace or control characters")
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    if "@" in parts.netloc:
        raise ValueError("must not embed credentials (user@host)")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError("must not have a query string or fragment")
    if _is_loopback(parts.hostname) and parts.scheme in {"http", "https"}:
        return url.rstrip("/")
    if parts.scheme != "https":
        raise ValueError(f"must use https (got scheme {parts.scheme!r})")
    if parts.hostname not in allowed_hosts:
        raise ValueError(f"host {parts.hostname!r} is not one of {sorted(allowed_hosts)} or a loopback address")
    if port not in (None, 443):
        raise ValueError(f"must use the default https port (got {port})")
    return url.rstrip("/")


def _split_list(value: Any) -> Any:
    """Accept a YAML/JSON list, or from the environment a JSON list or a comma-separated string."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a valid JSON list: {exc.msg}") from exc
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


class CoinsSettings(_Section):
    ids: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Explicit CoinGecko coin ids, fetched in addition to the top N."
    )
    top_n: int = Field(250, ge=0, le=5000, description="Top N coins by market cap (0: explicit ids only).")

    _split = field_validator("ids", mode="before")(_split_list)

    @field_validator("ids")
    @classmethod
    def _ids_look_like_ids(cls, ids: list[str]) -> list[str]:
        for coin_id in ids:
            if not coin_id or not all(c.isascii() and (c.isalnum() or c in "-._") for c in coin_id):
                raise ValueError(f"{coin_id!r} is not a CoinGecko id (lowercase letters, digits, '-', '.', '_')")
        return sorted(set(ids), key=ids.index)

    @model_validator(mode="after")
    def _something_to_fetch(self) -> CoinsSettings:
        if self.top_n == 0 and not self.ids:
            raise ValueError("nothing to fetch: set coins.top_n > 0 or list coins.ids")
        return self


class ApiPlan(StrEnum):
    KEYLESS = "keyless"
    DEMO = "demo"
    PRO = "pro"


class RetrySettings(_Section):
    max_attempts: int = Field(6, ge=1, le=20, description="Attempts per request, the first included.")
    backoff_seconds: float = Field(1.0, gt=0, le=60, description="First backoff; doubles each retry, with jitter.")
    backoff_max_seconds: float = Field(60.0, gt=0, le=900, description="Cap on one backoff or Retry-After wait.")
    total_timeout_seconds: float = Field(300.0, gt=0, le=7200, description="Bound on all attempts of one request.")


class ApiSettings(_Section):
    plan: ApiPlan = Field(ApiPlan.KEYLESS, description="keyless, demo or pro: decides base URL and key header.")
    base_url: str | None = Field(None, description="Override of the plan's base URL (replay server, proxies).")
    key: SecretStr | None = Field(None, description="API key; environment only (CRYPTOPIPE_API__KEY).")
    rate_limit_per_minute: float = Field(10.0, gt=0, le=1000, description="Client-side request rate limit.")
    timeout_seconds: float = Field(20.0, gt=0, le=300, description="Connect and read timeout per request.")
    retry: RetrySettings = Field(default_factory=RetrySettings)  # type: ignore[arg-type]

    @field_validator("base_url")
    @classmethod
    def _safe_base_url(cls, url: str | None) -> str | None:
        return None if url is None else check_outbound_url(url, COINGECKO_HOSTS)

    @model_validator(mode="after")
    def _plan_fits_key(self) -> ApiSettings:
        if self.plan in (ApiPlan.DEMO, ApiPlan.PRO) and self.key is None:
            raise ValueError(f"plan {self.plan.value!r} needs an API key in CRYPTOPIPE_API__KEY")
        host = urlsplit(self.effective_base_url).hostname
        if self.plan is ApiPlan.PRO and host == "api.coingecko.com":
            raise ValueError("a pro key is refused by api.coingecko.com; use pro-api.coingecko.com")
        if self.plan is not ApiPlan.PRO and host == "pro-api.coingecko.com":
            raise ValueError(f"plan {self.plan.value!r} cannot use pro-api.coingecko.com")
        return self

    @property
    def effective_base_url(self) -> str:
        if self.base_url:
            return self.base_url
        return COINGECKO_PRO_URL if self.plan is ApiPlan.PRO else COINGECKO_PUBLIC_URL

    @property
    def key_header(self) -> str | None:
        return {ApiPlan.DEMO: "x-cg-demo-api-key", ApiPlan.PRO: "x-cg-pro-api-key"}.get(self.plan)

    @property
    def max_history_days(self) -> int | None:
        """Keyless and Demo callers get at most 365 days of history (error 10012)."""
        return None if self.plan is ApiPlan.PRO else 365


class QualitySettings(_Section):
    min_row_share: float = Field(0.9, gt=0, le=1, description="Critical: rows >= this share of coins asked for.")
    price_min: float = Field(0.0, ge=0, description="Critical: price must be > this (no floor that drops micro caps).")
    price_max: float = Field(1e7, gt=0, description="Warning: prices above this are quarantined.")
    max_abs_change_24h_pct: float = Field(90.0, gt=0, description="Warning: |24h change| beyond this (percent).")
    freshness_minutes: float = Field(120.0, gt=0, description="Warning: last_updated older than end - this.")
    high_low_tolerance: float = Field(0.02, ge=0, le=1, description="Warning: low*(1-t) <= price <= high*(1+t).")
    market_cap_tolerance: float = Field(0.10, ge=0, le=10, description="Warning: |mcap/(price*supply) - 1| <= t.")
    max_quarantine_share: float = Field(
        0.2, ge=0, le=1, description="Critical: more than this share of rows quarantined stops the interval."
    )

    @model_validator(mode="after")
    def _bounds_ordered(self) -> QualitySettings:
        if self.price_min >= self.price_max:
            raise ValueError("price_min must be below price_max")
        return self


class StorageSettings(_Section):
    uri: str = Field("file://./data", description="Working store: file://PATH or s3://bucket[/prefix].")
    archive_uri: str | None = Field(None, description="Archive store; default: the working store under archive/.")
    s3_endpoint_url: str | None = Field(None, description="S3 endpoint override (MinIO, SeaweedFS).")
    s3_region: str = Field("us-east-1", description="S3 region.")

    @field_validator("uri", "archive_uri")
    @classmethod
    def _known_scheme(cls, uri: str | None) -> str | None:
        if uri is None:
            return None
        scheme = urlsplit(uri).scheme
        if scheme not in {"file", "s3"}:
            raise ValueError(f"scheme {scheme!r} is not supported (use file:// or s3://)")
        if scheme == "s3" and not urlsplit(uri).netloc:
            raise ValueError("s3:// URI needs a bucket name")
        return uri


class WarehouseSettings(_Section):
    url: SecretStr = Field(SecretStr("sqlite:///./data/warehouse.db"), description="SQLAlchemy URL of the warehouse.")

    @field_validator("url")
    @classmethod
    def _known_dialect(cls, url: SecretStr) -> SecretStr:
        dialect = url.get_secret_value().split(":", 1)[0].split("+", 1)[0]
        if dialect not in {"sqlite", "postgresql"}:
            raise ValueError(f"dialect {dialect!r} is not supported (sqlite or postgresql)")
        return url


class RetentionSettings(_Section):
    working_days: int = Field(120, ge=1, le=3650, description="Working prefixes older than this are deleted.")


class TransformSettings(_Section):
    lookback_days: int = Field(100, ge=8, le=400, description="Days of validated history read per run.")
    chart_top_n: int = Field(5, ge=0, le=50, description="Coins charted in each interval's report.")


class AlertSettings(_Section):
    zscore_threshold: float = Field(4.0, gt=0, description="|z| of the hourly return above this is an anomaly.")
    zscore_window_hours: int = Field(168, ge=24, le=2160, description="Window of the rolling z-score.")
    move_1h_pct: float = Field(5.0, gt=0, description="|1h change| above this (percent) is an anomaly.")
    move_24h_pct: float = Field(5.0, gt=0, description="|24h change| above this (percent) is an anomaly.")
    slack_webhook_url: SecretStr | None = Field(None, description="Slack webhook; environment only.")

    @field_validator("slack_webhook_url")
    @classmethod
    def _safe_webhook(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None:
            check_outbound_url(url.get_secret_value(), SLACK_HOSTS)
        return url


_yaml_values: ContextVar[dict[str, Any]] = ContextVar("_yaml_values", default={})  # noqa: B039


class _YamlSource(PydanticBaseSettingsSource):
    """The already loaded and checked YAML mapping, below the environment in precedence."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return _yaml_values.get().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_yaml_values.get())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_DELIMITER, extra="forbid", frozen=True
    )

    coins: CoinsSettings = Field(default_factory=CoinsSettings)  # type: ignore[arg-type]
    quote_currencies: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["usd"])
    api: ApiSettings = Field(default_factory=ApiSettings)  # type: ignore[arg-type]
    quality: QualitySettings = Field(default_factory=QualitySettings)  # type: ignore[arg-type]
    storage: StorageSettings = Field(default_factory=StorageSettings)  # type: ignore[arg-type]
    warehouse: WarehouseSettings = Field(default_factory=WarehouseSettings)  # type: ignore[arg-type]
    retention: RetentionSettings = Field(default_factory=RetentionSettings)  # type: ignore[arg-type]
    transform: TransformSettings = Field(default_factory=TransformSettings)  # type: ignore[arg-type]
    alerts: AlertSettings = Field(default_factory=AlertSettings)  # type: ignore[arg-type]

    _split_currencies = field_validator("quote_currencies", mode="before")(_split_list)

    @field_validator("quote_currencies")
    @classmethod
    def _currencies(cls, values: list[str]) -> list[str]:
        if not values:
            raise ValueError("at least one quote currency is needed")
        cleaned = [v.strip().lower() for v in values]
        for cur in cleaned:
            if not (cur.isascii() and cur.isalnum() and 2 <= len(cur) <= 10):
                raise ValueError(f"{cur!r} is not a currency code")
        return sorted(set(cleaned), key=cleaned.index)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))

    def public_dict(self) -> dict[str, Any]:
        """The effective configuration with secrets masked, for logs and `cryptopipe config show`."""
        return self.model_dump(mode="json")  # SecretStr dumps as '**********'

    def fingerprint(self) -> str:
        """A short hash of the public config, recorded in lineage manifests."""
        payload = json.dumps(self.public_dict(), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:16]


def _walk_keys(mapping: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in mapping.items():
        if not isinstance(key, str):  # YAML allows `0:` or `true:` as keys; settings keys are names
            raise ConfigError(f"{prefix}{key!r}: keys must be names, got a {type(key).__name__}")
        dotted = f"{prefix}{key}"
        yield dotted
        if isinstance(value, Mapping):
            yield from _walk_keys(value, f"{dotted}.")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc.strerror or exc})", key="config") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: not valid YAML: {exc}", key="config") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping, got {type(data).__name__}")
    try:
        dotted_keys = list(_walk_keys(data))
    except ConfigError as exc:
        raise ConfigError(f"config file {path}: {exc.message}") from None
    for dotted in dotted_keys:
        if dotted in SECRET_KEYS:
            env = ENV_PREFIX + dotted.upper().replace(".", ENV_DELIMITER)
            raise ConfigError(f"config file {path}: {dotted} is a secret; set it in the environment as {env}")
    warehouse_url = (data.get("warehouse") or {}).get("url") if isinstance(data.get("warehouse"), dict) else None
    if isinstance(warehouse_url, str) and urlsplit(warehouse_url).password:
        raise ConfigError(
            f"config file {path}: warehouse.url holds a password; set it in the environment as "
            f"{ENV_PREFIX}WAREHOUSE{ENV_DELIMITER}URL"
        )
    return data


def _known_env_names() -> set[str]:
    names = set(NON_SETTING_ENV)

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            env = f"{prefix}{name.upper()}"
            names.add(env)
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, env + ENV_DELIMITER)

    walk(Settings, ENV_PREFIX)
    return names


def _check_env_names(environ: Mapping[str, str]) -> None:
    """A misspelled override would be silently ignored; refuse it instead."""
    known = _known_env_names()
    unknown = sorted(k for k in environ if k.startswith(ENV_PREFIX) and k not in known)
    if unknown:
        raise ConfigError(f"unknown configuration variable(s) in the environment: {', '.join(unknown)}")


def _source_of(loc: tuple[Any, ...], yaml_data: Mapping[str, Any], path: Path | None) -> str:
    env = ENV_PREFIX + ENV_DELIMITER.join(str(p).upper() for p in loc if isinstance(p, str))
    if any(k == env or k.startswith(env + ENV_DELIMITER) for k in os.environ):
        return f"environment {env}"
    node: Any = yaml_data
    for part in loc:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return "defaults"
    return f"config file {path}" if path else "defaults"


def _describe(exc: ValidationError, yaml_data: Mapping[str, Any], path: Path | None) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not isinstance(p, int)) or ("(root)",)
        key = ".".join(str(p) for p in loc)
        msg = str(err["msg"]).removeprefix("Value error, ")
        got = "" if err["type"] in {"missing", "extra_forbidden"} else f" (got {err.get('input')!r})"
        if isinstance(err.get("input"), (dict, SecretStr)) or "key" in key or "url" in key:
            got = ""  # never echo a mapping or anything that could be a secret
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{key}: {msg}{got} [from {_source_of(loc, yaml_data, path)}]")
    return "invalid configuration: " + "; ".join(lines)


def load_settings(config_path: str | Path | None = None) -> Settings:
    """Load and validate the configuration, or raise one ConfigError naming every bad key."""
    raw_path = config_path if config_path is not None else os.environ.get(CONFIG_PATH_ENV)
    path = Path(raw_path) if raw_path else None
    yaml_data = _read_yaml(path) if path else {}
    _check_env_names(os.environ)
    token = _yaml_values.set(yaml_data)
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(_describe(exc, yaml_data, path)) from None
    except ValueError as exc:  # pydantic-settings' own parse errors of env values
        raise ConfigError(f"invalid configuration: {exc}") from None
    finally:
        _yaml_values.reset(token)
