"""The bounded transaction log: what compaction keeps (newest N, the last D days, whatever a
connected mirror still needs), that a mirror further behind is re-copied, that a cache follower
behind a gap drops its caches, and that ``idr audit`` says when asked beyond the kept log."""

from __future__ import annotations

import base64
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from idr.cli.node import init_node
from idr.core.config import LogRetention, NodeConfig
from idr.core.interface import EVERYTHING
from idr.core.service import NodeService
from idr.model.handle import normalize_key
from idr.model.value import HandleRecord, HandleValue
from idr.node import Node
from idr.operations.compaction import LogCompactor, keep_from, seq_at_time
from idr.runtime.follow import LogFollower
from idr.store.base import REPLICA_COPY_OP, LogEntry, Write
from idr.store.sqlite import SqliteStore
from tests.replication.conftest import Site, until

HOUR = 3600.0
T0 = 1_700_000_000.0


def entry(seq: int, ts: float) -> LogEntry:
    h = f"88.100/e{seq}"
    return LogEntry(seq, ts, "create", "300:0.NA/88.100",
                    (Write(normalize_key(h), HandleRecord(h, (HandleValue(1, "URL", b"x"),))),))  # fmt: skip


@pytest.fixture
def hourly(tmp_path: Path) -> SqliteStore:
    """A log of 100 entries, one an hour (seq i committed at T0 + i hours)."""
    store = SqliteStore(tmp_path / "idr.sqlite3")
    store.apply_entries([entry(i, T0 + i * HOUR) for i in range(1, 101)])
    return store


def test_retention_keeps_newest_entries_recent_days_and_what_mirrors_need(hourly: SqliteStore) -> None:
    now = T0 + 100 * HOUR
    assert seq_at_time(hourly, T0 + 76 * HOUR, 1, 100) == 76
    assert seq_at_time(hourly, now + 1, 1, 100) == 101
    assert keep_from(hourly, LogRetention(retain_entries=10, retain_days=0), None, now) == 91
    day = LogRetention(retain_entries=10, retain_days=1)
    assert keep_from(hourly, day, None, now) == 76  # the last day (24 entries) beats the newest 10
    assert keep_from(hourly, LogRetention(retain_entries=50, retain_days=1), None, now) == 51
    assert keep_from(hourly, day, 40, now) == 40  # a connected mirror still needs 40 on
    assert (
        keep_from(hourly, LogRetention(retain_entries=0, retain_days=0), None, now) == 100
    )  # the newest stays
    hourly.close()


async def test_compaction_deletes_in_batches_and_keeps_records(hourly: SqliteStore) -> None:
    retention = LogRetention(retain_entries=30, retain_days=0, batch=7)
    compactor = LogCompactor(hourly, lambda: retention)
    assert await compactor.compact() == 70
    assert hourly.first_seq() == 71 and hourly.last_seq() == 100
    assert hourly.count() == 100  # only history went, never a record
    assert compactor.metrics()["idr_log_first_seq"] == 71.0
    assert compactor.metrics()["idr_log_compacted_entries"] == 70.0
    assert await compactor.compact() == 0
    hourly.close()


@pytest.fixture
async def sites(tmp_path: Path) -> AsyncIterator[list[Site]]:
    made: list[Site] = []
    yield made
    for s in made:
        await s.stop()


async def test_mirror_behind_the_kept_log_is_recopied(tmp_path: Path, sites: list[Site]) -> None:
    a = Site(tmp_path, "a", "primary", "async", 2.0)
    b = Site(tmp_path, "b", "mirror", "async", 2.0)
    a.peers, b.peers = [b], [a]
    sites.extend((a, b))
    await a.start()
    await b.start()
    assert (await a.write("x0")).ok
    await until(lambda: b.has("x0"))
    b_last = b.svc.store.last_seq()
    await until(lambda: a.r.mirrors_need() == b_last + 1)  # connected and acked: its next entry is kept
    await b.stop()
    await until(lambda: a.r.mirrors_need() is None)
    for i in range(1, 30):
        assert (await a.write(f"x{i}")).ok
    compactor = LogCompactor(a.svc.store, lambda: LogRetention(retain_entries=5, retain_days=0))
    assert await compactor.compact() > 0
    assert a.svc.store.first_seq() > b_last + 1  # what the mirror needs next is gone
    await b.start()
    await until(lambda: b.svc.store.last_seq() == a.svc.store.last_seq())
    assert all(b.has(f"x{i}") for i in range(30))
    assert any(e.op == REPLICA_COPY_OP for e in b.svc.store.log_since(0, 1000))  # a snapshot, not entries
    assert (await a.write("after")).ok
    await until(lambda: b.has("after"))


