"""Range mode of the validate stage: one Great Expectations run over many hourly intervals (docs/batch.md).

``run_range(settings, intervals, log)`` does for each interval what ``cryptopipe validate`` does (same validated,
quarantine and quality-report bytes, same run record keys), but validates the staging tables of up to
``CHUNK_HOURS`` intervals as one concatenated DataFrame in one GX checkpoint run, then splits GX's per-row results
back to the intervals by row range. What makes the split exact:

- row-level checks that do not depend on the interval are evaluated unchanged; GX's ``unexpected_index_list``
  (positions in the concatenated frame) is cut at the interval boundaries, and the per-interval counts are
  rebuilt with GX's own formula (``_format_map_output``); the missing counts are recounted per interval and
  their sum must equal GX's global missing count (a mismatch is a bug, exit 1);
- the checks whose thresholds depend on the interval are evaluated by GX on per-row helper columns that carry
  the interval: ``snapshot_time_is_interval_end`` on the offset from the row's interval end,
  ``last_updated_fresh`` on the age at the row's interval end (exact integer microseconds), ``key_unique`` on
  the key plus the interval number, ``row_count_<cur>`` on the row's interval count against its minimum;
- table-level checks (columns, types) depend only on the schema, and range mode only batches intervals whose
  staging table has exactly ``SNAPSHOT_SCHEMA`` and at least one row; any other interval (and any chunk where a
  GX expectation raised) runs through the per-interval stage code unchanged.

Data Docs are not built in range mode (GX renders ~2 s of HTML per interval); ``cryptopipe validate`` on one
interval builds them on demand, byte-identical to a normal run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cryptopipe.core.config import Settings
from cryptopipe.core.errors import MissingInputError, PipelineError
from cryptopipe.core.layout import Interval, staging_key, validated_key
from cryptopipe.core.schema import SNAPSHOT_SCHEMA
from cryptopipe.core.stage import StageContext, StageResult, finish_stage, new_context
from cryptopipe.core.storage import ObjectStore, open_stores
from cryptopipe.validate import stage
from cryptopipe.validate.frame import to_frame
from cryptopipe.validate.gx_runner import Outcome, _quiet_gx, build_checkpoint, import_gx, outcomes_of
from cryptopipe.validate.suite import SUITE_NAME, SUITE_VERSION, Check, build_suite

if TYPE_CHECKING:
    import pandas as pd

STAGE = "validate"
CHUNK_HOURS = 24 * 31  # intervals per GX run: bounds memory (~190k rows at 250 coins) at ~12 runs a year
INTERVAL_COL = "_dq_range_interval"
OFFSET_COL = "_dq_range_snapshot_offset_us"
AGE_COL = "_dq_range_last_updated_age_us"
ROWS_PREFIX = "_dq_range_rows_"
MIN_PREFIX = "_dq_range_min_rows_"
US = 1_000_000
IO_THREADS = 8  # per-interval reads and writes in flight at once (I/O bound: fsync per object, S3 latency)


@dataclass
class _Item:
    """One interval of a chunk: its context (range mode; the daily layout has one per day), and (when batched) its
    staging table and row range."""

    interval: Interval
    ctx: StageContext | None = None
    table: pa.Table | None = None
    lo: int = 0
    hi: int = 0
    checks: list[Check] | None = None


def run_range(
    settings: Settings, intervals: list[Interval], log: logging.Logger, *, chunk_hours: int = CHUNK_HOURS
) -> list[StageResult]:
    """Validate every interval; one StageResult per interval, in order (failed ones carry their exit code)."""
    store, archive_store = open_stores(settings.storage)
    results: list[StageResult] = []
    validator = RangeValidator()
    for first in range(0, len(intervals), chunk_hours):
        chunk = intervals[first : first + chunk_hours]
        results.extend(_run_chunk(settings, (store, archive_store), chunk, log, validator))
    return results


# --- per-interval bookkeeping (run records, errors) -------------------------------------------------------------


def _guarded(ctx: StageContext, work: Callable[[], None], shared_seconds: float) -> StageResult:
    """Run one interval's work like execute_stage does: typed errors fail the interval, bugs propagate."""
    clock = time.perf_counter()
    try:
        work()
    except PipelineError as exc:
        return finish_stage(ctx, shared_seconds + time.perf_counter() - clock, exc)
    except Exception as exc:
        finish_stage(ctx, shared_seconds + time.perf_counter() - clock, exc)
        raise
    return finish_stage(ctx, shared_seconds + time.perf_counter() - clock)


def batchable(table: pa.Table) -> bool:
    """Exactly SNAPSHOT_SCHEMA and rows: table-level checks are then the same for every interval of a run."""
    return table.num_rows > 0 and table.schema.equals(SNAPSHOT_SCHEMA, check_metadata=False)


