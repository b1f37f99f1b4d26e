"""Beyond issue 12's list: costs a client chooses are bounded where they are read.

* HS_VLIST groups: an admin group whose members are groups (a complete graph of 40 group values
  in one record) made "is X an admin?" walk 40⁵ paths; one question now reads each group value
  once, at most MAX_GROUP_LOOKUPS records.
* ``GET /api/handles?prefix=…&page=N&pageSize=1``: the page number cost one store query per page
  skipped; it is now skipped by key in steps of ``max_list_page``, and past the end costs nothing.
* The supply-chain tree of the console follows references across the federation; with every
  reference delegated to a server that never answers, one anonymous page view cost 3 s per
  reference (minutes in all). Now a few walks run at once and each within ``walk_seconds``.
* SM2 keys are checked on the curve at write time: a record of 2,048 of them in well under a second.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from idr.codec.keys import encode_public_key
from idr.codec.sm2 import SM2PrivateKey
from idr.codec.values import encode_admin, encode_vlist
from idr.core import authz
from idr.core.federation import delegation_values, loopback_site
from idr.core.request import Op, Request
from idr.model.errors import ResponseCode
from idr.model.handle import normalize_key
from idr.model.value import AdminPermission, AdminRecord, HandleRecord, HandleValue, ValueReference
from tests.security.conftest import ADMIN_REF, Live, basic, start_live

GROUP = "88.100/group"
WIDTH = 40


def _complete_graph() -> HandleRecord:
    """One record, WIDTH HS_VLIST values, each listing every one of them."""
    members = [ValueReference(GROUP, i) for i in range(1, WIDTH + 1)]
    values = tuple(HandleValue(i, "HS_VLIST", encode_vlist(members)) for i in range(1, WIDTH + 1))
    return HandleRecord(GROUP, values)


def test_group_walk_reads_each_group_once_within_a_budget() -> None:
    group = _complete_graph()
    reads = 0

    def lookup(key: str) -> HandleRecord | None:
        nonlocal reads
        reads += 1
        assert reads <= 100_000, "the walk did not stop"
        return group if key == normalize_key(GROUP) else None

    outsider = ValueReference("88.100/outsider", 300)
    admins = [AdminRecord(GROUP, 1, int(AdminPermission.ALL))]
    t0 = time.perf_counter()
    assert not authz.grants(outsider, admins, AdminPermission.ADD_VALUE, lookup)
    assert reads <= WIDTH and time.perf_counter() - t0 < 1.0
    # a member deep in the groups is still found
    deep = HandleRecord("88.100/deep", (HandleValue(1, "HS_VLIST", encode_vlist([outsider])),))
    chain = {
        normalize_key(GROUP): HandleRecord(
            GROUP, (HandleValue(1, "HS_VLIST", encode_vlist([ValueReference("88.100/deep", 1)])),)
        ),
        normalize_key("88.100/deep"): deep,
    }
    assert authz.grants(outsider, admins, AdminPermission.ADD_VALUE, chain.get)


async def test_a_write_against_a_group_bomb_is_answered_at_once(live: Live) -> None:
    svc = live.node.service
    r = await svc.submit(
        Request(Op.CREATE_HANDLE, GROUP, values=_complete_graph().values, identity=ADMIN_REF)
    )
    assert r.ok, r
    admin = HandleValue(100, "HS_ADMIN", encode_admin(AdminRecord(GROUP, 1, int(AdminPermission.ALL))))
    r = await svc.submit(Request(Op.CREATE_HANDLE, "88.100/guarded", values=(admin,), identity=ADMIN_REF))
    assert r.ok, r
    me = await live.identity("88.100/outsider", "outsider-secret", AdminPermission(0), on="88.100/guarded")
    t0 = time.perf_counter()
    status, body = await live.put(
        "88.100/guarded",
        [{"index": 7, "type": "DESC", "data": "x"}],
        basic(me, "outsider-secret"),
        query="?index=7",
    )
    assert status == 403 and body["responseCode"] == ResponseCode.INSUFFICIENT_PERMISSIONS
    assert time.perf_counter() - t0 < 1.0


async def test_page_number_costs_no_query_per_page(live: Live) -> None:
    svc = live.node.service
    records = [HandleRecord(f"88.100/item-{i:05}", (HandleValue(1, "DESC", b"x"),)) for i in range(3000)]
    from idr.store.base import Write

    svc.store.commit("test", "", [Write(normalize_key(r.handle), r) for r in records])
    store = svc.store
    calls = 0
    real = store.list_handles

    def counted(*args: Any, **kwargs: Any) -> list[str]:
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)

    store.list_handles = counted  # type: ignore[method-assign]
    try:
        for page in (2999, 10**9):
            calls = 0
            url = f"{live.https}/api/handles?prefix=88.100&page={page}&pageSize=1"
            async with live.client.get(url, headers=basic()) as r:
                body = await r.json()
                assert r.status == 200, body
            assert body["handles"] == (["88.100/item-02999"] if page == 2999 else [])
            assert calls <= 3, calls
    finally:
        del store.list_handles


# ----------------------------------------------------------------------------- walks


@pytest.fixture
async def blackhole() -> AsyncIterator[int]:
    """An HTTP server that takes every request and never answers."""

    async def hang(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hang)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


async def test_supply_chain_walk_is_bounded_in_time_and_number(tmp_path: Path, blackhole: int) -> None:
    limits = {"walk_seconds": 2.0, "max_walks": 2}
    async with start_live(tmp_path / "sec", role="secondary", http_limits=limits) as live:
        svc = live.node.service
        site = loopback_site("blackhole", http=blackhole)
        r = await svc.submit(
            Request(
                Op.CREATE_HANDLE,
                "0.NA/88.100.9",
                values=tuple(delegation_values([site], derived=True)),
                identity=ADMIN_REF,
            )
        )
        assert r.ok, r
        refs = tuple(HandleValue(10 + i, "PART", f"88.100.9/item-{i}".encode()) for i in range(100))
        r = await svc.submit(Request(Op.CREATE_HANDLE, "88.100/root", values=refs, identity=ADMIN_REF))
        assert r.ok, r

        async def view() -> tuple[int, float]:
            t0 = time.perf_counter()
            async with live.client.get(f"{live.http}/console/chain?id=88.100/root") as resp:
                await resp.read()
                return resp.status, time.perf_counter() - t0

        results = await asyncio.gather(*(view() for _ in range(5)))
        statuses = sorted(s for s, _ in results)
        assert statuses.count(200) <= 2 and set(statuses) <= {200, 503}, statuses
        assert max(t for _, t in results) < 2.0 + 4.0  # the walk's time, plus one hop's timeout at most
        t0 = time.perf_counter()
        async with live.client.get(f"{live.http}/api/handles/0.NA/88.100") as resp:
            assert resp.status == 200
        assert time.perf_counter() - t0 < 0.5


async def test_a_record_full_of_sm2_keys_is_checked_quickly(live: Live) -> None:
    """As many SM2 keys as a record may hold (1,700 fill ``max_record_bytes``), each checked on
    the curve: quick; 2,040 (as many values as a record may have) are refused as quickly."""
    keys = [encode_public_key(SM2PrivateKey.generate().public_key()) for _ in range(8)]

    def values(n: int) -> list[dict[str, Any]]:
        return [
            {
                "index": 1000 + i,
                "type": "HS_PUBKEY",
                "data": {"format": "base64", "value": base64.b64encode(keys[i % 8]).decode()},
            }
            for i in range(n)
        ]

    for n, expected in ((1700, 200), (2040, 400)):
        t0 = time.perf_counter()
        status, body = await live.put(f"88.100/keys-{n}", {"values": values(n)})
        assert status == expected, body
        assert time.perf_counter() - t0 < 3.0


async def test_nesting_and_batch_sizes_are_refused_clearly(
    live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    """JSON nested past orjson's 1,024 levels, an SNMS batch past 2,000 items: clear refusals."""
    import logging

    caplog.set_level(logging.ERROR)
    deep = b"[" * 5000 + b"]" * 5000
    headers = {**basic(), "Content-Type": "application/json"}
    before = live.snapshot()
    async with live.client.put(f"{live.https}/api/handles/88.100/deep", data=deep, headers=headers) as r:
        assert r.status == 400 and (await r.json())["responseCode"] == ResponseCode.PROTOCOL_ERROR
    async with live.client.post(
        f"{live.https}/identity/token", json={"username": "300:0.NA/88.100", "password": "admin-secret-key"}
    ) as r:
        token = (await r.json())["data"]["token"]
    bearer = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with live.client.post(f"{live.https}/identityv2/data", data=deep, headers=bearer) as r:
        assert (await r.json())["status"] == -2
    items = [{"handle": f"88.100/b{i}", "templateVersion": "v", "value": []} for i in range(2001)]
    async with live.client.post(f"{live.https}/identityv2/data/batchCreate", json=items, headers=bearer) as r:
        body = await r.json()
    assert body["status"] == -2 and "2000" in body["message"]
    assert live.snapshot() == before
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
