"""SQLite's log tail: the entries a group commit just logged are read back from memory, exactly
as the file holds them, and never an entry that is not committed or a tail with a gap."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from idr.model.handle import normalize_key
from idr.model.value import HandleRecord, HandleValue
from idr.store import StoreError, Write
from idr.store.base import Commit, LogEntry, RawEntry
from idr.store.sqlite import SqliteStore
from idr.store.tail import LogTail


def put(name: str, tag: str = "v1") -> Write:
    handle = f"88.100/{name}"
    return Write(
        normalize_key(handle), HandleRecord(handle, (HandleValue(1, "URL", f"https://x.cn/{tag}".encode()),))
    )


def from_file(store: SqliteStore, seq: int, limit: int = 1000) -> list[RawEntry]:
    rows = sqlite3.connect(store.path).execute(
        "SELECT seq, ts, op, actor, payload FROM txlog WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
    )
    return [RawEntry(int(s), float(ts), op, actor, bytes(p)) for s, ts, op, actor, p in rows]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "idr.sqlite3")
    yield s
    s.close()


def statements(store: SqliteStore) -> list[str]:
    """Statements this thread's reader connection runs from now on."""
    seen: list[str] = []
    store._reader().set_trace_callback(seen.append)
    return seen


def test_a_group_commits_entries_come_from_memory_as_the_file_holds_them(store: SqliteStore) -> None:
    store.commit("create", "a", [put("first")])
    seqs = store.commit_many([Commit("create", f"actor{i}", (put(f"g{i}"),)) for i in range(5)])
    seen = statements(store)
    got = store.log_recent(seqs[0] - 1)
    assert seen == []  # no statement: the writer handed them over after its COMMIT
    assert got == from_file(store, seqs[0] - 1)
    assert [e.seq for e in got] == seqs
    assert store.log_recent(seqs[1], 2) == from_file(store, seqs[1], 2)


def test_the_tail_forgets_on_any_other_change_to_the_log(store: SqliteStore) -> None:
    for i in range(3):
        store.commit("create", "a", [put(f"w{i}")])
    assert len(store.log_recent(0)) == 3
    store.bulk_load([put("bulk").record], op="import")  # type: ignore[list-item]
    assert store.log_recent(0) == [] and store.log_recent(store.last_seq() - 1) == []
    assert len(store.log_raw_since(0)) == 4  # the file answers
    seq = store.commit("create", "a", [put("after")])
    store.truncate_log(seq)
    assert store.log_recent(seq - 1) == []


def test_another_writers_entry_restarts_the_tail_after_the_gap(store: SqliteStore, tmp_path: Path) -> None:
    a = store.commit("create", "a", [put("mine")])
    other = SqliteStore(tmp_path / "idr.sqlite3")  # another process on the same file
    try:
        b = other.commit("create", "b", [put("theirs")])
    finally:
        other.close()
    c = store.commit("create", "a", [put("mine-again")])
    assert (a, b, c) == (a, a + 1, a + 2)
    # The tail holds ``c`` only: from ``a`` on, the file must answer (it has ``b``).
    assert store.log_recent(a) == []
    assert [e.seq for e in store.log_raw_since(a)] == [b, c]
    assert store.log_recent(b) == from_file(store, b)


def test_a_failed_commit_publishes_nothing(store: SqliteStore) -> None:
    seq = store.commit("create", "a", [put("ok")])
    bad = Write("88.100/BAD", HandleRecord("88.100/bad", (HandleValue(1, "URL", b"x" * 10, ttl=2**40),)))
    with pytest.raises(StoreError):
        store.commit("create", "a", [put("lost"), bad])
    assert store.log_recent(seq - 1) != [] and store.log_recent(seq) == [] == from_file(store, seq)
    nxt = store.commit("create", "a", [put("next")])
    assert [e.seq for e in store.log_recent(seq)] == [nxt]


def test_a_mirrors_applied_entries_are_held_too(store: SqliteStore, tmp_path: Path) -> None:
    src = SqliteStore(tmp_path / "primary.sqlite3")
    try:
        src.commit_many([Commit("create", "a", (put(f"m{i}"),)) for i in range(4)])
        entries: list[LogEntry] = src.log_since(0)
    finally:
        src.close()
    assert store.apply_entries(entries) == 4
    seen = statements(store)
    assert store.log_recent(0) == from_file(store, 0)
    assert seen == []


def test_the_tail_is_bounded_and_contiguous() -> None:
    tail = LogTail(max_entries=3, max_bytes=1000)
    tail.stage(0, [RawEntry(s, 0.0, "op", "", b"p") for s in (1, 2)])
    tail.committed()
    tail.stage(2, [RawEntry(s, 0.0, "op", "", b"p") for s in (3, 4)])
    tail.committed()
    assert [e.seq for e in tail.since(1, 10)] == [2, 3, 4]
    assert tail.since(0, 10) == []  # entry 1 fell out: the file answers
    assert tail.since(4, 10) == []
    tail.stage(9, [RawEntry(10, 0.0, "op", "", b"p" * 600)])  # a gap: starts again at 10
    tail.committed()
    assert tail.since(4, 10) == [] and [e.seq for e in tail.since(9, 10)] == [10]
    tail.stage(10, [RawEntry(11, 0.0, "op", "", b"p" * 600)])  # past max_bytes: 10 is dropped
    tail.committed()
    assert tail.since(9, 10) == [] and [e.seq for e in tail.since(10, 10)] == [11]
    tail.stage(11, [RawEntry(12, 0.0, "op", "", b"")])
    tail.rolled_back()
    tail.committed()  # a transaction that staged nothing: the log changed some other way
    assert tail.since(10, 10) == []
