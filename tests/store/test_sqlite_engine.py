"""What only the SQLite engine promises: its file, its settings, its refusals."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from idr.model.value import HandleRecord, HandleValue
from idr.store import SqliteStore, StoreError, Write


def _rec(handle: str) -> HandleRecord:
    return HandleRecord(handle, (HandleValue(1, "URL", b"https://example.cn/"),))


def test_missing_data_directory_fails_clearly(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    with pytest.raises(StoreError, match=r"data directory .*no-such-dir.* does not exist"):
        SqliteStore(missing / "node.db")
    assert not missing.exists()


def test_garbage_file_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    path.write_bytes(b"this is not a database, it is a shopping list\n" * 200)
    with pytest.raises(StoreError, match=r"node\.db"):
        SqliteStore(path)


def test_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(StoreError, match="not an idr store"):
        SqliteStore(path)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    SqliteStore(path).close()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE meta SET value = '99' WHERE name = 'schema_version'")
    with pytest.raises(StoreError, match="schema version '99'"):
        SqliteStore(path)


def test_memory_database_is_refused() -> None:
    with pytest.raises(StoreError):
        SqliteStore(":memory:")


def test_file_settings(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    store = SqliteStore(path)
    try:
        store.commit("create", "a", [Write("88.100/A", _rec("88.100/a"))])
        with sqlite3.connect(path) as raw:
            assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert raw.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone() == ("1",)
            assert raw.execute("SELECT key, prefix, handle FROM handles").fetchall() == [
                ("88.100/A", "88.100", "88.100/a")
            ]
        # Durability across power loss rests on this one setting of the writer connection.
        assert store._wconn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    finally:
        store.close()


def test_corrupt_row_raises_store_error(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    store = SqliteStore(path)
    try:
        store.commit("create", "a", [Write("88.100/A", _rec("88.100/a"))])
        with sqlite3.connect(path) as raw:
            raw.execute("UPDATE handles SET vals = x'00000005ff' WHERE key = '88.100/A'")
            raw.execute("UPDATE txlog SET payload = x'07'")
        with pytest.raises(StoreError, match=r"88\.100/A"):
            store.get("88.100/A")
        with pytest.raises(StoreError, match="log entry 1"):
            store.log_since(0)
    finally:
        store.close()


def test_commit_failing_inside_sqlite_rolls_back(tmp_path: Path) -> None:
    """A real engine failure (the database is full) half-way through a transaction."""
    path = tmp_path / "node.db"
    store = SqliteStore(path)
    try:
        store.commit("create", "a", [Write("88.100/KEEP", _rec("88.100/keep"))])
        pages = store._wconn.execute("PRAGMA page_count").fetchone()[0]
        store._wconn.execute(f"PRAGMA max_page_count = {pages + 3}")  # a disk that is nearly full
        big = HandleRecord("88.100/big", (HandleValue(1, "DESC", b"x" * 200_000),))
        with pytest.raises(StoreError, match="full"):
            store.commit(
                "create", "a", [Write("88.100/SMALL", _rec("88.100/small")), Write("88.100/BIG", big)]
            )
        assert store.get("88.100/SMALL") is None
        assert store.last_seq() == 1 and len(store.log_since(0)) == 1
        assert store.commit("create", "a", [Write("88.100/SMALL", _rec("88.100/small"))]) == 2
    finally:
        store.close()


def test_reader_connections_of_ended_threads_are_closed(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "node.db")
    try:
        for _ in range(20):
            t = threading.Thread(target=store.get, args=("88.100/X",))
            t.start()
            t.join()
        store.get("88.100/X")
        assert len(store._readers) <= 2
    finally:
        store.close()
