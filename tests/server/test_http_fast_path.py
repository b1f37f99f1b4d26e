"""``idr serve``'s HTTP fast path (``idr.server.http.fast_path``): a cached anonymous resolution
is answered before aiohttp routes the request or runs any middleware. It must answer exactly
what the routed path answers (body and headers), never serve a stale answer after a write,
and leave everything else (credentials, queries, percent-encoding, HEAD, ``Expect``) to the
application. (That its answers are counted and timed: tests/server/test_metrics.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web_urldispatcher

from idr.core.request import Op, Request
from idr.demo import RunningNode, start_node
from idr.model.value import HandleValue


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[RunningNode]:
    n = await start_node(tmp_path, "n", "Fast path node", "secondary", "88.100", "fast-secret")
    try:
        await put(n, "88.100/f1", "https://example.org/f1", Op.CREATE_HANDLE)
        yield n
    finally:
        await n.node.stop()
        n.node.close()


@pytest.fixture
def routed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every request aiohttp's router resolved (its path)."""
    seen: list[str] = []
    real = web_urldispatcher.UrlDispatcher.resolve

    async def resolve(self: web_urldispatcher.UrlDispatcher, request: Any) -> Any:
        seen.append(request.path)
        return await real(self, request)

    monkeypatch.setattr(web_urldispatcher.UrlDispatcher, "resolve", resolve)
    yield seen


async def put(n: RunningNode, handle: str, url: str, op: Op = Op.MODIFY_VALUE) -> None:
    values = (HandleValue(1, "URL", url.encode()),)
    assert (await n.service.submit(Request(op, handle, values=values, identity=n.admin))).ok


def headers(r: aiohttp.ClientResponse) -> dict[str, str]:
    return {k: v for k, v in r.headers.items() if k != "Date"}


async def test_a_cached_resolution_is_answered_before_routing(node: RunningNode, routed: list[str]) -> None:
    url = f"{node.http_url}/api/handles/88.100/f1"
    async with aiohttp.ClientSession(trust_env=False) as http:
        async with http.get(url) as first:
            body = await first.read()
        assert len(routed) == 1 and b'"responseCode":1' in body  # filled the cache
        async with http.get(url) as second:
            assert await second.read() == body
        assert len(routed) == 1  # answered by the fast path
        assert second.status == first.status and headers(second) == headers(first)
        # a spelling in another case: its own echo (pyhandle compares it), from the same entry
        async with http.get(f"{node.http_url}/api/handles/88.100/F1") as r:
            assert b'"handle":"88.100/F1"' in await r.read()
        assert len(routed) == 1
        await put(node, "88.100/f1", "https://example.org/changed")  # seen at once
        async with http.get(url) as r:
            assert b"example.org/changed" in await r.read()
        assert len(routed) == 2


@pytest.mark.parametrize(
    ("suffix", "kwargs"),
    [
        ("?type=URL", {}),
        ("", {"headers": {"Expect": "100-continue"}}),
        ("", {"headers": {"Authorization": "Basic eDp5"}}),
        ("", {"method": "HEAD"}),
        ("%2Fx", {}),
    ],
    ids=["query", "expect", "authorization", "head", "percent-encoded"],
)
async def test_what_the_fast_path_leaves_to_the_application(
    node: RunningNode, routed: list[str], suffix: str, kwargs: dict[str, Any]
) -> None:
    url = f"{node.http_url}/api/handles/88.100/f1"
    async with aiohttp.ClientSession(trust_env=False) as http:
        for _ in range(2):
            async with http.get(url) as r:
                assert r.status == 200
        assert len(routed) == 1
        method = kwargs.pop("method", "GET")
        async with http.request(method, url + suffix, **kwargs) as r:
            await r.read()
        assert len(routed) == 2  # the application answered it
