"""Run the suite through Great Expectations, in process: ephemeral context, no analytics, no network.

One checkpoint run validates the DataFrame with ``result_format`` COMPLETE (so every failing row's pandas index
comes back) and builds the Data Docs site into a local directory through ``UpdateDataDocsAction``. The run id
is fixed to the interval, so the Data Docs paths are the same on every rerun.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptopipe.validate.suite import SUITE_NAME, SUITE_VERSION, Check

if TYPE_CHECKING:
    import pandas as pd

ASSET_NAME = "staging_snapshots"


@dataclass
class Outcome:
    """What GX said about one check."""

    name: str
    success: bool
    observed_value: Any = None
    element_count: int | None = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    missing_count: int | None = None
    unexpected_index: list[int] = field(default_factory=list)
    exception: str | None = None


@contextlib.contextmanager
def _quiet_gx() -> Iterator[None]:
    """GX logs chatty INFO lines (some of its modules pin their own logger level to INFO, so raising the
    ``great_expectations`` logger's level is not enough) and warns about its own deprecations. Inside this
    block only GX code runs: silence everything below ERROR, and restore the previous state afterwards."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        logging.disable(previous)


def import_gx() -> Any:
    """Import GX with analytics off (the variable must be set before the first import)."""
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    with _quiet_gx():
        import great_expectations as gx
    return gx


def _expectation(gx: Any, check: Check) -> Any:
    from great_expectations.expectations.metadata_types import FailureSeverity
    from great_expectations.expectations.row_conditions import Column

    cls = getattr(gx.expectations, check.gx_type)
    kwargs = dict(check.kwargs)
    if check.row_condition is not None:
        column, value = check.row_condition
        kwargs["row_condition"] = Column(column) == value
    return cls(
        **kwargs,
        severity=FailureSeverity(check.severity.value),
        meta={"name": check.name, "description": check.description},
    )


def _exception_message(result: Any) -> str | None:
    info = result.exception_info or {}
    candidates = [info] + [v for v in info.values() if isinstance(v, dict)]
    for item in candidates:
        if item.get("raised_exception"):
            return str(item.get("exception_message") or "the expectation raised an exception")
    return None


def _outcome(result: Any) -> Outcome:
    res = result.result or {}
    name = result.expectation_config.meta["name"]
    exception = _exception_message(result)
    index = res.get("unexpected_index_list") or []
    return Outcome(
        name=name,
        success=bool(result.success) and exception is None,
        observed_value=res.get("observed_value"),
        element_count=res.get("element_count"),
        unexpected_count=res.get("unexpected_count"),
        unexpected_percent=res.get("unexpected_percent"),
        missing_count=res.get("missing_count"),
        unexpected_index=sorted({int(i) for i in index}),
        exception=exception,
    )


def build_checkpoint(
    checks: list[Check],
    *,
    asset: str,
    batch: str,
    definition: str,
    checkpoint: str,
    meta: dict[str, Any],
    docs_dir: Path | None,
) -> Any:
    """An ephemeral context with the suite of ``checks`` and a COMPLETE-result checkpoint (call inside _quiet_gx).

    With ``docs_dir`` the checkpoint updates our one Data Docs site there; the default ephemeral config would add a
    second site in a temp folder that nobody cleans up. In-memory stores, no analytics, no progress bars on stderr.
    """
    gx = import_gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites = {}
    if docs_dir is not None:
        sites["local"] = {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites=sites,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    batch_definition = (
        context.data_sources.add_pandas("staging")
        .add_dataframe_asset(asset)
        .add_batch_definition_whole_dataframe(batch)
    )
    # All expectations at construction: suite.add_expectation re-serializes the whole suite on every call.
    suite = context.suites.add(
        gx.ExpectationSuite(name=SUITE_NAME, expectations=[_expectation(gx, check) for check in checks], meta=meta)
    )
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name=definition, data=batch_definition, suite=suite)
    )
    actions = [gx.checkpoint.UpdateDataDocsAction(name="data_docs")] if docs_dir is not None else []
    return context.checkpoints.add(
        gx.Checkpoint(
            name=checkpoint,
            validation_definitions=[validation],
            actions=actions,
            result_format={"result_format": "COMPLETE"},
        )
    )


def outcomes_of(run: Any, checks: list[Check]) -> dict[str, Outcome]:
    """The one validation's outcomes by check name; every check must have been judged by GX."""
    (validation,) = run.run_results.values()
    outcomes = {o.name: o for o in map(_outcome, validation.results)}
    missing = [c.name for c in checks if c.name not in outcomes]
    if missing:  # a silent gap would let bad data through
        raise RuntimeError(f"Great Expectations returned no result for check(s) {missing}")
    return outcomes


def run_checks(
    frame: pd.DataFrame, checks: list[Check], *, run_name: str, run_time: datetime, docs_dir: Path | None
) -> dict[str, Outcome]:
    """Validate the frame against the checks; Data Docs are written under ``docs_dir`` (None: no Data Docs)."""
    from great_expectations.core.run_identifier import RunIdentifier

    with _quiet_gx():
        checkpoint = build_checkpoint(
            checks,
            asset=ASSET_NAME,
            batch="interval",
            definition=f"{SUITE_NAME}-{run_name}",
            checkpoint="validate",
            meta={"suite_version": SUITE_VERSION},
            docs_dir=docs_dir,
        )
        run = checkpoint.run(
            batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=run_name, run_time=run_time)
        )
    return outcomes_of(run, checks)