# --- the chunk --------------------------------------------------------------------------------------------------


def _run_chunk(
    settings: Settings,
    stores: tuple[ObjectStore, ObjectStore],
    intervals: list[Interval],
    log: logging.Logger,
    validator: RangeValidator,
) -> list[StageResult]:
    clock = time.perf_counter()
    results: dict[str, StageResult] = {}  # by interval start (isoformat)
    batch: list[_Item] = []
    single: list[StageContext] = []
    with ThreadPoolExecutor(IO_THREADS) as pool:  # object-store latency (fsync, S3 round trips) overlaps
        loaded = list(pool.map(lambda iv: _load(settings, stores, iv, log), intervals))
    for item in loaded:
        if isinstance(item, StageResult):
            results[item.interval_start] = item
        elif item.table is not None and batchable(item.table):
            batch.append(item)
        else:
            assert item.ctx is not None
            single.append(item.ctx)
    outcomes: list[dict[str, Outcome]] = []
    gx_seconds = 0.0
    if batch:
        try:
            gx_clock = time.perf_counter()
            outcomes = _validate(settings, batch, validator)
            gx_seconds = time.perf_counter() - gx_clock
        except FallBackError as exc:
            log.warning("range validation fell back to per-interval runs", extra={"reason": str(exc)})
            single.extend(item.ctx for item in batch if item.ctx is not None)
            batch, outcomes = [], []
    shared = (time.perf_counter() - clock) / max(1, len(batch) + len(single))
    gx_version = import_gx().__version__  # once here: import_gx swaps warning filters, which is not thread-safe

    def publish(pair: tuple[_Item, dict[str, Outcome]]) -> StageResult:
        item, per_interval = pair
        ctx, table, checks = item.ctx, item.table, item.checks
        assert ctx is not None and table is not None and checks is not None
        ctx.result.metrics["batch_intervals"] = len(batch)
        ctx.result.metrics["batch_gx_seconds"] = round(gx_seconds, 3)  # the chunk's GX run, shared

        def work() -> None:
            stage.publish(ctx, table, checks, per_interval, None, gx_version=gx_version)

        return _guarded(ctx, work, shared)

    with ThreadPoolExecutor(IO_THREADS) as pool:
        for result in pool.map(publish, zip(batch, outcomes, strict=True)):
            results[result.interval_start] = result
    for ctx in single:  # the per-interval stage code, unchanged (Data Docs included)
        results[ctx.result.interval_start] = _guarded(ctx, lambda ctx=ctx: stage.run(ctx), 0.0)
    return [results[interval.start.isoformat()] for interval in intervals]


def _load(
    settings: Settings, stores: tuple[ObjectStore, ObjectStore], interval: Interval, log: logging.Logger
) -> _Item | StageResult:
    ctx = new_context(STAGE, settings, interval, stores, log)
    key = staging_key(interval)
    if not ctx.store.exists(key):
        return _without_staging(ctx)
    try:
        return _Item(interval, ctx, ctx.read_table(key))
    except PipelineError as exc:
        return finish_stage(ctx, 0.0, exc)


def _without_staging(ctx: StageContext) -> StageResult:
    """No staging partition: backfilled history (validated written directly) is skipped; otherwise exit 8."""
    interval = ctx.interval
    if ctx.store.exists(validated_key(interval)):
        ctx.log.info(
            "validate skipped: no staging partition, validated exists (written by backfill)",
            extra={"interval_start": interval.start.isoformat(), "validated": validated_key(interval)},
        )
        ctx.result.metrics["skipped"] = "no staging; validated written by backfill"
        return finish_stage(ctx, 0.0, status="skipped", message="no staging partition; validated written by backfill")
    err = MissingInputError(
        f"{ctx.store.url(staging_key(interval))} is missing: validate needs it "
        "(run the upstream stage for this interval first)",
        key=staging_key(interval),
    )
    return finish_stage(ctx, 0.0, err)


class FallBackError(Exception):
    """The range run cannot stand for the per-interval runs (a GX expectation raised): run them one by one."""


# --- one GX run over the chunk, split back per interval ---------------------------------------------------------


def validate_tables(
    settings: Settings, tables: list[tuple[Interval, pa.Table]], validator: RangeValidator
) -> tuple[list[list[Check]], list[dict[str, Outcome]]]:
    """One GX run over these intervals' staging tables (each ``batchable``): per interval its suite and outcomes,
    equal to what the per-interval run gives. FallBackError if an expectation raised in the shared run."""
    batch = [_Item(interval, table=table) for interval, table in tables]
    outcomes = _validate(settings, batch, validator)
    return [item.checks or [] for item in batch], outcomes


