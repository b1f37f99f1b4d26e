"""A recursive node's caches at the federation's scale: every prefix's service kept (sized apart
from the answers), sites shared by the prefixes one node serves, missing prefixes remembered."""

from __future__ import annotations

import tracemalloc
from collections import Counter
from pathlib import Path

from idr.cli.node import init_node
from idr.codec.values import decode_values, encode_values
from idr.core.config import ConfigError, NodeConfig
from idr.core.federation import delegation_values, loopback_site
from idr.core.request import Op, Request, Response
from idr.demo import RunningNode, publish_prefix, start_node
from idr.model.errors import ResponseCode
from idr.model.site import ServerInfo
from idr.model.value import HandleRecord, HandleValue
from idr.node import open_service
from idr.resolver.recursive import Limits, RecursiveResolver, RecursiveService, server_address
from idr.resolver.transport import NativeTransport

PREFIXES = 150


class CountingTransport(NativeTransport):
    """The real Handle transport, counting the queries each server is sent."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: Counter[tuple[str, int]] = Counter()

    async def query(self, server: ServerInfo, request: Request, timeout: float) -> Response:
        self.sent[server_address(server)] += 1
        return await super().query(server, request, timeout)


async def _federation(tmp_path: Path) -> tuple[RunningNode, RunningNode, list[str]]:
    """A top and one secondary hosting PREFIXES enterprise prefixes (托管), each filed at the top."""
    top = await start_node(tmp_path, "top", "top", "top", "0.NA", "top-secret-123")
    sec = await start_node(tmp_path, "sec", "secondary", "secondary", "88.300", "sec-secret-123")
    prefixes = [f"88.300.{i}" for i in range(PREFIXES)]
    records = []
    for p in prefixes:
        resp = await sec.service.submit(Request(Op.HOME_NA, p, identity=sec.admin))
        assert resp.ok, resp.message
        await publish_prefix(top, p, [sec.site])
        records += [
            HandleRecord(f"{p}/ID-{i}", (HandleValue(1, "URL", f"https://e/{p}/{i}".encode()),))
            for i in (0, 1)
        ]
    assert await sec.federated.import_records(records, actor="test") == len(records)
    return top, sec, prefixes


async def test_every_prefix_resolved_once_then_no_query_reaches_the_top(tmp_path: Path) -> None:
    top, sec, prefixes = await _federation(tmp_path)
    transport = CountingTransport()
    try:
        # Room for the answers of both rounds; the services sized apart (sized as a tenth of
        # the answers, as they were, 30 of the 150 would be kept and the top asked again).
        r = RecursiveResolver([top.site], transport, limits=Limits(cache_entries=PREFIXES * 2))
        at_top, at_sec = top.native, sec.native
        for p in prefixes:
            assert (await r.resolve(f"{p}/ID-0")).response.ok
        assert transport.sent[at_top] == PREFIXES and transport.sent[at_sec] == PREFIXES
        assert len(r.services) == PREFIXES
        # The same identifiers again: answered from the cache, nothing sent.
        transport.sent.clear()
        for p in prefixes:
            assert (await r.resolve(f"{p}/ID-0")).cached
        assert sum(transport.sent.values()) == 0
        # Other identifiers under the same prefixes: one query each, at the secondary only.
        for p in prefixes:
            res = await r.resolve(f"{p}/ID-1")
            assert res.response.ok and [h.cached for h in res.hops] == [True, False]
        assert transport.sent == Counter({at_sec: PREFIXES})
        # One secondary: one list of sites, shared by all its prefixes.
        assert len({id(r.services.get(p)) for p in prefixes}) == 1
        # Bounded: a smaller service cache keeps only as many prefixes as it may.
        small = RecursiveResolver([top.site], transport, limits=Limits(service_entries=10))
        for p in prefixes[:30]:
            assert (await small.resolve(f"{p}/ID-0")).response.ok
        assert len(small.services) == 10
    finally:
        transport.close()
        for n in (top, sec):
            await n.node.stop()
            n.node.close()


async def test_a_missing_prefix_is_asked_once_and_the_memory_of_it_is_bounded(tmp_path: Path) -> None:
    top = await start_node(tmp_path, "top", "top", "top", "0.NA", "top-secret-123")
    transport = CountingTransport()
    now = [1_000_000.0]
    try:
        r = RecursiveResolver(
            [top.site], transport, clock=lambda: now[0], limits=Limits(negative_ttl=5, missing_entries=3)
        )
        for i in range(5):  # distinct identifiers under one prefix that does not exist
            res = await r.resolve(f"77.1/x-{i}")
            assert res.response.code == ResponseCode.HANDLE_NOT_FOUND
            assert "77.1" in res.response.message
        assert transport.sent[top.native] == 1
        now[0] += 6  # past negative_ttl: the top is asked again (the prefix may exist by now)
        assert (await r.resolve("77.1/x-9")).response.code == ResponseCode.HANDLE_NOT_FOUND
        assert transport.sent[top.native] == 2
        for i in range(10):  # random prefixes cannot grow it past its bound
            await r.resolve(f"77.{100 + i}/x")
        assert len(r.missing) == 3
    finally:
        transport.close()
        await top.node.stop()
        top.node.close()


def test_memory_per_prefix_in_the_service_cache() -> None:
    """40,000 prefixes hosted by 56 secondaries: the decoded sites are shared, so a prefix
    costs its cache entry only (measured ~215 B; a decoded copy per prefix was ~1,000 B)."""
    sites = [loopback_site(f"secondary {i}", native=20_000 + i) for i in range(56)]
    wire = [encode_values(delegation_values([s])) for s in sites]
    r = RecursiveResolver([sites[0]], NativeTransport())
    n = 40_000
    answers = [decode_values(wire[i % len(wire)]) for i in range(n)]  # each decoded afresh
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i, values in enumerate(answers):
            site_values = [v for v in values if v.type.upper().startswith("HS_SITE")]
            r.services.put(f"88.{100 + i % 56}.{i}", r._shared_sites(site_values), 3600)
        per_prefix = (tracemalloc.get_traced_memory()[0] - base) / n
    finally:
        tracemalloc.stop()
    assert len(r.services) == n and len(r._site_lists) == 56
    assert per_prefix < 400, per_prefix


def test_recursive_section_sizes_the_caches(tmp_path: Path) -> None:
    data = tmp_path / "rec"
    init_node(data, role="recursive", root=["127.0.0.1:2641"])
    cfg = NodeConfig.load(data)
    assert cfg.recursive.services >= 40_000  # the seeds' prefixes, by default
    cfg.recursive.answers, cfg.recursive.services, cfg.recursive.missing_prefixes = 1234, 567, 89
    cfg.save()
    service = open_service(NodeConfig.load(data))
    try:
        assert isinstance(service, RecursiveService)
        engine = service.resolver
        assert (engine.answers.capacity, engine.services.capacity, engine.missing.capacity) == (1234, 567, 89)
    finally:
        service.close()
    text = (data / "idr.toml").read_text()
    (data / "idr.toml").write_text(text.replace("services = 567", "services = -1"))
    try:
        NodeConfig.load(data)
    except ConfigError as e:
        assert "[recursive]" in str(e)
    else:
        raise AssertionError("a negative cache size was accepted")
