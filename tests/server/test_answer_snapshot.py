"""A restarted node answers from the answers it built before (``idr.server.snapshot``), and never
with one the store no longer holds: real ``idr serve`` processes on 127.0.0.1, a real SQLite
store written to by other writers while the node is down, the snapshot file damaged on disk."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from idr.core.config import NodeConfig
from idr.model.errors import ResponseCode
from idr.model.handle import normalize_key
from idr.model.value import HandleRecord, HandleValue
from idr.server.hotcache import AnswerCache
from idr.server.snapshot import Discard, changed_since, fingerprint, load, save, snapshot_path
from idr.store.base import Write
from idr.store.sqlite import SqliteStore
from tests.procs import ServeProc, idr

SECRET = "snapshot-secret"
ADMIN = ("300:0.NA/88.100", SECRET)
LOADED = re.compile(r"answer snapshot loaded: (\d+) answers \((\d+) dropped")


def put(node: ServeProc, handle: str, url: str) -> None:
    body = {"values": [{"index": 1, "type": "URL", "data": {"format": "string", "value": url}}]}
    status, doc = node.call("PUT", f"/api/handles/{handle}", body, auth=ADMIN)
    assert status in (200, 201) and doc["responseCode"] == 1, doc


def udp(node: ServeProc, handle: str) -> tuple[int, list[str]]:
    code, values = node.resolve_native(handle, "udp")
    return code, [d.decode() for _, t, d in values if t == "URL"]


def log_of(node: ServeProc) -> str:
    return (node.data.parent / f"{node.data.name}.log").read_text(errors="replace")


def starts(node: ServeProc) -> list[str]:
    """What each start said about the snapshot (in order), from the node's own log."""
    return re.findall(
        r"answer snapshot (?:loaded: [^\n]*|[^\n]*discarded, starting cold: [^\n]*)", log_of(node)
    )


def restart(node: ServeProc, *args: str, lines: int = 1) -> list[str]:
    """``idr serve`` again (``args``: its options) and what the start said about its snapshot
    (``lines``: one per process). HTTP answers before the native port opens, so the lines are
    waited for (bounded), not expected when ``start`` returns."""
    before = len(starts(node)) if node.data.parent.joinpath(f"{node.data.name}.log").exists() else 0
    node.start(*args)
    deadline = time.monotonic() + 60
    while len(starts(node)) < before + lines:
        alive = node.proc is not None and node.proc.poll() is None
        assert alive and time.monotonic() < deadline, log_of(node)
        time.sleep(0.05)
    return starts(node)[before:]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ServeProc]:
    n = ServeProc.init(tmp_path / "node", "--prefix", "88.100", "--admin-secret", SECRET)
    yield n
    n.stop()


def _warm_and_stop(node: ServeProc) -> None:
    """Three handles, each answered over UDP twice (the second from the answer map), then a
    clean stop that writes the snapshot."""
    node.start()
    for h in ("kept", "changed", "gone"):
        put(node, f"88.100/{h}", f"https://example.org/{h}/v1")
    for _ in range(2):
        for h in ("kept", "changed", "gone"):
            assert udp(node, f"88.100/{h}") == (1, [f"https://example.org/{h}/v1"])
        assert udp(node, "88.100/new")[0] == ResponseCode.HANDLE_NOT_FOUND
    node.stop_cleanly()
    assert snapshot_path(node.data).is_file()


