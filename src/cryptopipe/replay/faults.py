"""Fault injection: rules applied to the successive requests whose path matches.

A rule is `{"path": REGEX, "faults": [FAULT, ...], "repeat": false}`. The n-th request matching the
rule's regex (searched in the request path with its query string) gets the rule's n-th fault; once the
list is exhausted the rule stops matching (or starts over with `repeat: true`) and later rules, then
normal service, apply. See docs/replay-server.md for the fault names.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SIMPLE_FAULTS = {
    "ok", "hang", "html", "html403", "truncated", "empty", "key_rejected", "500", "502", "503", "504",
}  # fmt: skip
DRIFT_KINDS = ("missing", "rename", "extra")


@dataclass(frozen=True)
class Fault:
    """One parsed fault: `kind` plus its arguments."""

    kind: str  # ok, 429, 5xx, slow, hang, html, html403, truncated, empty, drift, drop, key_rejected
    text: str
    seconds: float = 0.0  # slow; Retry-After for 429
    reset: bool = False  # 429: also send x-ratelimit-reset
    drift: str = ""  # missing, rename, extra, string_numbers
    field: str = ""
    new_name: str = ""
    coin: str = ""  # drop


def parse_fault(text: str, where: str = "fault") -> Fault:
    """Parse `429`, `429:N`, `429:N:reset`, `slow:S`, `drift:missing=F`, `drop:ID`, ... ."""
    if not isinstance(text, str) and not isinstance(text, int):
        raise ValueError(f"{where}: expected a fault name string, got {type(text).__name__}")
    raw = str(text).strip()
    if raw in SIMPLE_FAULTS:
        return Fault(kind=raw, text=raw)
    head, _, arg = raw.partition(":")
    try:
        if head == "429":
            parts = arg.split(":") if arg else []
            seconds = float(parts[0]) if parts and parts[0] else 1.0
            if len(parts) > 2 or (len(parts) == 2 and parts[1] != "reset") or seconds < 0:
                raise ValueError("expected 429, 429:SECONDS or 429:SECONDS:reset")
            return Fault(kind="429", text=raw, seconds=seconds, reset=len(parts) == 2)
        if head == "slow":
            seconds = float(arg)
            if seconds < 0:
                raise ValueError("seconds must be >= 0")
            return Fault(kind="slow", text=raw, seconds=seconds)
        if head == "drop" and arg:
            return Fault(kind="drop", text=raw, coin=arg)
        if head == "drift":
            return _parse_drift(raw, arg)
    except ValueError as exc:
        raise ValueError(f"{where}: bad fault {raw!r}: {exc}") from None
    raise ValueError(
        f"{where}: unknown fault {raw!r}: expected one of ok, 429[:S[:reset]], 500, 502, 503, 504, slow:S, "
        "hang, html, html403, truncated, empty, drift:missing=F, drift:rename=OLD:NEW, drift:extra=F, "
        "drift:string_numbers, drop:ID, key_rejected"
    )


def _parse_drift(raw: str, arg: str) -> Fault:
    if arg == "string_numbers":
        return Fault(kind="drift", text=raw, drift="string_numbers")
    kind, _, value = arg.partition("=")
    if kind not in DRIFT_KINDS or not value:
        raise ValueError("expected drift:missing=F, drift:rename=OLD:NEW, drift:extra=F or drift:string_numbers")
    if kind == "rename":
        old, _, new = value.partition(":")
        if not old or not new:
            raise ValueError("rename needs OLD:NEW")
        return Fault(kind="drift", text=raw, drift="rename", field=old, new_name=new)
    return Fault(kind="drift", text=raw, drift=kind, field=value)


@dataclass
class Rule:
    path: re.Pattern[str]
    faults: list[Fault]
    repeat: bool = False
    used: int = 0

    def describe(self) -> dict[str, Any]:
        return {"path": self.path.pattern, "faults": [f.text for f in self.faults], "repeat": self.repeat,
                "used": self.used}  # fmt: skip


def parse_rules(spec: Any, source: str = "faults") -> list[Rule]:
    """Rules from a list (or `{"rules": [...]}`) of `{"path", "faults", "repeat"}` mappings."""
    if isinstance(spec, dict) and set(spec) == {"rules"}:
        spec = spec["rules"]
    if spec is None:
        return []
    if not isinstance(spec, list):
        raise ValueError(f"{source}: expected a list of rules (or {{'rules': [...]}}), got {type(spec).__name__}")
    rules = []
    for n, item in enumerate(spec):
        where = f"{source}: rule {n}"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected a mapping with path and faults")
        unknown = set(item) - {"path", "faults", "repeat"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)} (allowed: path, faults, repeat)")
        try:
            pattern = re.compile(str(item.get("path", ".*")))
        except re.error as exc:
            raise ValueError(f"{where}: path is not a valid regex: {exc}") from None
        faults = item.get("faults")
        if not isinstance(faults, list) or not faults:
            raise ValueError(f"{where}: faults must be a non-empty list")
        repeat = item.get("repeat", False)
        if not isinstance(repeat, bool):
            raise ValueError(f"{where}: repeat must be true or false")
        parsed = [parse_fault(f, f"{where} fault {k}") for k, f in enumerate(faults)]
        rules.append(Rule(pattern, parsed, repeat))
    return rules


def load_rules_file(path: str | Path) -> list[Rule]:
    """Rules from a YAML or JSON file (JSON is YAML)."""
    file = Path(path)
    try:
        spec = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"faults file {file}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"faults file {file}: not valid YAML/JSON: {exc}") from None
    return parse_rules(spec, f"faults file {file}")


class FaultPlan:
    """The active rules; `next_fault` consumes one step of the first matching, unexhausted rule."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self._lock = threading.Lock()
        self._rules = list(rules)

    def replace(self, rules: Iterable[Rule]) -> None:
        with self._lock:
            self._rules = list(rules)

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.describe() for r in self._rules]

    def next_fault(self, target: str) -> Fault | None:
        with self._lock:
            for rule in self._rules:
                if not rule.path.search(target):
                    continue
                if rule.used >= len(rule.faults) and not rule.repeat:
                    continue
                fault = rule.faults[rule.used % len(rule.faults)]
                rule.used += 1
                return fault
        return None


