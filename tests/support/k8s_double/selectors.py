"""Kubernetes label and field selectors, as the API server parses them.

Label selectors (``labelSelector=``): comma-joined requirements, each one of
``key=value``, ``key==value``, ``key!=value``, ``key`` (exists), ``!key`` (does not exist),
``key in (a,b)``, ``key notin (a,b)``. A ``!=`` or ``notin`` requirement also matches objects that
lack the key, as in Kubernetes.

Field selectors (``fieldSelector=``): comma-joined ``path=value``, ``path==value``, ``path!=value``,
where ``path`` is a dotted path into the object (``metadata.name``, ``status.phase``,
``involvedObject.name``...). A missing field compares as the empty string.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# Label keys: optional DNS-subdomain prefix + "/" + name; values: up to 63 chars.
_KEY_RE = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_SET_RE = re.compile(r"^(?P<key>[^\s!=]+)\s+(?P<op>in|notin)\s+\((?P<values>[^)]*)\)$")


class SelectorError(ValueError):
    """A selector string that the Kubernetes API server would reject (HTTP 400)."""


@dataclass(frozen=True)
class Requirement:
    """One parsed requirement: ``op`` is one of ``=``, ``!=``, ``exists``, ``!exists``, ``in``, ``notin``."""

    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        # "!=" and "notin" match objects without the key too (Kubernetes semantics).
        return not present or value not in self.values


def _split_top_level(selector: str) -> list[str]:
    """Split on commas that are not inside ``( )`` (set-based values contain commas)."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def _check_key(key: str, selector: str) -> str:
    if not _KEY_RE.match(key):
        raise SelectorError(f"invalid label key {key!r} in selector {selector!r}")
    return key


def _check_value(value: str, selector: str) -> str:
    if len(value) > 63 or not _VALUE_RE.match(value):
        raise SelectorError(f"invalid label value {value!r} in selector {selector!r}")
    return value


def _parse_requirement(text: str, selector: str) -> Requirement:
    set_match = _SET_RE.match(text)
    if set_match:
        values = tuple(_check_value(v.strip(), selector) for v in set_match["values"].split(","))
        return Requirement(_check_key(set_match["key"], selector), set_match["op"], values)
    for op, norm in (("!=", "!="), ("==", "="), ("=", "=")):
        if op in text:
            key, _, value = text.partition(op)
            return Requirement(_check_key(key.strip(), selector), norm, (_check_value(value.strip(), selector),))
    if text.startswith("!"):
        return Requirement(_check_key(text[1:].strip(), selector), "!exists")
    return Requirement(_check_key(text, selector), "exists")


def parse_label_selector(selector: str | None) -> list[Requirement]:
    """Parse a label selector; an empty or missing selector selects everything."""
    if not selector:
        return []
    return [_parse_requirement(part, selector) for part in _split_top_level(selector)]


def label_selector_matcher(selector: str | None) -> Callable[[Mapping[str, str]], bool]:
    """Return a predicate over a labels mapping (raises SelectorError on a bad selector)."""
    requirements = parse_label_selector(selector)
    return lambda labels: all(req.matches(labels or {}) for req in requirements)


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return ""
        current = current[part]
    if current is None:
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)


def field_selector_matcher(selector: str | None) -> Callable[[Mapping[str, Any]], bool]:
    """Return a predicate over an object (dict) for a field selector."""
    if not selector:
        return lambda _obj: True
    checks: list[tuple[str, bool, str]] = []
    for part in _split_top_level(selector):
        for op, equal in (("!=", False), ("==", True), ("=", True)):
            if op in part:
                path, _, value = part.partition(op)
                path = path.strip()
                if not path or not re.match(r"^[A-Za-z0-9_.]+$", path):
                    raise SelectorError(f"invalid field path {path!r} in field selector {selector!r}")
                checks.append((path, equal, value.strip()))
                break
        else:
            raise SelectorError(
                f"invalid field selector requirement {part!r} in {selector!r}: expected path=value or path!=value"
            )
    return lambda obj: all((_field_value(obj, path) == value) == equal for path, equal, value in checks)
