"""How entries travel: the primary ships a commit's entries from its commit listener, with no
heartbeat between batches; a mirror applies a small batch on its loop and a large one in its
applier thread; a primary that goes silent on an open link is given up within the bound."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence

import pytest

from idr.replication import manager, wire
from tests.replication.conftest import SECRET, Site, until

Pair = Callable[..., tuple[Site, Site]]


async def _follow_as_mirror(a: Site) -> wire.Channel:
    """A bare mirror following ``a`` from its last seq (the log plan), past the first heartbeat."""
    assert a.r.address is not None
    ch = await wire.connect(a.r.address, SECRET.encode(), "bare-mirror", 1.0)
    await ch.send_json(
        {"t": "follow", "epoch": a.r.state.epoch, "role": "mirror", "node": "bare-mirror",
         "last_seq": a.svc.store.last_seq(), "history": a.r.state.history}
    )  # fmt: skip
    start = await asyncio.wait_for(ch.recv_json(), 2.0)
    assert (start["t"], start["mode"]) == ("start", "log")
    hb = await asyncio.wait_for(ch.recv_json(), 2.0)  # the session's first pass: where the primary is
    assert hb["t"] == "hb"
    return ch


async def test_entries_flow_without_a_heartbeat_after_each_batch(make_pair: Pair) -> None:
    a, _ = make_pair("async")
    await a.start()
    a.r.heartbeat = 30.0  # nothing below may be a heartbeat's doing
    ch = await _follow_as_mirror(a)
    try:
        for i in range(5):
            assert (await a.write(f"shipped-{i}")).ok
            kind, payload = await asyncio.wait_for(ch.recv(), 2.0)
            # Each commit's entry is the next frame: before, a heartbeat followed every batch.
            assert kind == wire.ENTRY, (kind, payload[:80])
            assert wire.decode_entry(payload).seq == a.svc.store.last_seq()
        with pytest.raises(TimeoutError):  # and nothing else was sent
            await asyncio.wait_for(ch.recv(), 0.3)
    finally:
        ch.close()


async def test_a_commits_entries_leave_before_the_loop_runs_anything_else(make_pair: Pair) -> None:
    a, _ = make_pair("async")
    await a.start()
    a.r.heartbeat = 30.0
    ch = await _follow_as_mirror(a)
    try:
        await until(lambda: len(a.r._sessions) == 1)
        # The write returns on the loop right after its commit listener ran: with no other
        # await in between, its entry must already be written to the mirror's transport.
        assert (await a.write("at-once")).ok
        [session] = a.r._sessions
        assert session.pos == a.svc.store.last_seq()
        kind, payload = await asyncio.wait_for(ch.recv(), 2.0)
        assert kind == wire.ENTRY and wire.decode_entry(payload).seq == session.pos
    finally:
        ch.close()


async def test_mirror_applies_small_batches_on_its_loop_large_ones_in_its_applier(
    make_pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = make_pair("sync")
    await a.start()
    await b.start()
    assert (await a.write("warm")).ok
    threads: list[str] = []

    def where(keys: Sequence[str] | object) -> None:
        threads.append(threading.current_thread().name)

    b.svc.add_listener(where)
    assert (await a.write("small")).ok  # sync: the mirror applied it before this returns
    assert threads and threads[-1] == threading.main_thread().name, threads
    monkeypatch.setattr(manager, "INLINE_APPLY", 0)  # every batch is "large" now
    assert (await a.write("large")).ok
    assert threads[-1].startswith("idr-repl-apply"), threads
    assert b.has("small") and b.has("large")


async def test_a_primary_silent_on_an_open_link_is_given_up(make_pair: Pair) -> None:
    """No frame for ``2 × link_timeout`` ends the stream (one timer per batch, not per frame):
    the mirror connects again."""
    _, b = make_pair("async")
    connections: list[float] = []

    async def silent_primary(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(time.monotonic())
        try:
            ch = await wire.server_handshake(reader, writer, SECRET.encode(), "silent")
            await ch.recv_json()  # follow
            await ch.send_json(
                {"t": "start", "mode": "log", "epoch": 1, "history": [[1, 1]], "api": "", "seq": 0, "ts": 0.0}
            )
            await asyncio.sleep(30)  # then nothing, with the link open
        except (wire.LinkError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(silent_primary, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        b.peers = []
        await b.start()
        b.r.peers = [("127.0.0.1", port)]
        await until(lambda: len(connections) >= 2, timeout=10.0)
        gap = connections[1] - connections[0]
        bound = b.r.link_timeout * 2
        assert bound * 0.9 <= gap <= bound + 3.0, gap
    finally:
        server.close()
