"""Object storage behind one interface: ``file://`` (embedded default) and ``s3://`` (AWS, MinIO, SeaweedFS).

Guarantees on both backends:
- ``put`` is atomic: readers see the old object or the whole new one, never a partial one.
- ``put_once`` is write-once: an existing object with identical bytes is a no-op, with different bytes a
  ``WriteConflictError``; never an overwrite. On S3 this is a conditional write (``If-None-Match: *``), so two
  concurrent writers cannot both win; on files it is ``link(2)``, which fails if the name exists.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptopipe.core.errors import ConfigError, ObjectNotFoundError, StorageError, WriteConflictError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from cryptopipe.core.config import StorageSettings


def check_key(key: str) -> str:
    """Keys are relative, '/'-separated, with no empty, '.' or '..' segments."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in {"", ".", ".."} for p in parts):
        raise StorageError(f"invalid object key {key!r}")
    return key


class ObjectStore(ABC):
    """A flat namespace of immutable-by-convention byte objects under one root URI."""

    uri: str

    @abstractmethod
    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Create or atomically replace an object (derived outputs whose bytes are deterministic)."""

    @abstractmethod
    def _create_exclusive(self, key: str, data: bytes, content_type: str | None) -> bool:
        """Create the object only if absent; return False if it already existed."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """Read an object; ObjectNotFoundError when absent."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """All keys under a folder prefix (e.g. ``validated/x/date=2026-11-22/``), sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete an object; absent is not an error."""

    @abstractmethod
    def folders(self, prefix: str) -> list[str]:
        """The folder prefixes directly under a folder prefix (``a/`` -> ``a/b/``, ``a/c/``), sorted; none if it
        does not exist. Lets a caller descend only where it needs to (retention's sweep)."""

    def put_once(self, key: str, data: bytes, content_type: str | None = None) -> bool:
        """Write-once create. True if created, False if identical bytes were already there."""
        check_key(key)
        if self._create_exclusive(key, data, content_type):
            return True
        existing = self.get(key)
        if existing != data:
            raise WriteConflictError(
                f"{self.url(key)} already exists with different content "
                f"({len(existing)} bytes stored, {len(data)} bytes offered); refusing to overwrite",
                key=key,
            )
        return False

    def get_or_none(self, key: str) -> bytes | None:
        try:
            return self.get(key)
        except ObjectNotFoundError:
            return None

    def version(self, key: str) -> str | None:
        """A token that changes whenever the object is replaced: what a cache of something derived from it checks.

        None when the object is absent or the store cannot vouch for its version (then derive, do not cache).
        The same token at two moments means the object's bytes did not change in between.
        """
        return None

    def url(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{key}"


class FileStore(ObjectStore):
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).absolute()
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _write_temp(self, path: Path, data: bytes) -> Path:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return Path(tmp)

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def _create_exclusive(self, key: str, data: bytes, content_type: str | None) -> bool:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            os.link(tmp, path)  # atomic, and fails if the name exists: no overwrite race
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ObjectNotFoundError(f"{self.url(key)} does not exist", key=key) from None
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    # Files younger than this are "racily clean" (as in git): timestamps are coarse (a kernel tick), so a second
    # write in the same tick that reuses the freed inode with the same size would look like the first one.
    VERSION_SETTLE_NS = 2_000_000_000

    def version(self, key: str) -> str | None:
        """Inode, size, mtime and ctime: ``put`` replaces by rename, so every write is a new inode and time."""
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot stat {self._path(key)}: {exc.strerror or exc}") from exc
        if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) < self.VERSION_SETTLE_NS:
            return None
        return f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}-{st.st_ctime_ns}"

    def _folder(self, prefix: str) -> Path:
        return self.root / prefix.rstrip("/") if prefix else self.root

    def list(self, prefix: str) -> list[str]:
        base = self._folder(prefix)
        if not base.exists():
            return []
        if base.is_file():
            return [prefix]
        # os.walk reads each folder once with scandir (no stat per file): a year's working area lists in half
        # of rglob's time, which retention's sweep pays per run.
        cut = len(str(self.root)) + 1
        keys = []
        for folder, _dirs, files in os.walk(base, onerror=self._walk_error):
            head = f"{folder[cut:]}/" if len(folder) >= cut else ""  # the root itself: top-level keys
            keys += [head + name for name in files if not name.startswith(".")]  # in-flight temp files are hidden
        return sorted(keys)

    def folders(self, prefix: str) -> list[str]:
        base = self._folder(prefix)
        head = f"{prefix.rstrip('/')}/" if prefix else ""
        try:
            with os.scandir(base) as entries:
                names = [e.name for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)]
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise StorageError(f"cannot list {base}: {exc.strerror or exc}") from exc
        return sorted(f"{head}{name}/" for name in names)

    @staticmethod
    def _walk_error(exc: OSError) -> None:
        if isinstance(exc, FileNotFoundError):  # a folder emptied and removed while listing (retention): no keys
            return
        raise StorageError(f"cannot list {exc.filename}: {exc.strerror or exc}") from exc

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete {path}: {exc.strerror or exc}") from exc
        with contextlib.suppress(OSError):  # tidy empty partition folders; harmless if not empty
            for parent in path.parents:
                if parent == self.root:
                    break
                parent.rmdir()


