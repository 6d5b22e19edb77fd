"""Ingest end to end through the CLI against the replay server, clean and under faults."""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
import time
from datetime import datetime

import pyarrow.parquet as pq
import pytest

from cryptopipe.core.errors import ExitCode
from cryptopipe.ingest import stage as ingest_stage

from .conftest import PARTITION, Pipeline

RAW = f"raw/coins_markets/{PARTITION}"
STAGING = f"staging/market_snapshots/{PARTITION}/snapshots.parquet"
MARKER = f"{RAW}/_SUCCESS.json"


def data_objects(objects: dict[str, bytes]) -> dict[str, bytes]:
    """Raw pages, the marker and tables: what must be byte-identical (sidecars hold fetch times and headers)."""
    return {k: v for k, v in objects.items() if not k.endswith(".meta.json")}


def staging_rows(pipeline: Pipeline, name: str = "store") -> list[dict]:
    return pq.read_table(io.BytesIO(pipeline.objects(name)[STAGING])).to_pylist()  # type: ignore[no-any-return]


def clean_reference(pipeline: Pipeline) -> dict[str, bytes]:
    pipeline.server.clear_faults()
    assert pipeline.ingest("clean") == 0
    pipeline.server.clear_requests()
    return data_objects(pipeline.objects("clean"))


def assert_nothing_written(pipeline: Pipeline) -> None:
    assert pipeline.objects() == {}, "a failed ingest must leave no raw page, marker or staging object"
    assert pipeline.run_record()["status"] == "failed"


# --- clean runs ---


def test_clean_run_layout_rows_and_rerun_is_byte_identical(pipeline: Pipeline) -> None:
    assert pipeline.ingest() == 0
    first = pipeline.objects()
    assert sorted(k for k in first if k.startswith(RAW)) == [
        MARKER,
        f"{RAW}/vs=eur/page=0001.json.gz",
        f"{RAW}/vs=eur/page=0001.meta.json",
        f"{RAW}/vs=usd/page=0001.json.gz",
        f"{RAW}/vs=usd/page=0001.meta.json",
    ]
    rows = staging_rows(pipeline)
    assert len(rows) == 60
    assert len({(r["coin_id"], r["vs_currency"]) for r in rows}) == 60
    assert {r["snapshot_time"].isoformat() for r in rows} == {"2025-06-01T13:00:00+00:00"}
    assert all(r["source"] == "coins_markets" and r["source_key"].startswith(RAW) for r in rows)
    # the raw page is the body as received, gzip'ed deterministically, described by its sidecar
    body = gzip.decompress(first[f"{RAW}/vs=usd/page=0001.json.gz"])
    meta = json.loads(first[f"{RAW}/vs=usd/page=0001.meta.json"])
    assert meta["response"]["status"] == 200 and meta["body"]["bytes"] == len(body)
    assert meta["request"]["params"]["price_change_percentage"] == "1h,24h,7d"
    assert meta["request"]["params"]["precision"] == "full"
    assert first[f"{RAW}/vs=usd/page=0001.json.gz"][4:8] == b"\0\0\0\0"  # gzip mtime 0
    record = pipeline.run_record()
    assert record["metrics"]["rows"] == 60 and record["metrics"]["requests"] == 2

    pipeline.server.clear_requests()
    assert pipeline.ingest() == 0
    assert pipeline.objects() == first  # byte-identical, sidecars included: nothing was fetched again
    assert pipeline.server.requests == []
    assert pipeline.run_record()["metrics"]["raw_reused"] is True
    assert len(staging_rows(pipeline)) == 60


def test_paging_and_explicit_ids(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_stage, "PER_PAGE_MAX", 12)  # 30 coins -> 3 pages of 10
    pipeline.set(COINS__IDS="bitcoin,litecoin,lyxo,no-such-coin", QUOTE_CURRENCIES="usd")  # lyxo: rank ~49
    assert pipeline.ingest() == 0
    pages = [r["query"] for r in pipeline.server.requests]
    assert [(q.get("page"), q.get("per_page"), "ids" in q) for q in pages] == [
        ("1", "10", False),
        ("2", "10", False),
        ("3", "10", False),
        ("1", "12", True),
    ]
    rows = staging_rows(pipeline)
    ids = {r["coin_id"] for r in rows}
    assert len(rows) == len(ids) == 31  # top 30 (bitcoin and litecoin among them) + lyxo
    assert {"bitcoin", "litecoin", "lyxo"} <= ids
    metrics = pipeline.run_record()["metrics"]
    assert metrics["pages"] == 4 and metrics["missing_ids"] == 1
    assert metrics["missing_id_list"] == ["no-such-coin/usd"]
    assert metrics["ids_in_top"] == 2


