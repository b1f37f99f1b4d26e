"""Beyond issue 12's list: what one client may hold of the HTTP(S) listeners.

aiohttp bounds a request's size, not the connections or the time a client holds. Against a
live node (``[http]`` limits lowered in its idr.toml so the test is quick): one address cannot
take more than ``max_connections_per_source``, a slowloris that trickles header bytes is closed
``request_timeout`` after its first byte, a client that never reads its answers is closed
``write_stall_timeout`` after its buffer filled — and meanwhile a bystander at another address
is answered at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.security.conftest import Live, basic, start_live

PER_SOURCE = 16
TIMEOUT = 2.0

LIMITS = {
    "max_connections_per_source": PER_SOURCE,
    "request_timeout": TIMEOUT,
    "write_stall_timeout": TIMEOUT,
}


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Live]:
    async with start_live(tmp_path / "node", http_limits=LIMITS) as live:
        yield live


def _port(live: Live) -> int:
    assert live.node.listeners.http
    return live.node.listeners.http[1]


async def _connect(port: int, rcvbuf: int | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind(("127.0.0.2", 0))  # the attacker's address (any 127/8 address is loopback)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock)


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the server closes the connection within ``seconds`` (reading what it sends)."""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            chunk = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
            if not chunk:
                return True
    except TimeoutError:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True
    return False


async def _bystander(live: Live) -> float:
    t0 = time.perf_counter()
    async with live.client.get(f"{live.http}/api/handles/0.NA/88.100") as r:
        assert r.status == 200
    return time.perf_counter() - t0


async def test_one_address_cannot_hold_every_connection(node: Live) -> None:
    conns = [await _connect(_port(node)) for _ in range(PER_SOURCE + 24)]
    try:
        closed = await asyncio.gather(*(_closed_within(r, 1.0) for r, _ in conns))
        assert sum(closed) >= 24, closed  # all beyond the per-source limit, at once
        assert await _bystander(node) < 0.5
    finally:
        for _, w in conns:
            w.close()


