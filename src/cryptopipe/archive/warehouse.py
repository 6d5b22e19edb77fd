"""The SQL warehouse: SQLite (embedded default) or PostgreSQL (kind, RDS), through SQLAlchemy.

Loads are idempotent: within one transaction per interval, rows of the interval that are no longer in the new
data are deleted and the rest are upserted on the natural key, so a rerun leaves exactly one row per key and two
concurrent loads of one interval serialise on a per-interval lock (PostgreSQL advisory lock) instead of racing.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from cryptopipe.archive import models
from cryptopipe.core.errors import WarehouseError

MIGRATIONS = Path(__file__).with_name("migrations")
LOCK_TIMEOUT_MS = 30_000
BATCH = 500
SQLITE_PAGE_BYTES = 16_384  # page size of a new SQLite warehouse file


def safe_url(url: str) -> str:
    """The URL with its password hidden, for messages."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable warehouse URL>"


def create_engine(url: str) -> Engine:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # A writer waits for another writer instead of failing at once ("database is locked").
        engine = sa.create_engine(url, connect_args={"timeout": LOCK_TIMEOUT_MS / 1000})
        sa.event.listen(engine, "connect", _sqlite_page_size)
        return engine
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return sa.create_engine(
        parsed, pool_pre_ping=True, connect_args={"connect_timeout": 10, "application_name": "cryptopipe-archive"}
    )


def _sqlite_page_size(dbapi_connection: Any, _record: Any) -> None:
    # Takes effect only while the file is empty (a new warehouse; an existing one keeps its pages, durability is
    # unchanged): 16 KiB pages load a late-year block of 28 days with ~15 % less CPU than SQLite's 4 KiB default.
    dbapi_connection.execute(f"PRAGMA page_size = {SQLITE_PAGE_BYTES}")


@contextmanager
def warehouse_errors(url: str, action: str, also: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Turn driver errors (and ``also``: e.g. the bulk load's ADBC and Arrow errors) into one WarehouseError that
    says what failed and where (never the password)."""
    try:
        yield
    except WarehouseError:
        raise
    except (sa.exc.SQLAlchemyError, *also) as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise WarehouseError(
            f"warehouse {safe_url(url)}: {action} failed: {detail[0] if detail else type(exc).__name__}"
        ) from exc


def migrate(engine: Engine) -> str:
    """Bring the schema to the newest migration; returns the revision."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # two first runs must not both create the tables
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key("cryptopipe-migrations")})
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
        return str(MigrationContext.configure(conn).get_current_revision())


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def lock_interval(conn: Connection, interval_start: datetime) -> None:
    """Serialise loads of one interval across processes (PostgreSQL); SQLite serialises all writers anyway."""
    if conn.dialect.name != "postgresql":
        return
    conn.execute(sa.text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'"))
    conn.execute(
        sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(f"interval:{interval_start.isoformat()}")}
    )


def _clean(value: Any) -> Any:
    """NaN and infinities are not SQL values: store NULL."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def upsert(conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> int:
    if not rows:
        return 0
    keys = [c.name for c in table.primary_key.columns]
    dialect = conn.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - config validation only admits these two
        raise WarehouseError(f"unsupported warehouse dialect {dialect!r}")
    # One prepared statement per set of columns, executed over the rows (executemany): compiling a multi-row
    # VALUES statement per batch cost more than the rows themselves.
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append({k: _clean(v) for k, v in row.items()})
    for columns, batch in groups.items():
        stmt = insert(table)
        updates = {c: stmt.excluded[c] for c in columns if c not in keys}
        if updates:
            stmt = stmt.on_conflict_do_update(index_elements=keys, set_=updates)
        else:
            stmt = stmt.on_conflict_do_nothing()
        for start in range(0, len(batch), BATCH):
            conn.execute(stmt, batch[start : start + BATCH])
    return len(rows)


def replace_interval(
    conn: Connection, table: sa.Table, interval_column: str, interval_start: datetime, rows: Sequence[dict[str, Any]]
) -> int:
    """Make the table's rows of one interval exactly ``rows``: delete the ones that went away, upsert the rest."""
    keys = [c.name for c in table.primary_key.columns]
    new_keys = {tuple(row[k] for k in keys) for row in rows}
    existing = conn.execute(
        sa.select(*[table.c[k] for k in keys]).where(table.c[interval_column] == interval_start)
    ).all()
    stale = [tuple(r) for r in existing if _normalise_key(tuple(r)) not in {_normalise_key(k) for k in new_keys}]
    for key in stale:
        conn.execute(sa.delete(table).where(sa.and_(*[table.c[k] == v for k, v in zip(keys, key, strict=True)])))
    return upsert(conn, table, rows)


def _normalise_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    # SQLite hands back naive datetimes for timezone-aware columns; compare on UTC wall time.
    return tuple(v.replace(tzinfo=None) if isinstance(v, datetime) else v for v in key)


def count_rows(engine: Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


__all__ = [
    "create_engine",
    "lock_interval",
    "migrate",
    "models",
    "replace_interval",
    "safe_url",
    "upsert",
    "warehouse_errors",
]