def test_writes_while_the_node_was_down_are_answered_after_the_restart(
    node: ServeProc, tmp_path: Path
) -> None:
    _warm_and_stop(node)
    # Other writers while it is down: the idr CLI (an import: one handle changed, one created)
    # and a delete committed to the same store.
    lines = [
        {
            "handle": "88.100/changed",
            "values": [{"index": 1, "type": "URL", "data": "https://example.org/v2"}],
        },
        {"handle": "88.100/new", "values": [{"index": 1, "type": "URL", "data": "https://example.org/new"}]},
    ]
    src = tmp_path / "batch.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    idr("import", "--data", str(node.data), str(src))
    with SqliteStore(node.data / "idr.sqlite3") as store:
        store.commit("delete", "test", [Write(normalize_key("88.100/gone"), None)])
    said = restart(node)
    m = LOADED.search(said[-1])
    assert m is not None, said  # the snapshot was used...
    # ...minus "changed", "gone" and the cached HANDLE_NOT_FOUND of "new"
    assert int(m.group(1)) == 1 and int(m.group(2)) == 3
    assert udp(node, "88.100/changed") == (1, ["https://example.org/v2"])
    assert udp(node, "88.100/gone")[0] == ResponseCode.HANDLE_NOT_FOUND
    assert udp(node, "88.100/new") == (1, ["https://example.org/new"])
    assert udp(node, "88.100/kept") == (1, ["https://example.org/kept/v1"])
    # and the running node's own writes after the restart reach the loaded answers too
    put(node, "88.100/kept", "https://example.org/kept/v2")
    assert udp(node, "88.100/kept") == (1, ["https://example.org/kept/v2"])
    node.stop_cleanly()
    said = restart(node)  # the snapshot of the second run holds the new value
    assert LOADED.search(said[-1]) is not None, said
    assert udp(node, "88.100/kept") == (1, ["https://example.org/kept/v2"])


