"""``DrainedSocket`` sends the hot path's answers of one burst together at its end, in order,
and any other answer of the burst after the ones before it (real sockets on loopback) — with a
system call per burst each way (``recvmmsg``/``sendmmsg``, the ``_mmsg`` extension) and with
one per datagram (a build without it, or an IPv6 socket)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from idr.server import udp
from idr.server.udp import DrainedSocket

BOTH = pytest.mark.parametrize("bursts", [True, False], ids=["mmsg", "per-datagram"])


def _pending(client: socket.socket) -> list[bytes]:
    """Every datagram already delivered to ``client`` (loopback delivers within ``sendto``)."""
    got = []
    while True:
        try:
            got.append(client.recv(2048))
        except BlockingIOError:
            return got


def _loopback_pair() -> tuple[socket.socket, socket.socket]:
    """(server, client): two non-blocking UDP sockets on 127.0.0.1."""
    pair = []
    for _ in range(2):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        pair.append(sock)
    return pair[0], pair[1]


class _Answering(asyncio.DatagramProtocol):
    """Answers ``q<i>`` with ``a<i>`` through ``send_later`` (as the hot path does) and ``slow``
    through ``sendto`` (as the slow path does); notes what the client had received meanwhile."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.seen_by_client: list[list[bytes]] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.seen_by_client.append(_pending(self.client))
        if data == b"slow":
            self.transport.sendto(b"S", addr)
        else:
            self.transport.send_later((b"a" + data[1:], addr))


@BOTH
@pytest.mark.asyncio
async def test_a_bursts_answers_go_out_together_at_its_end_in_order(bursts: bool) -> None:
    loop = asyncio.get_running_loop()
    server, client = _loopback_pair()
    protocol = _Answering(client)
    transport = DrainedSocket(loop, server, protocol, bursts=bursts)
    assert transport.bursts is bursts
    try:
        for i in range(5):  # all waiting before the loop's next turn reads the socket
            client.sendto(b"q%d" % i, server.getsockname())
        got: list[bytes] = []
        for _ in range(200):  # bounded: the loop reads the burst within a few turns
            await asyncio.sleep(0.005)
            got += _pending(client)
            if len(got) >= 5:
                break
        assert got == [b"a0", b"a1", b"a2", b"a3", b"a4"]
        assert protocol.seen_by_client == [[]] * 5, "an answer left before its burst ended"
        # a burst with an answer from the slow path: the hot answers before it go first
        protocol.seen_by_client.clear()
        for q in (b"q5", b"q6", b"slow", b"q7"):
            client.sendto(q, server.getsockname())
        got = []
        for _ in range(200):
            await asyncio.sleep(0.005)
            got += _pending(client)
            if got:
                break
        assert protocol.seen_by_client == [[], [], [], [b"a5", b"a6", b"S"]]
        assert got == [b"a7"]
    finally:
        transport.close()
        client.close()


class _Keeping(asyncio.DatagramProtocol):
    """Keeps every datagram it is handed, as the reassembler keeps a fragment."""

    def __init__(self) -> None:
        self.kept: list[tuple[object, Any]] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.kept.append((data, addr))


@BOTH
@pytest.mark.asyncio
async def test_each_datagram_of_a_burst_is_handed_over_whole_as_its_own_bytes(bursts: bool) -> None:
    """Read into one buffer kept across reads, each datagram is copied out at its size: a
    large one is whole (up to the largest UDP payload), and one kept by the protocol is not
    overwritten by the next datagram read into the buffer."""
    loop = asyncio.get_running_loop()
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    server.bind(("127.0.0.1", 0))
    server.setblocking(False)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    client.bind(("127.0.0.1", 0))
    sent = [bytes([65 + i % 26]) * n for i, n in enumerate((65_507, 48, 60_000, 1, 300, 2))]
    protocol = _Keeping()
    transport = DrainedSocket(loop, server, protocol, bursts=bursts)
    try:
        for datagram in sent:  # all waiting before the loop's next turn reads the socket
            client.sendto(datagram, server.getsockname())
        for _ in range(400):  # bounded
            if len(protocol.kept) == len(sent):
                break
            await asyncio.sleep(0.005)
        assert [d for d, _ in protocol.kept] == sent
        assert all(type(d) is bytes for d, _ in protocol.kept)
        assert {a for _, a in protocol.kept} == {client.getsockname()}
    finally:
        transport.close()
        client.close()