def _validate(settings: Settings, batch: list[_Item], validator: RangeValidator) -> list[dict[str, Outcome]]:
    offset = 0
    for item in batch:
        assert item.table is not None
        item.lo, offset = offset, offset + item.table.num_rows
        item.hi = offset
        item.checks = build_suite(settings, item.interval, item.table)
    template = batch[0].checks
    assert template is not None
    _same_rules(template, batch)
    # One chunk per column: GX filters the whole frame once per metric, and pandas' take on an Arrow string column
    # of ~700 chunks (one per staging table) costs ~2x that on one contiguous array.
    table = pa.concat_tables([item.table for item in batch if item.table is not None]).combine_chunks()
    frame = _range_frame(settings, table, batch)
    checks = _range_checks(settings, template)
    outcomes = validator.run(frame, checks)
    raised = [o.name for o in outcomes.values() if o.exception is not None]
    if raised:
        raise FallBackError(f"expectation(s) {raised} raised in the range run")
    return _split_outcomes(template, checks, outcomes, frame, batch)


def _is_row_count(check: Check) -> bool:
    return check.name.startswith("row_count_") and check.row_condition is not None


def _interval_dependent(check: Check) -> bool:
    return check.name in {"key_unique", "snapshot_time_is_interval_end", "last_updated_fresh"} or _is_row_count(check)


def _same_rules(template: list[Check], batch: list[_Item]) -> None:
    """Every other check must be the same rule in every interval, or one GX run cannot judge them all."""
    for item in batch[1:]:
        assert item.checks is not None
        for a, b in zip(template, item.checks, strict=True):
            if a.name != b.name or (not _interval_dependent(a) and a.kwargs != b.kwargs):
                raise RuntimeError(
                    f"check {a.name!r} differs between intervals {batch[0].interval} and {item.interval}; "
                    "range validation only knows the interval-dependent checks of suite.py (update batch.py)"
                )


def _timestamps_us(table: pa.Table, column: str) -> np.ndarray:
    """int64 microseconds since the epoch, as float64 (exact below 2**53 us, ~285 years), NaN where null."""
    values = pc.cast(table[column], pa.timestamp("us", tz="UTC")).cast(pa.int64())
    return values.to_numpy(zero_copy_only=False).astype("float64")


def _per_row(batch: list[_Item], values: list[float]) -> np.ndarray:
    return np.repeat(np.asarray(values, dtype="float64"), [item.hi - item.lo for item in batch])


def _range_frame(settings: Settings, table: pa.Table, batch: list[_Item]) -> pd.DataFrame:
    frame = to_frame(table, settings.quality)
    ends = _per_row(batch, [item.interval.end.timestamp() * US for item in batch])
    frame[OFFSET_COL] = _timestamps_us(table, "snapshot_time") - ends
    frame[AGE_COL] = ends - _timestamps_us(table, "last_updated")
    keys_missing = np.logical_and.reduce(
        [frame[c].isna().to_numpy() for c in ("coin_id", "vs_currency", "snapshot_time")]
    )
    number = _per_row(batch, [float(i) for i in range(len(batch))])
    frame[INTERVAL_COL] = np.where(keys_missing, np.nan, number)  # all keys missing: GX skips the row, as per interval
    for check in batch[0].checks or []:
        if _is_row_count(check):
            column, currency = check.row_condition or ("", "")
            counts, minimums = [], []
            for item in batch:
                item_check = next(c for c in item.checks or [] if c.name == check.name)
                assert item.table is not None
                counts.append(float(pc.sum(pc.equal(item.table[column], currency)).as_py() or 0))
                minimums.append(float(item_check.kwargs["min_value"]))
            frame[ROWS_PREFIX + check.name] = _per_row(batch, counts)
            frame[MIN_PREFIX + check.name] = _per_row(batch, minimums)
    return frame


def _range_checks(settings: Settings, template: list[Check]) -> list[Check]:
    """The suite as one GX run over many intervals evaluates it (names unchanged, kwargs on helper columns)."""
    fresh_us = float(settings.quality.freshness_minutes * 60 * US)
    checks = []
    for original in template:
        check = original
        if check.name == "key_unique":
            check = replace(check, kwargs={"column_list": [*check.kwargs["column_list"], INTERVAL_COL]})
        elif check.name == "snapshot_time_is_interval_end":
            check = replace(check, kwargs={"column": OFFSET_COL, "min_value": 0.0, "max_value": 0.0})
        elif check.name == "last_updated_fresh":
            check = replace(check, kwargs={"column": AGE_COL, "max_value": fresh_us})
        elif _is_row_count(check):
            check = replace(
                check,
                gx_type="ExpectColumnPairValuesAToBeGreaterThanB",
                kwargs={
                    "column_A": ROWS_PREFIX + check.name,
                    "column_B": MIN_PREFIX + check.name,
                    "or_equal": True,
                    "ignore_row_if": "either_value_is_missing",
                },
                row_condition=None,
                row_level=True,
            )
        checks.append(check)
    return checks


