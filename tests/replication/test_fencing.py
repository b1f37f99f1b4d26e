"""Epochs: promotion, fencing of an old primary, rejoin with discard, automatic promotion."""

from __future__ import annotations

from collections.abc import Callable

from idr.model.errors import ResponseCode
from idr.replication import MIRROR, PRIMARY, ReplState
from idr.replication.admin import promote_offline
from tests.replication.conftest import Site, until

Pair = Callable[..., tuple[Site, Site]]


async def test_old_primary_seeing_a_higher_epoch_refuses_writes(make_pair: Pair) -> None:
    a, b = make_pair("async")
    await a.start()
    await b.start()
    assert (await a.write("x")).ok
    await until(lambda: b.svc.store.last_seq() == a.svc.store.last_seq())
    await b.stop()
    # b is promoted while it cannot reach a (a partition): a still believes it is primary.
    promote_offline(b.dir, _last_seq(b))
    await b.start()
    assert b.r.writable and b.r.state.epoch == 2
    # The first contact (b's heartbeat probe) fences a at once.
    await until(lambda: not a.r.writable, timeout=3)
    assert a.r.state.role == MIRROR and a.r.state.epoch == 2
    assert ReplState.load(a.dir) is not None and ReplState.load(a.dir).epoch == 2  # type: ignore[union-attr]
    resp = await a.write("after-fence")
    assert resp.code == ResponseCode.SERVER_READ_ONLY


async def test_restarted_old_primary_rejoins_as_mirror_and_discards_unacknowledged(make_pair: Pair) -> None:
    a, b = make_pair("sync", ack_timeout=0.3)
    await a.start()
    await b.start()
    assert (await a.write("acked")).ok
    await b.stop()
    lost = await a.write("never-acked")  # committed on a, but no mirror: not acknowledged
    assert not lost.ok
    await a.stop()  # the primary dies
    promote_offline(b.dir, b_last := _last_seq(b))
    await b.start()
    assert b.r.writable and b_last > 0
    await a.start()  # comes back believing it is primary of epoch 1: the startup probe fences it
    assert not a.r.writable
    await until(lambda: a.svc.store.last_seq() == b.svc.store.last_seq() and b.r.status()["mirrors"] == 1)
    assert a.has("acked")
    assert not a.has("never-acked")  # re-copied from the new primary: the divergent write is gone
    resp = await b.write("new-epoch")
    assert resp.ok, resp.message
    assert a.has("new-epoch")


def _last_seq(site: Site) -> int:
    svc = site._open()
    try:
        return svc.store.last_seq()
    finally:
        svc.close()


async def test_two_primaries_of_one_epoch_both_refuse(make_pair: Pair) -> None:
    a, b = make_pair("async")
    b.role = "primary"  # misconfiguration: both start as primary of epoch 1
    await a.start()
    await b.start()
    await until(lambda: a.r.conflict and b.r.conflict, timeout=3)
    assert (await a.write("a")).code == ResponseCode.SERVER_READ_ONLY
    assert (await b.write("b")).code == ResponseCode.SERVER_READ_ONLY
    await b.r.promote()  # the operator picks one
    await until(lambda: b.r.writable and not a.r.writable, timeout=3)
    await until(lambda: a.svc.store.last_seq() == b.svc.store.last_seq())


async def test_automatic_promotion_after_the_primary_is_gone(make_pair: Pair) -> None:
    a, b = make_pair("async")
    b.auto_promote_after = 0.5
    await a.start()
    await b.start()
    assert (await a.write("x")).ok
    await until(lambda: b.svc.store.last_seq() == a.svc.store.last_seq())
    await a.stop()
    await until(lambda: b.r.state.role == PRIMARY, timeout=5)
    assert b.r.state.epoch == 2
    assert (await b.write("y")).ok
