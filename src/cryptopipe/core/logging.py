"""JSON log lines on stdout (the pod log streamed into the Airflow task log), with secrets redacted."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_SECRETS: set[str] = set()
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def register_secret(value: str | None) -> None:
    """Values registered here are replaced by ``***`` in every log line, wherever they appear."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def registered_secrets() -> list[str]:
    """What ``register_secret`` holds, for handing on to a worker process (which has its own registry)."""
    return sorted(_SECRETS)


def redact(text: str) -> str:
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class JsonFormatter(logging.Formatter):
    def __init__(self, stage: str) -> None:
        super().__init__()
        self.stage = stage

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "stage": self.stage,
            "event": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str, ensure_ascii=False))


def setup_logging(stage: str, level: str = "INFO") -> logging.Logger:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(stage))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "great_expectations", "matplotlib", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return logging.getLogger("cryptopipe")


def get_logger(name: str = "cryptopipe") -> logging.Logger:
    return logging.getLogger(name)