async def test_slowloris_is_closed_after_the_request_timeout(node: Live) -> None:
    conns = [await _connect(_port(node)) for _ in range(8)]
    for _, w in conns:
        w.write(b"GET /api/handles/0.NA/88.100 HTTP/1.1\r\nHost: x\r\n")

    async def trickle(w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            for _ in range(int(3 * TIMEOUT / 0.25)):
                w.write(b"X")
                await w.drain()
                await asyncio.sleep(0.25)

    trickling = [asyncio.create_task(trickle(w)) for _, w in conns]
    try:
        t0 = time.monotonic()
        closed = await asyncio.gather(*(_closed_within(r, TIMEOUT + 2.0) for r, _ in conns))
        assert all(closed), closed
        assert time.monotonic() - t0 >= TIMEOUT - 0.5  # not before its time
        assert await _bystander(node) < 0.5
    finally:
        for t in trickling:
            t.cancel()
        for _, w in conns:
            w.close()


async def test_a_client_that_never_reads_is_closed_and_its_answers_freed(node: Live) -> None:
    big = "x" * 200_000  # within max_record_bytes
    status, _ = await node.put("88.100/big", [{"index": 1, "type": "DESC", "data": big}], basic())
    assert status == 200
    guard_before = node.node.listeners.http
    assert guard_before
    reader, writer = await _connect(_port(node), rcvbuf=4096)
    request = b"GET /api/handles/88.100/big HTTP/1.1\r\nHost: x\r\n\r\n"
    writer.write(request * 120)  # 24 MB of answers asked for, none read
    await writer.drain()
    try:
        await asyncio.sleep(0.5)
        assert await _bystander(node) < 0.5
        t0 = time.monotonic()
        # now read: what was sent before the stall, then the close
        await asyncio.sleep(TIMEOUT + 1.5)
        assert await _closed_within(reader, 30.0)
        assert time.monotonic() - t0 < TIMEOUT + 30
    finally:
        writer.close()


def test_the_guard_under_uvloop(tmp_path: Path) -> None:
    """``idr serve`` runs on uvloop, whose transports only look like asyncio's."""
    import uvloop

    async def main() -> None:
        async with start_live(tmp_path / "node", http_limits=LIMITS) as live:
            await test_one_address_cannot_hold_every_connection(live)
            await test_slowloris_is_closed_after_the_request_timeout(live)

    uvloop.run(main())


async def test_unparseable_requests_are_a_400_without_a_traceback(
    node: Live, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by bench/fuzz_http.py: aiohttp logged a header line over 8,190 bytes with a traceback."""
    import logging

    caplog.set_level(logging.WARNING)
    for header in ("Handle sessionId=" + "x" * 10_000, "Handle " + "a=b," * 3000):
        async with node.client.get(
            f"{node.http}/api/handles/0.NA/88.100", headers={"Authorization": header}
        ) as r:
            assert r.status == 400
    reader, writer = await _connect(_port(node))
    writer.write(b"\x00\x01GARBAGE / HTTP/9.9\r\n\r\n")
    assert await _closed_within(reader, 5.0)
    writer.close()
    assert not [rec for rec in caplog.records if rec.exc_info or rec.levelno >= logging.ERROR]
    assert await _bystander(node) < 0.5


async def test_tls_handshakes_count_against_their_address(node: Live) -> None:
    """Connections to the HTTPS listener that never finish (or start) their TLS handshake hold a
    place of their address from the moment they are accepted: past ``max_connections_per_source``
    more are closed at once, and another address still gets a full HTTPS answer meanwhile."""
    assert node.node.listeners.https
    port = node.node.listeners.https[1]
    guard_total = _guard(node)
    before = guard_total()
    conns = [await _connect(port) for _ in range(PER_SOURCE + 8)]  # no ClientHello, ever
    try:
        closed = await asyncio.gather(*(_closed_within(r, 1.0) for r, _ in conns))
        assert sum(closed) >= 8, closed  # beyond the per-source limit, at once
        assert guard_total() - before == PER_SOURCE
        t0 = time.perf_counter()
        async with node.client.get(f"{node.https}/api/handles/0.NA/88.100") as r:
            assert r.status == 200
        assert time.perf_counter() - t0 < 1.0
        # half a handshake (a ClientHello, then silence) counts the same
        for _, w in conns:
            w.close()
        await _until(lambda: guard_total() == before)
        stalled = [await _connect(port) for _ in range(PER_SOURCE + 4)]
        hello = _client_hello()
        for _, w in stalled:
            w.write(hello)
        closed = await asyncio.gather(*(_closed_within(r, 1.0) for r, _ in stalled))
        assert sum(closed) >= 4, closed
        assert guard_total() - before == PER_SOURCE
        for _, w in stalled:
            w.close()
    finally:
        for _, w in conns:
            w.close()
    await _until(lambda: guard_total() == before)  # every place given back


async def test_a_handshake_that_times_out_gives_its_place_back(tmp_path: Path) -> None:
    limits = {**LIMITS, "tls_handshake_timeout": 1.0}
    async with start_live(tmp_path / "node", http_limits=limits) as live:
        assert live.node.listeners.https
        guard_total = _guard(live)
        before = guard_total()
        conns = [await _connect(live.node.listeners.https[1]) for _ in range(PER_SOURCE)]
        try:
            assert guard_total() - before == PER_SOURCE
            closed = await asyncio.gather(*(_closed_within(r, 5.0) for r, _ in conns))
            assert all(closed), closed
            await _until(lambda: guard_total() == before)
        finally:
            for _, w in conns:
                w.close()


def test_tls_handshakes_are_counted_under_uvloop(tmp_path: Path) -> None:
    import uvloop

    async def main() -> None:
        async with start_live(tmp_path / "node", http_limits=LIMITS) as live:
            await test_tls_handshakes_count_against_their_address(live)
            await test_a_client_that_speaks_first_is_served(live)

    uvloop.run(main())


async def test_a_client_that_speaks_first_is_served(node: Live) -> None:
    """A blocking client (curl, http.client) sends its ClientHello with the connection: uvloop may
    read it before the guard starts TLS, and the handshake must still get it."""
    import http.client
    import ssl

    assert node.node.listeners.https
    port = node.node.listeners.https[1]
    ctx = ssl.create_default_context(cafile=str(node.data / "tls" / "cert.pem"))

    def get() -> int:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5.0, context=ctx)
        try:
            conn.request("GET", "/api/handles/0.NA/88.100")
            return conn.getresponse().status
        finally:
            conn.close()

    assert [await asyncio.to_thread(get) for _ in range(5)] == [200] * 5


async def test_tls_handshakes_from_one_address_are_paced(tmp_path: Path) -> None:
    """A server TLS handshake costs more CPU than the client's, on the loop that answers UDP too:
    one address opening connections in a loop gets a burst, then its handshakes wait their turn
    at the paced rate; a turn further off than the handshake timeout is closed at once. Another
    address is not slowed meanwhile."""
    import ssl

    pace = {"tls_handshake_burst": 4, "tls_handshakes_per_second": 4.0, "tls_handshake_timeout": 1.1}
    limits = {**LIMITS, **pace}
    async with start_live(tmp_path / "node", http_limits=limits) as live:
        assert live.node.listeners.https
        port = live.node.listeners.https[1]
        ctx = ssl.create_default_context(cafile=str(live.data / "tls" / "cert.pem"))
        ctx.check_hostname = False
        t0 = time.perf_counter()

        async def handshake() -> float | None:
            """Seconds from t0 until this connection's TLS is up, or None if it was closed."""
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.2", 0))
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            try:
                opening = asyncio.open_connection(sock=sock, ssl=ctx, server_hostname="localhost")
                _, w = await asyncio.wait_for(opening, 5.0)
            except (ssl.SSLError, ConnectionError, OSError):
                return None
            up = time.perf_counter() - t0
            w.close()
            return up

        attempts = [asyncio.create_task(handshake()) for _ in range(12)]
        await asyncio.sleep(0.1)
        assert await _bystander_tls(live) < 0.5  # 127.0.0.1 has its own pace
        done = await asyncio.gather(*attempts)
        up = sorted(t for t in done if t is not None)
        # 4 at once, then one per 0.25 s for the next 1.1 s (4 more); the rest closed at once
        assert len(up) == 8, done
        assert up[3] < 0.5 and up[-1] > 0.7, up
        m = live.node.http_guards.connections.metrics() if live.node.http_guards else {}
        assert m["idr_tls_handshakes_paced"] == 4 and m["idr_tls_handshakes_refused"] == 4, m
        async with live.client.get(f"{live.http}/metrics") as r:
            assert "idr_tls_handshakes_refused 4.0" in await r.text()


async def _bystander_tls(live: Live) -> float:
    t0 = time.perf_counter()
    async with live.client.get(f"{live.https}/api/handles/0.NA/88.100") as r:
        assert r.status == 200
    return time.perf_counter() - t0


def _guard(live: Live) -> Any:
    """How many connections the attacker's address (127.0.0.2) holds, as the node counts them."""
    from idr.server.throttle import source_key

    guards = live.node.http_guards
    assert guards is not None
    return lambda: guards.connections.per_source.get(source_key("127.0.0.2"), 0)


async def _until(cond: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def _client_hello() -> bytes:
    """The first flight of a real TLS client (a memory BIO handshake), to send and then go quiet."""
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_side=False)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()