class S3Store(ObjectStore):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        client: Any | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self.endpoint_url = endpoint_url
        self._client = client or self._make_client(endpoint_url, region)

    @staticmethod
    def _make_client(endpoint_url: str | None, region: str) -> Any:
        import boto3  # imported lazily: stages that never touch S3 skip the import cost
        from botocore.config import Config

        config = Config(
            retries={"mode": "standard", "max_attempts": 5},
            connect_timeout=5,
            read_timeout=30,
            s3={"addressing_style": "path"} if endpoint_url else {},
        )
        return boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)

    def _full(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, action: str, key: str, exc: Exception) -> StorageError:
        code = _error_code(exc)
        where = self.endpoint_url or "AWS S3"
        detail = f"{code}: {exc}" if code else f"{type(exc).__name__}: {exc}"
        return StorageError(f"cannot {action} {self.url(key)} ({where}): {detail}", key=key)

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=self._full(key), Body=data, ChecksumAlgorithm="SHA256", **extra
            )
        except Exception as exc:
            raise self._fail("write", key, exc) from exc

    def _create_exclusive(self, key: str, data: bytes, content_type: str | None) -> bool:
        extra = {"ContentType": content_type} if content_type else {}
        for _ in range(3):
            try:
                self._client.put_object(
                    Bucket=self.bucket,
                    Key=self._full(key),
                    Body=data,
                    IfNoneMatch="*",
                    ChecksumAlgorithm="SHA256",
                    **extra,
                )
                return True
            except Exception as exc:
                code = _error_code(exc)
                if code == "PreconditionFailed":
                    return False
                if code == "ConditionalRequestConflict":  # a concurrent conditional write in flight
                    continue
                raise self._fail("write", key, exc) from exc
        return False

    def get(self, key: str) -> bytes:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._full(key))
            return bytes(response["Body"].read())
        except Exception as exc:
            if _error_code(exc) in {"NoSuchKey", "404", "NotFound"}:
                raise ObjectNotFoundError(f"{self.url(key)} does not exist", key=key) from None
            raise self._fail("read", key, exc) from exc

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._full(key))
            return True
        except Exception as exc:
            if _error_code(exc) in {"NoSuchKey", "404", "NotFound"}:
                return False
            raise self._fail("check", key, exc) from exc

    def version(self, key: str) -> str | None:
        """The ETag (the MD5 of the bytes for a single-part upload), and the version id on a versioned bucket."""
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self._full(key))
        except Exception as exc:
            if _error_code(exc) in {"NoSuchKey", "404", "NotFound"}:
                return None
            raise self._fail("check", key, exc) from exc
        etag = head.get("ETag")
        return f"{etag}:{head.get('VersionId') or ''}" if etag else None

    def _pages(self, prefix: str, **extra: str) -> Iterator[dict[str, Any]]:
        """The ListObjectsV2 pages under a prefix relative to the store's; ``extra``: e.g. ``Delimiter``."""
        if prefix and ".." in prefix.split("/"):
            raise StorageError(f"invalid prefix {prefix!r}")
        base = f"{self.prefix}/" if self.prefix else ""
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            yield from paginator.paginate(Bucket=self.bucket, Prefix=base + prefix.lstrip("/"), **extra)
        except Exception as exc:
            raise self._fail("list", prefix or "/", exc) from exc

    def list(self, prefix: str) -> list[str]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        return sorted(obj["Key"][strip:] for page in self._pages(prefix) for obj in page.get("Contents", []))

    def folders(self, prefix: str) -> list[str]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        folder = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        pages = self._pages(folder, Delimiter="/")
        return sorted(common["Prefix"][strip:] for page in pages for common in page.get("CommonPrefixes", []))

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._full(key))
        except Exception as exc:
            raise self._fail("delete", key, exc) from exc


def _error_code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


def open_store(uri: str, settings: StorageSettings | None = None) -> ObjectStore:
    """Open the store a ``file://`` or ``s3://`` URI names."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        # file://./data (relative) and file:///abs/path (absolute) are both accepted.
        path = (parts.netloc + parts.path) if parts.netloc else parts.path
        return FileStore(path or ".")
    if parts.scheme == "s3":
        endpoint = settings.s3_endpoint_url if settings else None
        region = settings.s3_region if settings else "us-east-1"
        return S3Store(parts.netloc, parts.path, endpoint_url=endpoint, region=region)
    raise ConfigError(f"storage URI {uri!r}: scheme must be file:// or s3://")


def open_stores(settings: StorageSettings) -> tuple[ObjectStore, ObjectStore]:
    """The working store and the archive store (the working store itself unless archive_uri is set)."""
    work = open_store(settings.uri, settings)
    archive = open_store(settings.archive_uri, settings) if settings.archive_uri else work
    return work, archive
