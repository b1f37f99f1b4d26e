"""Two sites on loopback: copy, stream, sync acknowledgement, refusal on mirrors, catch-up."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from idr.model.errors import ResponseCode
from idr.replication import PRIMARY
from idr.store.base import REPLICA_COPY_OP
from tests.replication.conftest import Site, until

Pair = Callable[..., tuple[Site, Site]]


async def test_mirror_copies_then_streams_and_sync_writes_wait_for_it(make_pair: Pair) -> None:
    a, b = make_pair("sync")
    await a.start()
    await b.start()
    resp = await a.write("first")
    assert resp.ok, resp.message
    # Acknowledged in sync mode means the mirror already holds it durably.
    assert b.svc.store.get("88.100/FIRST") is not None
    for i in range(20):
        assert (await a.write(f"w{i}")).ok
    assert b.svc.store.last_seq() == a.svc.store.last_seq()
    assert b.has("w19")  # the mirror answers resolutions, through its (invalidated) cache
    # Same log, same seqs (the mirror's history starts with its copy marker or the entries).
    tail_a = a.svc.store.log_since(b.svc.store.last_seq() - 5)
    tail_b = b.svc.store.log_since(b.svc.store.last_seq() - 5)
    assert tail_a == tail_b
    assert a.r.replication_metrics()["idr_replication_lag_entries"] == 0


async def test_mirror_refuses_writes_naming_the_primary(make_pair: Pair) -> None:
    a, b = make_pair("sync")
    await a.start()
    await b.start()
    await until(lambda: b.r.primary_api != "")
    resp = await b.write("nope")
    assert resp.code == ResponseCode.SERVER_READ_ONLY
    assert "primary is at https a" in resp.message
    assert not b.has("nope")


async def test_sync_write_without_a_mirror_is_not_acknowledged(make_pair: Pair) -> None:
    a, _ = make_pair("sync", ack_timeout=0.3)
    await a.start()
    resp = await a.write("lonely")
    assert not resp.ok
    assert "NOT acknowledged" in resp.message


async def test_async_mode_acknowledges_at_once_and_reports_lag(make_pair: Pair) -> None:
    a, b = make_pair("async")
    await a.start()
    for i in range(5):
        assert (await a.write(f"x{i}")).ok
    entries, seconds = a.r.lag()
    assert entries == a.svc.store.last_seq()  # nobody has acknowledged anything
    assert seconds >= 0
    await b.start()
    await until(lambda: b.svc.store.last_seq() == a.svc.store.last_seq())
    await until(lambda: a.r.lag()[0] == 0)
    assert b.r.status()["lag_entries"] == 0


async def test_mirror_restarted_catches_up_from_its_log(make_pair: Pair) -> None:
    a, b = make_pair("async")
    await a.start()
    await b.start()
    assert (await a.write("before")).ok
    await until(lambda: b.svc.store.last_seq() == a.svc.store.last_seq())
    await b.stop()
    for i in range(30):
        assert (await a.write(f"while-down-{i}")).ok
    await b.start()
    await until(lambda: b.svc.store.last_seq() == a.svc.store.last_seq())
    assert b.has("while-down-29")
    # Incremental: the entries written while it was down arrived as entries, not a new copy.
    ops = [e.op for e in b.svc.store.log_since(0, 10_000)]
    assert ops.count(REPLICA_COPY_OP) <= 1 and ops[-1] == "create"


async def test_link_cut_and_healed(make_pair: Pair) -> None:
    a, b = make_pair("sync", ack_timeout=0.5)
    await a.start()
    await b.start()
    assert (await a.write("one")).ok
    await b.stop()  # the link goes away (the mirror's process stops; its data stays)
    assert not (await a.write("during-cut")).ok  # sync: not acknowledged while cut
    await b.start()
    await until(lambda: b.svc.store.last_seq() == a.svc.store.last_seq())
    resp = await a.write("after-heal")
    assert resp.ok, resp.message
    assert b.has("during-cut") and b.has("after-heal")


async def test_primary_never_has_both_gates_open(make_pair: Pair) -> None:
    """Promotion tells the reachable old primary first: never two writable sites at once."""
    a, b = make_pair("sync")
    await a.start()
    await b.start()
    assert (await a.write("x")).ok
    both = 0

    async def watch() -> None:
        nonlocal both
        for _ in range(200):
            both += a.r.writable and b.r.writable
            await asyncio.sleep(0.005)

    watcher = asyncio.ensure_future(watch())
    epoch = await b.r.promote()
    await watcher
    assert both == 0
    assert epoch == 2 and b.r.state.role == PRIMARY
    assert not a.r.writable
    resp = await a.write("to-old")
    assert resp.code == ResponseCode.SERVER_READ_ONLY
    # The old primary follows the new one, so sync writes there are acknowledged again.
    await until(lambda: b.r.status()["mirrors"] == 1)
    resp = await b.write("to-new")
    assert resp.ok, resp.message
    assert a.has("to-new")
