"""Client failover: a dead preferred site costs one failure, and clients return when it is back."""

from __future__ import annotations

import asyncio

import pytest

from idr.model.errors import ResponseCode
from idr.resolver.client import ResponseError
from idr.resolver.failover import Failover, SiteUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _server(name: bytes, port: int = 0) -> asyncio.Server:
    async def on(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(name)
        await w.drain()
        w.close()

    return await asyncio.start_server(on, "127.0.0.1", port, reuse_address=True)


async def _ask(port: int) -> bytes:
    async with asyncio.timeout(1.0):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        try:
            return await r.read(16)
        finally:
            w.close()


async def test_fails_over_to_the_mirror_and_returns_to_the_primary() -> None:
    primary = await _server(b"primary")
    mirror = await _server(b"mirror")
    pport = primary.sockets[0].getsockname()[1]
    mport = mirror.sockets[0].getsockname()[1]
    clock = Clock()
    fo: Failover[int] = Failover([pport, mport], retry_preferred=2.0, clock=clock)
    try:
        assert await fo.call(_ask) == b"primary"
        primary.close()
        await primary.wait_closed()
        # Every call still succeeds: the dead primary is skipped, then the mirror is sticky.
        assert [await fo.call(_ask) for _ in range(3)] == [b"mirror"] * 3
        assert fo.failovers == 1 and fo.current() == mport
        primary = await _server(b"primary", pport)
        clock.now += 1.0
        assert await fo.call(_ask) == b"mirror"  # not yet time to look at the primary again
        clock.now += 1.5
        assert await fo.call(_ask) == b"primary"  # back on the primary by itself
        assert fo.current() == pport
    finally:
        primary.close()
        mirror.close()


async def test_writes_move_past_a_read_only_mirror_but_not_past_real_errors() -> None:
    fo: Failover[str] = Failover(["mirror", "primary"])

    async def write(site: str) -> str:
        if site == "mirror":
            raise ResponseError(ResponseCode.SERVER_READ_ONLY, "the primary is at …")
        return site

    assert await fo.call(write, write=True) == "primary"
    assert fo.current(write=True) == "primary" and fo.current() == "mirror"

    async def not_found(site: str) -> str:
        raise ResponseError(ResponseCode.HANDLE_NOT_FOUND, "no")

    with pytest.raises(ResponseError):
        await fo.call(not_found)

    async def down(site: str) -> str:
        raise ConnectionRefusedError(site)

    with pytest.raises(SiteUnavailable):
        await fo.call(down)
