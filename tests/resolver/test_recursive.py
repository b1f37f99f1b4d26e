"""Recursive resolution across a real federation on loopback: three levels, caches, failover, loops."""

from __future__ import annotations

from pathlib import Path

from idr.core.federation import FederatedService, delegation_values, loopback_site
from idr.demo import CELL, PACK, VEHICLE, Federation, start_node
from idr.model.errors import ResponseCode
from idr.model.handle import normalize_key
from idr.model.value import HandleRecord
from idr.resolver.recursive import Limits, RecursiveResolver, supply_chain
from idr.resolver.transport import NativeTransport


def resolver(fed: Federation, **kw: object) -> RecursiveResolver:
    return RecursiveResolver([fed["top-cq"].site, fed["top-cd"].site], NativeTransport(), **kw)  # type: ignore[arg-type]


async def test_three_levels_then_cache(fed: Federation) -> None:
    r = resolver(fed)
    res = await r.resolve(CELL)
    assert res.response.ok
    assert [(h.node.split()[0], h.code) for h in res.hops] == [
        ("Chongqing", 303),
        ("Sichuan", 1),
        ("Yibin", 1),
    ]
    again = await r.resolve(CELL)
    assert again.cached and again.hops[0].cached and again.response.values == res.response.values
    # Another cell under the same prefix: the service of 88.168.6 comes from the cache, one query.
    other = await r.resolve("88.168.6/CELL-2024-YB-0001524")
    assert other.response.ok
    assert [h.cached for h in other.hops] == [True, False]


async def test_recursive_node_serves_native_clients(fed: Federation) -> None:
    from idr.resolver.client import HandleClient

    async with HandleClient("127.0.0.1", fed["recursive"].native[1], timeout=3) as c:
        msg = await c.resolve(VEHICLE)
    assert msg.response_code == ResponseCode.SUCCESS


async def test_supply_chain_follows_references_across_nodes(fed: Federation) -> None:
    tree = await supply_chain(resolver(fed).resolve, VEHICLE)
    assert tree["status"] == "SUCCESS"
    (pack,) = tree["children"]
    assert pack["handle"] == PACK and pack["via"] == "battery_pack"
    assert pack["children"][0]["handle"] == CELL
    shallow = await supply_chain(resolver(fed).resolve, VEHICLE, max_depth=1)
    assert shallow["children"][0]["truncated"] == "depth limit"


async def test_ttl_expiry_and_bounded_negative_cache(fed: Federation) -> None:
    now = [1_000_000.0]
    r = resolver(fed, clock=lambda: now[0], limits=Limits(negative_ttl=5, cache_entries=2))
    assert (await r.resolve(CELL)).response.ok
    assert (await r.resolve(CELL)).cached
    now[0] += 86_401  # past the values' TTL (86400 s)
    assert not (await r.resolve(CELL)).cached
    missing = await r.resolve("88.168.6/NO-SUCH-CELL")
    assert missing.response.code == ResponseCode.HANDLE_NOT_FOUND
    assert (await r.resolve("88.168.6/NO-SUCH-CELL")).cached
    now[0] += 6
    assert not (await r.resolve("88.168.6/NO-SUCH-CELL")).cached
    for i in range(4):
        await r.resolve(f"88.168.6/MISSING-{i}")
    assert len(r.answers) <= 2
    unknown = await r.resolve("77.1/x")
    assert unknown.response.code == ResponseCode.HANDLE_NOT_FOUND


async def test_failover_to_the_mirror_when_the_primary_is_down(fed: Federation) -> None:
    await fed["top-cq"].node.stop()
    r = resolver(fed, limits=Limits(timeout=0.3))
    res = await r.resolve(CELL)
    assert res.response.ok, res.response.message
    first, second = res.hops[0], res.hops[1]
    assert first.node.startswith("Chongqing top") and first.note.startswith("no answer")
    assert second.node.startswith("Chengdu top") and "failover" in second.note


async def test_delegation_loop_ends_with_a_clear_error(tmp_path: Path) -> None:
    a = await start_node(tmp_path, "a", "node A", "secondary", "66.1", "a-secret-123")
    b = await start_node(tmp_path, "b", "node B", "secondary", "66.2", "b-secret-123")
    try:
        for here, there in ((a, b), (b, a)):
            rec = HandleRecord("0.NA/77", tuple(delegation_values([there.site], derived=True)))
            assert isinstance(here.service, FederatedService)
            await here.service.commit_internal("test", None, [("0.NA/77", rec)])
            assert here.service.load("0.NA/77") is not None
        r = RecursiveResolver([a.site], NativeTransport())
        res = await r.resolve("77.5/x")
        assert res.response.code == ResponseCode.RECURSION_COUNT_TOO_HIGH
        assert "loop" in res.response.message and "node A" in res.response.message
        assert len(res.hops) <= Limits().max_queries
    finally:
        for n in (a, b):
            await n.node.stop()
            n.node.close()


async def test_dead_root_fails_fast_with_a_clear_error() -> None:
    dead = loopback_site("nobody", native=9)  # discard port: nothing answers
    r = RecursiveResolver([dead], NativeTransport(), limits=Limits(timeout=0.2))
    res = await r.resolve("88.1/x")
    assert res.response.code == ResponseCode.ERROR and "no server answered" in res.response.message
    assert normalize_key("88.1/x") not in r.answers._data