# --- body transformations ----------------------------------------------------------------------------


def _records(body: Any) -> list[dict[str, Any]]:
    """The objects drift applies to: list elements, a dict of dicts' values (simple/price), or the dict."""
    if isinstance(body, list):
        return [r for r in body if isinstance(r, dict)]
    if isinstance(body, dict):
        inner = [v for v in body.values() if isinstance(v, dict)]
        return inner if inner and len(inner) == len(body) else [body]
    return []


def _stringify(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, list):
        return [_stringify(v) for v in value]
    if isinstance(value, dict):
        return {k: _stringify(v) for k, v in value.items()}
    return value


def apply_drift(body: Any, fault: Fault) -> Any:
    """Schema drift on a JSON body (mutates and returns it)."""
    if fault.drift == "string_numbers":
        return _stringify(body)
    for rec in _records(body):
        if fault.drift == "missing":
            rec.pop(fault.field, None)
        elif fault.drift == "rename" and fault.field in rec:
            items = [(fault.new_name if k == fault.field else k, v) for k, v in rec.items()]
            rec.clear()
            rec.update(items)
        elif fault.drift == "extra":
            rec[fault.field] = "replay-extra"
    return body


def apply_drop(body: Any, coin_id: str) -> Any:
    """A coin vanished from a list (markets) or a dict keyed by id (simple/price)."""
    if isinstance(body, list):
        return [r for r in body if not (isinstance(r, dict) and r.get("id") == coin_id)]
    if isinstance(body, dict):
        body.pop(coin_id, None)
    return body