class _CountingSocket(socket.socket):
    """A UDP socket that counts its ``recvfrom_into`` calls, the empty-socket ones apart."""

    def __init__(self) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_DGRAM)
        self.reads = 0
        self.empty = 0

    def recvfrom_into(self, *args: Any, **kwargs: Any) -> Any:
        self.reads += 1
        try:
            return super().recvfrom_into(*args, **kwargs)
        except BlockingIOError:
            self.empty += 1
            raise


@pytest.mark.asyncio
async def test_a_burst_of_the_last_full_bursts_size_ends_without_reading_an_empty_socket() -> None:
    """A burst that reached the size of the last one that emptied the socket asks the kernel
    whether another datagram waits (FIONREAD) instead of a ``recvfrom`` that fails; a larger
    burst is still read whole, and a datagram of size 0 left waiting is read at the next turn."""
    loop = asyncio.get_running_loop()
    server = _CountingSocket()
    server.bind(("127.0.0.1", 0))
    server.setblocking(False)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.setblocking(False)
    protocol = _Keeping()
    transport = DrainedSocket(loop, server, protocol, bursts=False)

    async def burst(datagrams: list[bytes]) -> None:
        before = len(protocol.kept)
        for d in datagrams:  # all waiting before the loop's next turn reads the socket
            client.sendto(d, server.getsockname())
        for _ in range(400):  # bounded
            if len(protocol.kept) == before + len(datagrams):
                break
            await asyncio.sleep(0.005)
        assert [d for d, _ in protocol.kept[before:]] == datagrams

    try:
        await burst([b"a%d" % i for i in range(4)])
        assert (server.reads, server.empty) == (5, 1)  # the first burst ends on the empty socket
        await burst([b"b%d" % i for i in range(4)])
        assert (server.reads, server.empty) == (9, 1)  # four: no read of the empty socket
        await burst([b"c%d" % i for i in range(6)])  # more waiting than the last burst: all read
        assert (server.reads, server.empty) == (16, 2)
        await burst([b"d%d" % i for i in range(6)] + [b""])  # FIONREAD says 0 for the empty one
        await burst([b"e0"])
        assert server.empty >= 2
    finally:
        transport.close()
        client.close()


@pytest.mark.asyncio
async def test_the_burst_extension_is_built_and_used_for_ipv4() -> None:
    """``pip install`` builds ``idr.server._mmsg`` (Linux, a C compiler): without it every
    datagram costs a system call each way and the warm path loses what bench/native_resolve.py
    measures for it. IPv6 sockets keep one call per datagram."""
    assert udp.BURSTS
    loop = asyncio.get_running_loop()
    for family, used in ((socket.AF_INET, True), (socket.AF_INET6, False)):
        transport = DrainedSocket(loop, socket.socket(family, socket.SOCK_DGRAM), _Keeping())
        assert transport.bursts is used
        transport.close()


class _Failing(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.errors: list[Exception] = []

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)


@pytest.mark.asyncio
async def test_a_burst_send_reports_each_refused_address_and_sends_the_rest() -> None:
    """One ``sendmmsg`` stops at an answer the kernel refuses: that one is reported to the
    protocol (as ``sendto``'s error is), the rest still go, in order; a host name (not a
    numeric IPv4 address) goes through the socket's own ``sendto``."""
    loop = asyncio.get_running_loop()
    server, client = _loopback_pair()
    here = client.getsockname()
    protocol = _Failing()
    transport = DrainedSocket(loop, server, protocol, bursts=True)
    try:
        for item in [
            (b"one", here),
            (b"refused", ("255.255.255.255", here[1])),  # broadcast without SO_BROADCAST: EACCES
            (bytearray(b"two"), here),
            (memoryview(b"three"), ("localhost", here[1])),
            (b"four", here),
        ]:
            transport.send_later(item)
        transport._send_burst()
        assert _pending(client) == [b"one", b"two", b"three", b"four"]
        assert [type(e) for e in protocol.errors] == [PermissionError]
        assert not transport._later
    finally:
        transport.close()
        client.close()


@BOTH
@pytest.mark.asyncio
async def test_an_answer_that_is_not_bytes_does_not_hold_back_later_bursts(bursts: bool) -> None:
    """A bug upstream that queues something not bytes-like raises its TypeError, and the burst's
    list is emptied anyway: the next burst's answers still go out."""
    loop = asyncio.get_running_loop()
    server, client = _loopback_pair()
    here = client.getsockname()
    transport = DrainedSocket(loop, server, _Failing(), bursts=bursts)
    try:
        transport.send_later(("not bytes", here))
        with pytest.raises(TypeError):
            transport._send_burst()
        assert not transport._later
        transport.send_later((b"next", here))
        transport._send_burst()
        assert _pending(client) == [b"next"]
    finally:
        transport.close()
        client.close()