class _InlineReads:
    """A runtime's read path run inline, with no writer of its own (``own``: seqs it applied)."""

    def __init__(self) -> None:
        self.own: set[int] = set()
        self.commits_begun = self.commits_marked = 0

    async def read(self, fn: Any) -> Any:
        return fn()


Following = tuple[SqliteStore, LogFollower, list[object], _InlineReads]


@pytest.fixture
def following(tmp_path: Path) -> Iterator[Following]:
    """A store, a follower of its log, and what the follower reported to the core."""
    store = SqliteStore(tmp_path / "idr.sqlite3")
    service = NodeService(store)
    reported: list[object] = []
    service.on_external_commit = reported.append  # type: ignore[method-assign]
    reads = _InlineReads()
    yield store, LogFollower(service, reads), reported, reads  # type: ignore[arg-type]
    service.close()


async def test_follower_behind_a_gap_drops_its_caches(following: Following) -> None:
    store, follower, reported, _ = following
    store.apply_entries([entry(i, T0 + i) for i in range(1, 4)])
    follower.seq = 1
    await follower.poll()
    assert reported == [["88.100/E2", "88.100/E3"]]  # no gap: exactly the changed keys
    store.apply_entries([entry(i, T0 + i) for i in range(4, 10)])
    store.truncate_log(8)  # entries 4..7 go before the follower read them
    await follower.poll()
    assert reported[-1] is EVERYTHING and follower.seq == 9


@pytest.mark.parametrize("behind", [True, False])
async def test_a_copy_this_process_applied_is_announced_once(following: Following, behind: bool) -> None:
    """A mirror's re-copy replaces its log with the copy's one entry, whose seq the mirror
    marks as its own when it announces the copy: its follower must not announce everything a
    second time (each "everything" starts a warm pass over the whole store), whether the copy
    is ahead of the old log or behind it (a mirror whose log diverged); another writer's copy
    still drops everything, and entries after the copy are followed as before."""
    store, follower, reported, reads = following
    store.apply_entries([entry(i, T0 + i) for i in range(1, 6)])
    follower.seq = 5
    copy_seq = 3 if behind else 50
    store.replace_all([(normalize_key("88.100/c"), HandleRecord("88.100/c", ()))], copy_seq)
    reads.own.add(copy_seq)  # what on_external_commit(…, seqs=[copy_seq]) marks
    await follower.poll()
    assert reported == [] and follower.seq == copy_seq
    store.apply_entries([entry(copy_seq + 1, T0)])
    await follower.poll()
    assert reported == [[f"88.100/E{copy_seq + 1}"]]
    store.replace_all([], copy_seq + 10)  # a copy by another writer: not ours
    await follower.poll()
    assert reported[-1] is EVERYTHING and follower.seq == copy_seq + 10


# --------------------------------------------------------------------------- audit


@pytest.fixture
async def enterprise(tmp_path: Path) -> AsyncIterator[tuple[Node, aiohttp.ClientSession, str]]:
    data = tmp_path / "node"
    init_node(data, "88.100", secret="s3cret-key", role="enterprise", https="127.0.0.1:0", http="")
    node = Node(NodeConfig.load(data))
    await node.start()
    assert node.listeners.https is not None
    ctx = ssl.create_default_context(cafile=str(data / "tls" / "cert.pem"))
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))
    try:
        yield node, session, f"https://127.0.0.1:{node.listeners.https[1]}"
    finally:
        await session.close()
        await node.stop()
        node.close()


async def test_audit_answers_for_the_kept_log_and_says_so(
    enterprise: tuple[Node, aiohttp.ClientSession, str],
) -> None:
    node, http, base = enterprise
    auth = {"Authorization": "Basic " + base64.b64encode(b"300%3A0.NA/88.100:s3cret-key").decode()}
    for i in range(6):
        body = {"values": [{"index": 1, "type": "URL", "data": f"https://example.org/{i}"}]}
        async with http.put(f"{base}/api/handles/88.100/a{i}", json=body, headers=auth) as r:
            assert r.status in (200, 201), await r.text()
    assert node.compactor is not None
    node.config.log = LogRetention(retain_entries=3, retain_days=0)
    assert await node.compactor.compact() > 0
    first = node.service.store.first_seq()
    async with http.get(f"{base}/api/federation/audit?since=0", headers=auth) as r:
        doc = await r.json()
    assert doc["retained_from"] == first and doc["entries"][0]["seq"] == first
    assert f"entries 1..{first - 1} are no longer kept" in doc["beyond_retention"]
    async with http.get(f"{base}/api/federation/audit?since={first - 1}", headers=auth) as r:
        doc = await r.json()
    assert "beyond_retention" not in doc and len(doc["entries"]) == 3
    assert time.time() - doc["entries"][-1]["time"] < 60
