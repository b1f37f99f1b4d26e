"""What one client may hold of the HTTP listeners: connections, and the time a request may take.

aiohttp bounds a request's size but not the connections or the time a client holds: a
"slowloris" that trickles header bytes, or a client that never reads its answers, keeps its
connection (and the answer buffered for it) forever, and one address may open thousands. So
every HTTP(S) listener of a node accepts through a :class:`ConnectionGuard`:

* at most ``max_connections`` in all and ``max_per_source`` from one address (an IPv6 client's
  /64); a connection beyond either is closed at once, before TLS or HTTP is spoken;
* a request must be received and its answer started within ``request_timeout`` of its first
  byte (pipelined requests each get their own), or the connection is closed;
* a client that stops reading what it is sent (the transport's buffer stays full) for
  ``write_stall_timeout`` is closed, and what was buffered for it freed;
* idle keep-alive connections close after ``keepalive_timeout`` (aiohttp's own setting) and a
  TLS handshake must finish within ``tls_handshake_timeout``.

A connection counts from the moment it is accepted: TLS is started by the guard itself
(``loop.start_tls`` on the admitted connection), not by the listener, so connections still in
their handshake — or that never send a ClientHello — count against their address like any
other, and a handshake flood from one address is refused at ``max_per_source`` while others
are served.

It wraps the protocol aiohttp's server makes for each connection (``AppRunner.server``, a public
factory) and the transport handed to it, to see when an answer is written; nothing else changes.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from idr.core.config import HttpLimits
from idr.server.throttle import source_key


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int = 2048
    max_per_source: int = 64
    request_timeout: float = 60.0
    write_stall_timeout: float = 60.0
    keepalive_timeout: float = 75.0
    tls_handshake_timeout: float = 10.0

    @classmethod
    def from_config(cls, h: HttpLimits) -> ConnectionLimits:
        return cls(
            h.max_connections,
            h.max_connections_per_source,
            h.request_timeout,
            h.write_stall_timeout,
            h.keepalive_timeout,
            h.tls_handshake_timeout,
        )


class ConnectionGuard:
    """Counts a node's HTTP connections (all its listeners share one guard)."""

    def __init__(self, limits: ConnectionLimits | None = None) -> None:
        self.limits = limits or ConnectionLimits()
        self.per_source: dict[str, int] = {}
        self.total = 0
        self.accepted = 0  # connections admitted since the start (total: open now)
        self.refused = 0
        self.timed_out = 0

    def factory(
        self, make_protocol: Callable[[], Any], tls: ssl.SSLContext | None = None
    ) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server`` (without ``ssl``) around aiohttp's
        ``runner.server``; ``tls``: the guard speaks TLS with it once a connection is admitted."""
        return lambda: _Guarded(self, make_protocol, tls)

    def _admit(self, key: str) -> bool:
        n = self.per_source.get(key, 0)
        if self.total >= self.limits.max_connections or n >= self.limits.max_per_source:
            self.refused += 1
            return False
        self.per_source[key] = n + 1
        self.total += 1
        self.accepted += 1
        return True

    def _release(self, key: str) -> None:
        self.total -= 1
        n = self.per_source.get(key, 1) - 1
        if n > 0:
            self.per_source[key] = n
        else:
            self.per_source.pop(key, None)


class _Watched:
    """The transport as aiohttp's handler sees it: the real one, with writes noticed."""

    __slots__ = ("_on_write", "_transport")

    def __init__(self, transport: asyncio.Transport, on_write: Callable[[], None]) -> None:
        self._transport = transport
        self._on_write = on_write

    def write(self, data: Any) -> None:
        self._on_write()
        self._transport.write(data)

    def writelines(self, data: Any) -> None:
        self._on_write()
        self._transport.writelines(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Guarded(asyncio.Protocol):
    """One connection: admitted or closed, its request and write-stall deadlines."""

    def __init__(
        self, guard: ConnectionGuard, make_protocol: Callable[[], Any], tls: ssl.SSLContext | None = None
    ) -> None:
        self._guard = guard
        self._make = make_protocol
        self._tls = tls
        self._handshake: asyncio.Task[None] | None = None
        self._pre_tls: list[bytes] | None = None
        # What TLS decrypted before start_tls returned (the first request may come with the
        # handshake's last flight): handed on once aiohttp's protocol is made.
        self._early: list[bytes] = []
        self._early_eof = False
        self._inner: Any = None
        self._key: str | None = None
        self._transport: asyncio.Transport | None = None
        self._request_timer: asyncio.TimerHandle | None = None
        self._stall_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses, only alike)
        transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        key = source_key(peer[0] if isinstance(peer, tuple) and peer else None)
        if not self._guard._admit(key):
            transport.abort()
            return
        self._key, self._transport = key, transport
        if self._tls is None:
            self._serve(transport)
            return
        transport.pause_reading()  # start_tls takes the connection from here, ClientHello included
        self._pre_tls = []  # …but uvloop may have read some of it already: kept for TLS
        self._handshake = asyncio.get_running_loop().create_task(self._start_tls(transport, self._tls))

    async def _start_tls(self, transport: asyncio.Transport, tls: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        starting = loop.create_task(
            loop.start_tls(
                transport,
                self,
                tls,
                server_side=True,
                ssl_handshake_timeout=self._guard.limits.tls_handshake_timeout,
            )
        )
        try:
            # start_tls's first step puts its TLS protocol on the connection (its handshake begins
            # on the next turn): what was read before that is the handshake's, handed to it now.
            for _ in range(8):
                await asyncio.sleep(0)
                if transport.get_protocol() is not self or starting.done():
                    break
            early, self._pre_tls = b"".join(self._pre_tls or ()), None
            tls_protocol = transport.get_protocol()
            if early and tls_protocol is not self:
                _feed(tls_protocol, early)
            secure = await starting
        except BaseException as e:  # a failed or timed-out handshake, a peer gone, shutdown
            transport.abort()
            self._forget()
            if not isinstance(e, Exception):
                raise
            return
        if secure is None or self._key is None:  # the connection went while we were waiting
            return
        self._transport = secure
        self._serve(secure)

    def _serve(self, transport: asyncio.Transport) -> None:
        self._inner = self._make()
        self._inner.connection_made(_Watched(transport, self._answered))
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)
        if self._early_eof and self._inner is not None:
            self._inner.eof_received()

    def data_received(self, data: bytes) -> None:
        if self._pre_tls is not None:  # TLS bytes read before start_tls took the connection
            self._pre_tls.append(data)
            return
        if self._inner is None:
            if self._key is not None:  # admitted, its TLS just up: aiohttp's protocol comes next
                self._early.append(data)
            return
        if self._request_timer is None:
            loop = asyncio.get_running_loop()
            self._request_timer = loop.call_later(self._guard.limits.request_timeout, self._expire)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._inner is None:
            self._early_eof = True
            return None
        return self._inner.eof_received()  # type: ignore[no-any-return]

    def pause_writing(self) -> None:
        if self._inner is None:
            return
        if self._stall_timer is None:
            loop = asyncio.get_running_loop()
            self._stall_timer = loop.call_later(self._guard.limits.write_stall_timeout, self._expire)
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def _forget(self) -> None:
        """The connection is gone (or never got past its handshake): give its place back."""
        for timer in (self._request_timer, self._stall_timer):
            if timer is not None:
                timer.cancel()
        self._request_timer = self._stall_timer = None
        if self._key is not None:
            self._guard._release(self._key)
            self._key = None

    def _answered(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _expire(self) -> None:
        self._guard.timed_out += 1
        if self._transport is not None:
            self._transport.abort()


def _feed(protocol: Any, data: bytes) -> None:
    """Hand ``data`` to a TLS protocol as its transport would: asyncio's and uvloop's are
    buffered protocols (``get_buffer`` / ``buffer_updated``; uvloop's without the base class)."""
    view = memoryview(data)
    while view:
        buf = memoryview(protocol.get_buffer(len(view)))
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        protocol.buffer_updated(n)
        view = view[n:]


__all__ = ["ConnectionGuard", "ConnectionLimits"]
