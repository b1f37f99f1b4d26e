"""Reads that can block stay off the event loop (issue 11 item 5): on PostgreSQL a record-cache
miss waits in a reader thread while the loop keeps answering; listing is bounded by
``max_list_page`` and never runs on the loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from idr.core.request import Op, Request
from idr.core.service import NodeService
from idr.model.errors import ResponseCode
from idr.model.value import HandleValue, ValueReference
from idr.node import Node
from idr.resolver.client import HandleClient
from tests.runtime.conftest import node_on_postgres

ADMIN = ValueReference("0.NA/88.100", 300)
SECRET = "reads-s3cret-0123456789"
URL = HandleValue(1, "URL", b"https://example.org/")


@pytest.fixture
async def pg_node(tmp_path: Path) -> AsyncIterator[tuple[Node, str]]:
    async with node_on_postgres(tmp_path / "n", SECRET, "88.100") as started:
        yield started


async def test_a_cache_miss_on_postgres_does_not_stall_the_loop(pg_node: tuple[Node, str]) -> None:
    node, dsn = pg_node
    svc = node.service
    for name in ("88.100/hot", "88.100/cold"):
        assert (await svc.submit(Request(Op.CREATE_HANDLE, name, values=(URL,), identity=ADMIN))).ok
    assert node.listeners.native is not None
    port = node.listeners.native[1]
    async with HandleClient("127.0.0.1", port, timeout=5.0, retries=0) as c:
        assert (await c.resolve("88.100/hot")).response_code == ResponseCode.SUCCESS  # cached now
    svc.cache.invalidate(["88.100/COLD", "0.NA/88.100"])  # the admin's identity record too
    # Another session holds the handles table: every SELECT on it waits until it lets go.
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with psycopg.connect(dsn) as conn, conn.transaction():
            conn.execute("LOCK TABLE handles IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(20)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert await asyncio.to_thread(locked.wait, 10)
    try:
        async with HandleClient("127.0.0.1", port, timeout=10.0, retries=0) as c:
            cold = asyncio.ensure_future(c.resolve("88.100/cold"))  # waits on the lock, off the loop
            # A Basic-authenticated HTTPS request whose identity is not cached waits too, off the loop.
            authed = asyncio.ensure_future(_basic_get(node, "88.100/hot"))
            await asyncio.sleep(0.2)
            assert not cold.done() and not authed.done()
            t0 = time.monotonic()
            hot = await c.resolve("88.100/hot")  # a cached answer, while the miss waits
            assert hot.response_code == ResponseCode.SUCCESS
            assert time.monotonic() - t0 < 1.0
            assert not cold.done()
            release.set()
            assert (await cold).response_code == ResponseCode.SUCCESS
            assert await authed == 200
    finally:
        release.set()
        holder.join(10)


async def _basic_get(node: Node, handle: str) -> int:
    import aiohttp

    assert node.listeners.https is not None
    url = f"https://127.0.0.1:{node.listeners.https[1]}/api/handles/{handle}"
    headers = {"Authorization": aiohttp.encode_basic_auth("300%3A0.NA%2F88.100", SECRET)}  # type: ignore[attr-defined]
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers, ssl=False) as r:
        return r.status


@pytest.fixture
def small(tmp_path: Path) -> NodeService:
    from idr.store.sqlite import SqliteStore
    from tests.core.conftest import admin_values

    svc = NodeService(SqliteStore(tmp_path / "idr.sqlite3"), admins=[str(ADMIN)], max_list_page=5)
    svc.bootstrap("88.100", admin_values())
    for i in range(7):
        assert svc.handle(Request(Op.CREATE_HANDLE, f"88.100/h{i}", values=(URL,), identity=ADMIN)).ok
    return svc


def test_listing_is_bounded_by_max_list_page(small: NodeService) -> None:
    everything = small.handle(Request(Op.LIST_HANDLES, "88.100", identity=ADMIN))
    assert everything.code == ResponseCode.INVALID_VALUE and "page by page" in everything.message
    too_big = small.handle(Request(Op.LIST_HANDLES, "88.100", identity=ADMIN, page=0, page_size=6))
    assert too_big.code == ResponseCode.INVALID_VALUE and "limit of 5" in too_big.message
    pages = [
        small.handle(Request(Op.LIST_HANDLES, "88.100", identity=ADMIN, page=p, page_size=5)) for p in (0, 1)
    ]
    assert [len(p.handles) for p in pages] == [5, 2] and pages[0].total == 7
    small.max_list_page = 10
    assert len(small.handle(Request(Op.LIST_HANDLES, "88.100", identity=ADMIN)).handles) == 7
    small.close()


def test_a_list_is_never_answered_on_the_loop(small: NodeService) -> None:
    assert small.answer_now(Request(Op.LIST_HANDLES, "88.100", identity=ADMIN, page=0, page_size=2)) is None
    assert small.answer_now(Request(Op.RESOLUTION, "88.100/h1")) is not None
    small.close()
