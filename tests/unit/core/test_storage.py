"""The same behaviour tests on file:// and on a real S3 server (SeaweedFS)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from cryptopipe.core import storage
from cryptopipe.core.config import StorageSettings
from cryptopipe.core.errors import ObjectNotFoundError, StorageError, WriteConflictError
from cryptopipe.core.storage import FileStore, ObjectStore, S3Store, open_store
from tests.support.s3_server import S3Server


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ObjectStore]:
    if request.param == "file":
        yield FileStore(tmp_path / "store")
        return
    server: S3Server = request.getfixturevalue("s3_server")
    bucket = server.new_bucket()
    for key, value in server.env(bucket).items():
        monkeypatch.setenv(key, value)
    yield S3Store(bucket, "lake", endpoint_url=server.endpoint)


def test_put_get_roundtrip_and_replace(store: ObjectStore) -> None:
    store.put("a/b/c.bin", b"one")
    assert store.get("a/b/c.bin") == b"one"
    store.put("a/b/c.bin", b"two")
    assert store.get("a/b/c.bin") == b"two"
    assert store.exists("a/b/c.bin")
    assert not store.exists("a/b/missing")


def test_missing_object_is_typed(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFoundError, match="does not exist"):
        store.get("nope/x")
    assert store.get_or_none("nope/x") is None


def test_put_once_identical_is_noop_and_different_is_conflict(store: ObjectStore) -> None:
    assert store.put_once("raw/p/page=0001.json.gz", b"payload") is True
    assert store.put_once("raw/p/page=0001.json.gz", b"payload") is False
    with pytest.raises(WriteConflictError, match="refusing to overwrite"):
        store.put_once("raw/p/page=0001.json.gz", b"other")
    assert store.get("raw/p/page=0001.json.gz") == b"payload"


def test_concurrent_put_once_exactly_one_winner(store: ObjectStore) -> None:
    """Two writers of one write-once key with different bytes: one creates, the other gets a conflict."""
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def writer(i: int) -> None:
        barrier.wait()
        try:
            outcomes.append("created" if store.put_once("race/key", f"writer-{i}".encode()) else "noop")
        except WriteConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("created") == 1
    assert outcomes.count("conflict") == 7
    winner = store.get("race/key").decode()
    assert winner.startswith("writer-")


def test_listing_by_partition(store: ObjectStore) -> None:
    for hour in ("00", "01", "02"):
        store.put(f"validated/x/date=2026-11-22/hour={hour}/snapshots.parquet", b"p")
    store.put("validated/x/date=2026-11-23/hour=00/snapshots.parquet", b"p")
    day = store.list("validated/x/date=2026-11-22/")
    assert day == [f"validated/x/date=2026-11-22/hour={h}/snapshots.parquet" for h in ("00", "01", "02")]
    assert len(store.list("validated/x/")) == 4
    assert store.list("absent/") == []


def test_folders_are_the_folder_prefixes_directly_under_a_prefix(store: ObjectStore) -> None:
    for key in ("a/top.json", "a/date=2026-11-22/x.parquet", "a/date=2026-11-23/hour=00/y.parquet", "a/daily/z.json"):
        store.put(key, b"p")
    expected = ["a/daily/", "a/date=2026-11-22/", "a/date=2026-11-23/"]  # no keys, no deeper folders
    assert store.folders("a/") == store.folders("a") == expected
    assert store.folders("a/date=2026-11-23/") == ["a/date=2026-11-23/hour=00/"]
    assert store.folders("") == ["a/"]
    assert store.folders("a/date=2026-11-22/") == []  # only keys under it
    assert store.folders("absent/") == []
    assert store.folders("a/top.json") == []


def test_file_store_listing_hides_temp_files_and_names_an_unreadable_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileStore(tmp_path / "store")
    for key in ("top.json", "a/b/c.parquet", "a/d.json", "a/b/.c.parquet.tmp-123"):
        path = store.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    assert store.list("") == ["a/b/c.parquet", "a/d.json", "top.json"]  # sorted keys, in-flight temp file hidden
    assert store.list("a/") == store.list("a") == ["a/b/c.parquet", "a/d.json"]
    assert store.list("a/d.json") == ["a/d.json"]

    def unreadable(top: object, onerror: Callable[[OSError], None]) -> Iterator[tuple[str, list[str], list[str]]]:
        # what os.walk does for a folder it may not read (tests run as root, which reads any folder)
        onerror(PermissionError(13, "Permission denied", str(store.root / "a" / "b")))
        yield from ()

    monkeypatch.setattr(storage.os, "walk", unreadable)
    with pytest.raises(StorageError, match=r"cannot list .*a/b: Permission denied"):
        store.list("a/")

    def denied(path: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(storage.os, "scandir", denied)
    with pytest.raises(StorageError, match=r"cannot list .*/a: Permission denied"):
        store.folders("a/")


def test_delete_is_idempotent(store: ObjectStore) -> None:
    store.put("d/k", b"1")
    store.delete("d/k")
    store.delete("d/k")
    assert not store.exists("d/k")


def test_version_names_the_current_bytes(store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a derived cache checks (transform's price projections): absent -> None, stable until replaced."""
    monkeypatch.setattr(FileStore, "VERSION_SETTLE_NS", 0)
    assert store.version("v/k") is None
    store.put("v/k", b"one")
    first = store.version("v/k")
    assert first is not None
    assert store.version("v/k") == first
    store.put("v/k", b"two")
    assert store.version("v/k") not in (None, first)
    store.delete("v/k")
    assert store.version("v/k") is None


