"""The node's write path at run time: group commit on the writer thread, listeners on the loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from idr.core.request import Op, Request
from idr.core.service import NodeService
from idr.core.stats import REGISTERED, is_counter_key
from idr.model.errors import ResponseCode
from idr.model.value import HandleValue
from idr.runtime import NodeRuntime
from idr.store.base import LogEntry, Write
from idr.store.sqlite import SqliteStore
from tests.core.conftest import ADMIN, admin_values

URL = HandleValue(1, "URL", b"https://example.org/")


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[NodeService, NodeRuntime]]:
    svc = NodeService(SqliteStore(tmp_path / "idr.sqlite3"), admins=[str(ADMIN)])
    svc.bootstrap("88.100", admin_values())
    rt = NodeRuntime(svc, follow=0)
    await rt.start()
    try:
        yield svc, rt
    finally:
        await rt.stop()
        svc.close()


def own_writes(e: LogEntry) -> list[Write]:
    return [w for w in e.writes if not is_counter_key(w.key)]


def create(handle: str) -> Request:
    return Request(Op.CREATE_HANDLE, handle, values=(URL,), identity=ADMIN)


async def test_concurrent_writes_share_commits_each_with_its_own_seq_and_error(
    running: tuple[NodeService, NodeRuntime],
) -> None:
    svc, rt = running
    before = svc.store.last_seq()
    names = [f"88.100/w{i}" for i in range(64)]
    names[10] = names[11] = "88.100/twice"  # one of these two must fail, alone
    results = await asyncio.gather(*(svc.submit(create(n)) for n in names))
    codes = [r.code for r in results]
    assert codes.count(ResponseCode.HANDLE_ALREADY_EXISTS) == 1
    assert codes.count(ResponseCode.SUCCESS) == 63
    seqs = sorted(r.seq for r in results if r.ok)
    assert seqs == list(range(before + 1, before + 64))  # one log entry each, no gaps
    assert rt.grouped == 63 and rt.groups < 32, (rt.groups, rt.grouped)  # fsyncs shared
    entries = svc.store.log_since(before)
    assert len(entries) == 63 and all(len(own_writes(e)) == 1 for e in entries)
    # each group's last entry also carries this writer's counters: 63 registered, counted once
    assert svc.durable_counts()[REGISTERED] == 63


async def test_listeners_run_on_the_loop_before_the_write_is_acknowledged(
    running: tuple[NodeService, NodeRuntime],
) -> None:
    svc, _ = running
    heard: list[tuple[str, threading.Thread]] = []
    svc.add_listener(lambda keys: heard.extend((k, threading.current_thread()) for k in keys))
    assert (await svc.submit(create("88.100/heard"))).ok
    assert heard == [("88.100/HEARD", threading.current_thread())]
    # A commit applied by another thread (a replication applier) is delivered on the loop too.
    await asyncio.get_running_loop().run_in_executor(None, svc.on_external_commit, ["88.100/OTHER"])
    for _ in range(100):
        if len(heard) == 2:
            break
        await asyncio.sleep(0.01)
    assert heard[1] == ("88.100/OTHER", threading.current_thread())


async def test_a_running_node_refuses_the_synchronous_driver(
    running: tuple[NodeService, NodeRuntime],
) -> None:
    svc, _ = running
    with pytest.raises(RuntimeError, match="writer"):
        svc.handle(create("88.100/sync"))
    with pytest.raises(RuntimeError, match="writer"):
        svc.write_now(lambda: None)


class SlowToMark(NodeRuntime):
    """A writer thread that marks its seqs as its own 30 ms after each commit returns: the
    window in which the log follower can read an entry of ours not yet in ``own``."""

    def seen(self, seqs: Sequence[int]) -> None:
        if threading.current_thread().name == "idr-writer":
            time.sleep(0.03)
        super().seen(seqs)


async def test_the_follower_reports_other_writers_commits_never_its_own(tmp_path: Path) -> None:
    path = tmp_path / "idr.sqlite3"
    svc = NodeService(SqliteStore(path), admins=[str(ADMIN)])
    svc.bootstrap("88.100", admin_values())
    rt = SlowToMark(svc, follow=0.002)
    await rt.start()
    other = NodeService(SqliteStore(path), admins=[str(ADMIN)])  # another process's writer, say
    heard: list[str] = []
    try:
        for i in range(10):
            assert (await svc.submit(create(f"88.100/own{i}"))).ok
        svc.add_listener(heard.extend)
        # another writer commits while ours is between its commits and their marking
        mine = asyncio.gather(*(svc.submit(create(f"88.100/more{i}")) for i in range(5)))
        await asyncio.sleep(0.005)
        assert other.handle(create("88.100/theirs")).ok
        assert all(r.ok for r in await mine)
        assert rt.follower is not None
        for _ in range(300):
            if "88.100/THEIRS" in heard:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # a few more polls: nothing of ours may turn up late
        assert "88.100/THEIRS" in heard
        assert rt.follower.reported == 1, rt.follower.reported  # theirs only, none of our 15
        assert not rt.follower._held
    finally:
        await rt.stop()
        other.close()
        svc.close()