# --- faults that end in success: same raw data and tables as a clean run ---


def test_429_then_success_waits_at_least_retry_after(pipeline: Pipeline) -> None:
    reference = clean_reference(pipeline)
    pipeline.server.set_faults([{"path": "coins/markets", "faults": ["429:1"]}])
    started = time.monotonic()
    assert pipeline.ingest() == 0
    assert time.monotonic() - started >= 1.0
    served = pipeline.server.requests
    assert served[0]["status"] == 429 and served[1]["status"] == 200
    gap = (
        datetime.fromisoformat(served[1]["received_at"].replace("Z", "+00:00"))
        - datetime.fromisoformat(served[0]["received_at"].replace("Z", "+00:00"))
    ).total_seconds()
    assert gap >= 0.999, f"retried after {gap} s, before Retry-After (1 s)"
    assert data_objects(pipeline.objects()) == reference
    assert pipeline.run_record()["metrics"]["retries"] == 1


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param(["500", "502", "503"], id="5xx-burst"),
        pytest.param(["hang"], id="hang-beyond-timeout"),
        pytest.param(["html"], id="html-with-200"),
        pytest.param(["truncated"], id="truncated-json"),
        pytest.param(["empty"], id="empty-first-page"),
    ],
)
def test_transient_faults_end_in_the_clean_result(pipeline: Pipeline, faults: list[str]) -> None:
    reference = clean_reference(pipeline)
    pipeline.server.set_faults([{"path": "vs_currency=eur", "faults": faults}])
    assert pipeline.ingest() == 0
    assert data_objects(pipeline.objects()) == reference
    assert pipeline.run_record()["metrics"]["retries"] == len(faults)


def test_drift_string_numbers_parse_to_the_same_table(pipeline: Pipeline) -> None:
    reference = clean_reference(pipeline)
    pipeline.server.set_faults([{"path": "coins/markets", "faults": ["drift:string_numbers"]}])
    assert pipeline.ingest() == 0
    got = data_objects(pipeline.objects())
    assert got[STAGING] == reference[STAGING]  # numbers as strings are converted
    assert got[f"{RAW}/vs=usd/page=0001.json.gz"] != reference[f"{RAW}/vs=usd/page=0001.json.gz"]  # raw as received


def test_drift_extra_and_renamed_optional_fields_are_reported(
    pipeline: Pipeline, capsys: pytest.CaptureFixture
) -> None:
    pipeline.server.set_faults(
        [{"path": "coins/markets", "faults": ["drift:extra=sentiment_score", "drift:rename=high_24h:high_day"]}]
    )
    assert pipeline.ingest() == 0
    metrics = pipeline.run_record()["metrics"]
    assert metrics["unknown_fields"] == 2
    assert metrics["unknown_field_names"] == ["high_day", "sentiment_score"]
    logs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    warning = [e for e in logs if e["event"].startswith("unknown fields")]
    assert warning and warning[0]["level"] == "warning"
    assert warning[0]["unknown_fields"] == ["high_day", "sentiment_score"]
    assert any(e["event"].startswith("optional fields absent") and "high_24h" in e["missing_fields"] for e in logs)
    eur = [r for r in staging_rows(pipeline) if r["vs_currency"] == "eur"]
    assert all(r["high_24h"] is None for r in eur) and all(r["price"] is not None for r in eur)


# --- faults that end in a clear failure with nothing written ---


@pytest.mark.parametrize(
    ("rule", "code", "text"),
    [
        ({"path": "coins/markets", "faults": ["429:0.05"], "repeat": True}, ExitCode.SOURCE_UNAVAILABLE, "HTTP 429"),
        ({"path": "vs_currency=eur", "faults": ["503"], "repeat": True}, ExitCode.SOURCE_UNAVAILABLE, "HTTP 503"),
        ({"path": "vs_currency=eur", "faults": ["html403"]}, ExitCode.SOURCE_INVALID, "HTML page"),
        ({"path": "coins/markets", "faults": ["key_rejected"]}, ExitCode.SOURCE_INVALID, "rejected the API key"),
        ({"path": "coins/markets", "faults": ["html"], "repeat": True}, ExitCode.SOURCE_INVALID, "HTML page"),
        ({"path": "coins/markets", "faults": ["truncated"], "repeat": True}, ExitCode.SOURCE_INVALID, "truncated"),
        ({"path": "vs_currency=eur", "faults": ["empty"], "repeat": True}, ExitCode.SOURCE_INVALID, "came back empty"),
        (
            {"path": "vs_currency=eur", "faults": ["drift:missing=current_price"]},
            ExitCode.SOURCE_INVALID,
            r"required field\(s\) current_price missing",
        ),
        (
            {"path": "coins/markets", "faults": ["drift:rename=last_updated:updated"]},
            ExitCode.SOURCE_INVALID,
            r"required field\(s\) last_updated missing",
        ),
    ],
)
def test_failures_exit_with_their_code_and_write_nothing(
    pipeline: Pipeline, capsys: pytest.CaptureFixture, rule: dict, code: ExitCode, text: str
) -> None:
    pipeline.set(API__RETRY__MAX_ATTEMPTS="3")
    pipeline.server.set_faults([rule])
    assert pipeline.ingest() == code
    assert_nothing_written(pipeline)
    errors = [json.loads(x) for x in capsys.readouterr().out.splitlines() if '"level": "error"' in x]
    assert errors
    assert re.search(text, errors[-1]["event"]), errors[-1]["event"]
    if "key_rejected" in rule["faults"] or "html403" in rule["faults"]:
        assert len(pipeline.server.requests) <= 2  # not retried (usd page fine, eur page refused at once)