def test_file_version_not_vouched_for_right_after_a_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file younger than the timestamp granularity could be rewritten in the same tick: no version yet."""
    store = FileStore(tmp_path)
    store.put("v/k", b"one")
    assert store.version("v/k") is None
    real = time.time_ns
    monkeypatch.setattr(storage, "time", SimpleNamespace(time_ns=lambda: real() + FileStore.VERSION_SETTLE_NS))
    settled = store.version("v/k")
    assert settled is not None
    store.put("v/k", b"two")  # same size, a new file (rename): another version
    assert store.version("v/k") not in (None, settled)


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/../b", "./a"])
def test_bad_keys_rejected(store: ObjectStore, key: str) -> None:
    with pytest.raises(StorageError, match="invalid object key"):
        store.put(key, b"x")


def test_file_store_never_shows_partial_objects(tmp_path: Path) -> None:
    """A crash between temp write and rename leaves only a hidden temp file that listing ignores."""
    store = FileStore(tmp_path)
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / ".obj.abc.tmp").write_bytes(b"half")
    assert store.list("p/") == []
    assert not store.exists("p/obj")


def test_s3_store_down_is_storage_error(s3_server: S3Server) -> None:
    store = S3Store("bucket", endpoint_url="http://127.0.0.1:9")  # nothing listens on port 9
    with pytest.raises(StorageError, match=r"cannot write s3://bucket/k \(http://127.0.0.1:9\)"):
        store.put("k", b"x")


def test_s3_outage_then_recovery(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = s3_server.new_bucket()
    for key, value in s3_server.env(bucket).items():
        monkeypatch.setenv(key, value)
    store = open_store(f"s3://{bucket}", StorageSettings(s3_endpoint_url=s3_server.endpoint))
    store.put_once("raw/k", b"v")
    s3_server.stop()
    try:
        with pytest.raises(StorageError):
            store.get("raw/k")
    finally:
        s3_server.start()
    assert store.get("raw/k") == b"v"


def test_open_store_resolves_relative_and_absolute_file_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert isinstance(open_store("file://./data"), FileStore)
    assert open_store("file://./data").root == tmp_path / "data"  # type: ignore[attr-defined]
    assert open_store(f"file://{tmp_path}/abs").root == tmp_path / "abs"  # type: ignore[attr-defined]
