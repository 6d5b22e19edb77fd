"""Setting environment variables for a block and putting back exactly what was there (settings and Airflow read
the process environment, so tests and benchmarks change it and must restore it)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping


def snapshot(keys: Iterable[str]) -> dict[str, str | None]:
    return {key: os.environ.get(key) for key in keys}


def restore(saved: Mapping[str, str | None]) -> None:
    """Put back the values of a snapshot: unset what was unset, reset what was set."""
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set ``values`` for the block, then restore the previous environment of those keys."""
    saved = snapshot(values)
    os.environ.update(values)
    try:
        yield
    finally:
        restore(saved)
