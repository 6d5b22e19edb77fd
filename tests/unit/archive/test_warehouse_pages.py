"""A new SQLite warehouse file gets 16 KiB pages; an existing one keeps its own."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cryptopipe.archive.warehouse import SQLITE_PAGE_BYTES, create_engine, migrate


def _page_size(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA page_size").fetchone()[0])


def test_new_warehouse_gets_large_pages(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    engine = create_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    assert _page_size(path) == SQLITE_PAGE_BYTES


def test_existing_warehouse_keeps_its_pages(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
    assert _page_size(path) == 4096
    engine = create_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    assert _page_size(path) == 4096