def _missing_mask(check: Check, frame: pd.DataFrame) -> np.ndarray:
    """Rows GX counts as missing for a map expectation (its ``nonnull_count`` complement)."""
    kw = check.kwargs
    if "column" in kw:
        return frame[kw["column"]].isna().to_numpy()
    if "column_A" in kw:
        return (frame[kw["column_A"]].isna() | frame[kw["column_B"]].isna()).to_numpy()
    return np.logical_and.reduce([frame[c].isna().to_numpy() for c in kw["column_list"]])


def _split_outcomes(
    template: list[Check], checks: list[Check], outcomes: dict[str, Outcome], frame: pd.DataFrame, batch: list[_Item]
) -> list[dict[str, Outcome]]:
    per_interval: list[dict[str, Outcome]] = [{} for _ in batch]
    bounds = np.asarray([item.lo for item in batch] + [batch[-1].hi])
    helpers = {c for c in frame.columns if str(c).startswith("_dq_range_")}
    for original, check in zip(template, checks, strict=True):
        outcome = outcomes[check.name]
        if not check.row_level:  # columns and types: a property of the (identical) schema
            observed = outcome.observed_value
            if isinstance(observed, list):
                observed = [c for c in observed if c not in helpers]
            shared = replace(outcome, observed_value=observed)  # read-only from here on: one object for all
            for result in per_interval:
                result[check.name] = shared
            continue
        index = np.asarray(outcome.unexpected_index, dtype="int64")
        cuts = np.searchsorted(index, bounds)
        missing_cum = None
        if outcome.missing_count is not None:
            mask = _missing_mask(check, frame)
            if int(mask.sum()) != outcome.missing_count:
                raise RuntimeError(
                    f"check {check.name}: {int(mask.sum())} missing rows recounted, GX counted {outcome.missing_count}"
                )
            missing_cum = np.concatenate([[0], np.cumsum(mask)])
        if _is_row_count(original):  # per check, not per interval: this loop runs checks x intervals times
            counts = frame[ROWS_PREFIX + check.name].to_numpy()
            for i, item in enumerate(batch):
                per_interval[i][check.name] = Outcome(
                    name=check.name, success=bool(cuts[i] == cuts[i + 1]), observed_value=int(counts[item.lo])
                )
            continue
        for i, item in enumerate(batch):
            rows = (index[cuts[i] : cuts[i + 1]] - item.lo).tolist()
            missing = None if missing_cum is None else int(missing_cum[item.hi] - missing_cum[item.lo])
            per_interval[i][check.name] = _map_outcome(check.name, item.hi - item.lo, missing, rows)
    return per_interval


def _map_outcome(name: str, element_count: int, missing: int | None, rows: list[int]) -> Outcome:
    """GX's result fields of a map expectation for one interval (great_expectations ``_format_map_output``)."""
    unexpected = len(rows)
    percent: float | None = None
    if element_count > 0:
        if missing is None:
            percent = unexpected / element_count * 100
        elif element_count - missing > 0:
            percent = unexpected / (element_count - missing) * 100
    return Outcome(
        name=name,
        success=unexpected == 0,
        element_count=element_count,
        unexpected_count=unexpected,
        unexpected_percent=percent,
        missing_count=missing,
        unexpected_index=rows,
    )


class RangeValidator:
    """One ephemeral GX context for the whole range: the suite is identical for every chunk (its interval-dependent
    thresholds live in the frame), so it is registered once and the checkpoint runs once per chunk."""

    def __init__(self) -> None:
        self._checkpoint: Any = None
        self._names: tuple[str, ...] = ()

    def _build(self, checks: list[Check]) -> Any:
        with _quiet_gx():
            return build_checkpoint(
                checks,
                asset="staging_range",
                batch="range",
                definition=f"{SUITE_NAME}-range",
                checkpoint="validate-range",
                meta={"suite_version": SUITE_VERSION, "mode": "range"},
                docs_dir=None,
            )

    def run(self, frame: pd.DataFrame, checks: list[Check]) -> dict[str, Outcome]:
        names = tuple(f"{c.name}:{c.gx_type}:{sorted(c.kwargs.items())!r}" for c in checks)
        if self._checkpoint is None or names != self._names:
            self._checkpoint, self._names = self._build(checks), names
        with _quiet_gx():
            run = self._checkpoint.run(batch_parameters={"dataframe": frame})
        return outcomes_of(run, checks)
