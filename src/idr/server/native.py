"""The native Handle protocol front-ends: UDP and TCP on one port (2641 by default).

``start_native(service, host, port)`` binds TCP first and then UDP on the same port (port 0: the
kernel picks a TCP port, and UDP takes the same number, retrying if it is taken), wires the hot
answer cache to the core's commit listener, and returns the bound address and an async closer.
Both transports share one :class:`~idr.server.handler.NativeHandler` (so a challenge sent over
one can be answered over the other) and one :class:`~idr.server.hotcache.AnswerCache`.
See ``server/udp.py`` for the amplification rule and ``server/tcp.py`` for connection rules.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from idr.core.service import NodeService
from idr.server.handler import NativeHandler
from idr.server.hotcache import AnswerCache
from idr.server.tcp import TcpLimits, TcpServerState
from idr.server.udp import Amplification, UdpProtocol

DEFAULT_PORT = 2641
BIND_ATTEMPTS = 20


@dataclass
class NativeOptions:
    amplification: Amplification = field(default_factory=Amplification)
    idle_timeout: float = 30.0
    max_connections: int = 1024
    cache_entries: int = 500_000
    udp_admin: bool = False  # Handle.Net's default site: UDP interface is query-only
    reuse_port: bool = False  # SO_REUSEPORT, for several worker processes on one port


@dataclass
class NativeServer:
    """What ``start_native`` built; tests and the bench reach the cache and counters here."""

    handler: NativeHandler
    cache: AnswerCache
    udp: UdpProtocol
    tcp: TcpServerState
    address: tuple[str, int]
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def close(self) -> None:
        for c in reversed(self._closers):
            await c()
        self._closers.clear()


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _tcp_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    s = socket.socket(_family(host), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, port))
    s.listen(1024)
    s.setblocking(False)
    return s


def _udp_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    s = socket.socket(_family(host), socket.SOCK_DGRAM)
    if reuse_port:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, port))
    s.setblocking(False)
    return s


def _bind_pair(host: str, port: int, reuse_port: bool) -> tuple[socket.socket, socket.socket]:
    """TCP then UDP on the same port number; with port 0, retry until both are free."""
    for _ in range(BIND_ATTEMPTS if port == 0 else 1):
        tcp = _tcp_socket(host, port, reuse_port)
        bound = tcp.getsockname()[1]
        try:
            return tcp, _udp_socket(host, bound, reuse_port)
        except OSError:
            tcp.close()
            if port != 0:
                raise
    raise OSError(f"no port free for both TCP and UDP on {host} after {BIND_ATTEMPTS} attempts")


async def start_server(service: NodeService, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                       options: NativeOptions | None = None) -> NativeServer:
    opts = options or NativeOptions()
    loop = asyncio.get_running_loop()
    cache = AnswerCache(opts.cache_entries)
    service.add_listener(cache.invalidate)
    handler = NativeHandler(service, udp_admin=opts.udp_admin)
    tcp_sock, udp_sock = _bind_pair(host, port, opts.reuse_port)
    state = TcpServerState(handler, cache, TcpLimits(idle_timeout=opts.idle_timeout,
                                                     max_connections=opts.max_connections))
    try:
        server = await loop.create_server(state.factory, sock=tcp_sock)
        udp_transport, udp = await loop.create_datagram_endpoint(
            lambda: UdpProtocol(handler, cache, opts.amplification), sock=udp_sock)
    except BaseException:
        tcp_sock.close()
        udp_sock.close()
        raise
    address = (host, tcp_sock.getsockname()[1])

    async def close() -> None:
        server.close()
        for conn in list(state.connections):
            conn._close()
        udp_transport.close()
        for task in list(udp.inflight):
            task.cancel()
        await asyncio.wait_for(server.wait_closed(), 5.0)

    return NativeServer(handler, cache, udp, state, address, [close])


async def start_native(service: NodeService, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                       options: NativeOptions | None = None,
                       ) -> tuple[tuple[str, int], Callable[[], Awaitable[None]]]:
    """The entry point ``idr.node.Node.start`` uses: ((host, port), async close)."""
    srv = await start_server(service, host, port, options)
    return srv.address, srv.close