@pytest.mark.parametrize("damage", ["flipped", "truncated", "foreign"])
def test_a_damaged_snapshot_is_discarded_and_the_node_answers_from_its_store(
    node: ServeProc, damage: str
) -> None:
    _warm_and_stop(node)
    path = snapshot_path(node.data)
    raw = bytearray(path.read_bytes())
    if damage == "flipped":
        raw[len(raw) // 2] ^= 0x40
    elif damage == "truncated":
        del raw[len(raw) * 2 // 3 :]
    else:
        raw[:] = b"\x00not ours\n" * 50
    path.write_bytes(bytes(raw))
    with SqliteStore(node.data / "idr.sqlite3") as store:  # a change the snapshot must not hide
        store.commit("delete", "test", [Write(normalize_key("88.100/gone"), None)])
    said = restart(node)[-1]
    assert "discarded" in said, said
    reason = {"flipped": "checksum", "truncated": "truncated", "foreign": "magic"}[damage]
    assert reason in said, said
    assert udp(node, "88.100/kept") == (1, ["https://example.org/kept/v1"])
    assert udp(node, "88.100/gone")[0] == ResponseCode.HANDLE_NOT_FOUND


def test_a_changed_configuration_discards_the_snapshot(node: ServeProc) -> None:
    _warm_and_stop(node)
    cfg = NodeConfig.load(node.data)
    cfg.native_limits.udp_slip = 3
    cfg.save()
    said = restart(node)[-1]
    assert "discarded" in said and "configuration" in said, said
    assert udp(node, "88.100/kept") == (1, ["https://example.org/kept/v1"])


def test_snapshot_off_in_the_configuration(node: ServeProc) -> None:
    cfg = NodeConfig.load(node.data)
    cfg.native_limits.snapshot = False
    cfg.save()
    node.start()
    put(node, "88.100/kept", "https://example.org/kept/v1")
    assert udp(node, "88.100/kept")[0] == 1
    node.stop_cleanly()
    assert not snapshot_path(node.data).exists()


# ---------------------------------------------------------------------------- in one process


def _record(i: int, url: str = "https://example.org/") -> HandleRecord:
    return HandleRecord(f"88.100/h{i}", (HandleValue(1, "URL", f"{url}{i}".encode()),))


def _filled(n: int) -> AnswerCache:
    cache = AnswerCache(100)
    for i in range(n):
        cache.put(b"key-%d" % i, b"answer-%d" % i, normalize_key(f"88.100/h{i}"), cache.generation)
    cache.put(b"key-0-other-shape", b"answer-0b", normalize_key("88.100/h0"), cache.generation)
    return cache


def test_round_trip_drops_what_the_log_changed_and_keeps_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "a.snap"
    with SqliteStore(tmp_path / "s.sqlite3") as store:
        store.bulk_load([_record(i) for i in range(5)])
        seq = store.last_seq()
        cache = _filled(5)
        assert save(cache, path, store, seq, "fp") == 6
        store.commit("modify", "t", [Write(normalize_key("88.100/h0"), _record(0, "https://other/"))])
        store.commit("delete", "t", [Write(normalize_key("88.100/h3"), None)])
        back = AnswerCache(100)
        got = load(back, path, store, "fp")
        assert got.reason == "" and got.dropped == 3 and got.answers == 3
        assert set(back.data) == {b"key-1", b"key-2", b"key-4"}
        back.invalidate([normalize_key("88.100/h1")])  # the loaded index works like a built one
        assert set(back.data) == {b"key-2", b"key-4"}
        small = AnswerCache(2)  # never more than the cap: the oldest go first
        assert load(small, path, store, "fp").answers == 2 and set(small.data) == {b"key-2", b"key-4"}
        other = AnswerCache(100)
        assert "configuration" in load(other, path, store, "fp2").reason and not other.data
        path.write_bytes(b"")  # an empty file (a crash while it was created): discarded too
        assert load(other, path, store, "fp").reason and not other.data


def test_the_log_must_reach_back_to_the_snapshot(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "s.sqlite3") as store:
        store.bulk_load([_record(0)])
        seq = store.last_seq()
        when = store.log_since(seq - 1, 1)[0].timestamp
        for i in range(1, 4):
            store.commit("create", "t", [Write(normalize_key(f"88.100/h{i}"), _record(i))])
        assert changed_since(store, seq, when) == {normalize_key(f"88.100/h{i}") for i in range(1, 4)}
        store.truncate_log(seq + 2)  # compaction took entries the snapshot would need
        with pytest.raises(Discard, match="no longer reaches back"):
            changed_since(store, seq, when)
        with pytest.raises(Discard, match="ends at"):
            changed_since(store, store.last_seq() + 1, None)
    with SqliteStore(tmp_path / "u.sqlite3") as store:
        store.bulk_load([_record(0)])
        seq = store.last_seq()
        when = store.log_since(seq - 1, 1)[0].timestamp
        store.commit("home", "t", [Write("0.HOMED/88.101", _record(1))])  # 301s turn into answers
        with pytest.raises(Discard, match="homed prefixes"):
            changed_since(store, seq, when)
    with SqliteStore(tmp_path / "m.sqlite3") as mirror:  # a mirror re-copied from its primary
        mirror.bulk_load([_record(0)])
        seq = mirror.last_seq()
        when = mirror.log_since(seq - 1, 1)[0].timestamp
        mirror.replace_all([(normalize_key("88.100/h5"), _record(5))], seq + 1)
        with pytest.raises(Discard, match=r"re-copied|no longer reaches back"):
            changed_since(mirror, seq, when)
    with SqliteStore(tmp_path / "t.sqlite3") as other:  # another store with as many entries
        other.bulk_load([_record(0)])
        with pytest.raises(Discard, match="another store"):
            changed_since(other, seq, when + 1.0)


def test_fingerprint_covers_every_part() -> None:
    base = fingerprint(("tag", "enterprise", ["88.100"], b"key", 1, True))
    assert base == fingerprint(("tag", "enterprise", ["88.100"], b"key", 1, True))
    for changed in (
        ("tag2", "enterprise", ["88.100"], b"key", 1, True),
        ("tag", "enterprise", ["88.100", "88.101"], b"key", 1, True),
        ("tag", "enterprise", ["88.100"], b"other", 1, True),
        ("tag", "enterprise", ["88.100"], b"key", 2, True),
        ("tag", "enterprise", ["88.100"], b"key", 1, False),
    ):
        assert fingerprint(changed) != base


# ---------------------------------------------------------------------------- workers, PostgreSQL


def _start_workers(node: ServeProc) -> None:
    """``idr serve --workers 2``, until every worker is up (its listeners table is printed then:
    a SIGTERM before that finds no handler yet)."""
    tables = log_of(node).count("UDP workers)") if node.proc is not None else 0
    node.start("--workers", "2")
    deadline = time.monotonic() + 60
    while log_of(node).count("UDP workers)") == tables:
        assert time.monotonic() < deadline and node.proc is not None and node.proc.poll() is None, log_of(
            node
        )
        time.sleep(0.05)


def test_each_worker_keeps_its_own_snapshot(node: ServeProc, tmp_path: Path) -> None:
    _start_workers(node)
    put(node, "88.100/w", "https://example.org/w/v1")
    for _ in range(16):  # fresh client sockets: the kernel spreads them over both workers
        assert udp(node, "88.100/w") == (1, ["https://example.org/w/v1"])
    node.stop_cleanly()
    assert snapshot_path(node.data).is_file() and snapshot_path(node.data, 1).is_file()
    line = {"handle": "88.100/w", "values": [{"index": 1, "type": "URL", "data": "https://example.org/w/v2"}]}
    src = tmp_path / "w.jsonl"
    src.write_text(json.dumps(line) + "\n")
    idr("import", "--data", str(node.data), str(src))
    before = len(starts(node))
    _start_workers(node)
    said = starts(node)[before:]
    assert len(said) == 2 and all(LOADED.search(s) for s in said), said  # worker 0 and worker 1
    for _ in range(16):
        assert udp(node, "88.100/w") == (1, ["https://example.org/w/v2"])


def test_a_second_server_on_the_same_postgres_database_writes_while_one_is_down(
    tmp_path: Path, pg_dsn: str
) -> None:
    store = ("--store", "postgres", "--dsn", pg_dsn)
    a = ServeProc.init(tmp_path / "a", "--prefix", "88.100", "--admin-secret", SECRET, *store)
    b = ServeProc(tmp_path / "b")  # the same node's data on a second server: its own listeners
    cfg = NodeConfig.load(a.data)
    cfg.data_dir = b.data
    cfg.https, cfg.http, cfg.native = (f"127.0.0.1:{p}" for p in (b.https, b.http, b.native))
    cfg.save()
    try:
        a.start()
        b.start()
        put(a, "88.100/x", "https://example.org/x/v1")
        put(a, "88.100/y", "https://example.org/y/v1")
        for _ in range(2):
            assert udp(b, "88.100/x") == (1, ["https://example.org/x/v1"])
            assert udp(b, "88.100/y") == (1, ["https://example.org/y/v1"])
        b.stop_cleanly()
        put(a, "88.100/x", "https://example.org/x/v2")
        status, doc = a.call("DELETE", "/api/handles/88.100/y", auth=ADMIN)
        assert status == 200 and doc["responseCode"] == 1, doc
        said = restart(b)
        assert LOADED.search(said[-1]) is not None, said
        assert udp(b, "88.100/x") == (1, ["https://example.org/x/v2"])
        assert udp(b, "88.100/y")[0] == ResponseCode.HANDLE_NOT_FOUND
    finally:
        a.stop()
        b.stop()


@pytest.fixture
def streaming() -> Iterator[tuple[Any, Any]]:
    from tests.store.pgcluster import primary_and_standby

    with primary_and_standby() as pair:
        yield pair


def test_a_restarted_mirror_answers_what_its_primary_wrote_meanwhile(
    tmp_path: Path, streaming: tuple[Any, Any]
) -> None:
    from tests.store.pgcluster import wait_replayed

    primary_db, standby_db = streaming
    store = ("--store", "postgres", "--dsn", primary_db.dsn())
    primary = ServeProc.init(tmp_path / "primary", "--prefix", "88.100", "--admin-secret", SECRET, *store)
    mirror = ServeProc(tmp_path / "mirror")  # a follower: reads the primary's hot standby
    cfg = NodeConfig.load(primary.data)
    cfg.data_dir, cfg.dsn, cfg.standby = mirror.data, standby_db.dsn(), True
    cfg.https, cfg.http, cfg.native = (f"127.0.0.1:{p}" for p in (mirror.https, mirror.http, mirror.native))
    cfg.save()
    try:
        primary.start()
        put(primary, "88.100/s", "https://example.org/s/v1")
        wait_replayed(primary_db.dsn(), standby_db.dsn())
        mirror.start()
        for _ in range(2):
            assert udp(mirror, "88.100/s") == (1, ["https://example.org/s/v1"])
        mirror.stop_cleanly()
        assert snapshot_path(mirror.data).is_file()
        put(primary, "88.100/s", "https://example.org/s/v2")
        wait_replayed(primary_db.dsn(), standby_db.dsn())
        said = restart(mirror)
        assert LOADED.search(said[-1]) is not None, said
        assert udp(mirror, "88.100/s") == (1, ["https://example.org/s/v2"])
    finally:
        primary.stop()
        mirror.stop()