def test_hang_on_every_attempt_fails_within_the_budget(pipeline: Pipeline) -> None:
    pipeline.set(API__RETRY__MAX_ATTEMPTS="2", API__TIMEOUT_SECONDS="0.5")
    pipeline.server.set_faults([{"path": "coins/markets", "faults": ["hang"], "repeat": True}])
    started = time.monotonic()
    assert pipeline.ingest() == ExitCode.SOURCE_UNAVAILABLE
    assert time.monotonic() - started < 5
    assert_nothing_written(pipeline)


def test_failed_interval_converges_on_rerun(pipeline: Pipeline) -> None:
    reference = clean_reference(pipeline)
    pipeline.server.set_faults([{"path": "vs_currency=eur", "faults": ["drift:missing=symbol"]}])
    assert pipeline.ingest() == ExitCode.SOURCE_INVALID
    assert_nothing_written(pipeline)
    assert pipeline.ingest() == 0  # the fault is gone
    assert data_objects(pipeline.objects()) == reference


# --- crash recovery and write-once ---


def test_pages_left_by_a_crashed_run_are_adopted(pipeline: Pipeline) -> None:
    """A run that died after writing the usd page but before the marker: the rerun keeps that page."""
    assert pipeline.ingest("crashed") == 0
    crashed = pipeline.root("crashed")
    shutil.rmtree(crashed / RAW / "vs=eur")
    (crashed / MARKER).unlink()
    shutil.rmtree(crashed / "staging")
    usd_before = (crashed / RAW / "vs=usd/page=0001.json.gz").read_bytes()
    pipeline.server.set_clock("2025-06-01T13:06:00Z")  # prices moved: a new fetch gives other bytes
    pipeline.server.clear_requests()
    assert pipeline.ingest("crashed") == 0
    assert [r["query"]["vs_currency"] for r in pipeline.server.requests] == ["eur"]  # only the missing page
    assert (crashed / RAW / "vs=usd/page=0001.json.gz").read_bytes() == usd_before
    marker = json.loads((crashed / MARKER).read_bytes())
    assert [p["key"] for p in marker["pages"]] == [f"{RAW}/vs=usd/page=0001.json.gz", f"{RAW}/vs=eur/page=0001.json.gz"]
    assert pipeline.run_record("crashed")["metrics"]["pages_adopted"] == 1
    settled = pipeline.objects("crashed")
    assert pipeline.ingest("crashed") == 0
    assert pipeline.objects("crashed") == settled  # converged


def test_config_change_after_ingest_is_a_conflict(pipeline: Pipeline) -> None:
    assert pipeline.ingest() == 0
    before = pipeline.objects()
    pipeline.set(COINS__TOP_N="31")
    assert pipeline.ingest() == ExitCode.CONFLICT
    assert pipeline.objects() == before


def test_altered_raw_is_detected(pipeline: Pipeline) -> None:
    assert pipeline.ingest() == 0
    page = pipeline.root() / RAW / "vs=usd/page=0001.json.gz"
    page.write_bytes(gzip.compress(b"[]", mtime=0))
    assert pipeline.ingest() == ExitCode.STORAGE


def test_api_key_is_sent_but_never_logged_or_stored(pipeline: Pipeline, capsys: pytest.CaptureFixture) -> None:
    key = "CG-replay-secret-0123456789"
    pipeline.set(API__PLAN="demo", API__KEY=key)
    assert pipeline.ingest() == 0
    assert pipeline.server.requests[0]["headers"]["x-cg-demo-api-key"] == "***"  # it was sent (masked by server)
    assert key not in capsys.readouterr().out
    for name, data in pipeline.objects(runs=True).items():
        assert key.encode() not in data, name
        if name.endswith(".gz"):
            assert key.encode() not in gzip.decompress(data), name
