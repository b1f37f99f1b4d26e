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
  TLS handshake must finish within ``tls_handshake_timeout`` (asyncio's).

It wraps the protocol aiohttp's server makes for each connection (``AppRunner.server``, a public
factory) and the transport handed to it, to see when an answer is written; nothing else changes.
"""

from __future__ import annotations

import asyncio
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
        self.refused = 0
        self.timed_out = 0

    def factory(self, make_protocol: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server`` around aiohttp's ``runner.server``."""
        return lambda: _Guarded(self, make_protocol)

    def _admit(self, key: str) -> bool:
        n = self.per_source.get(key, 0)
        if self.total >= self.limits.max_connections or n >= self.limits.max_per_source:
            self.refused += 1
            return False
        self.per_source[key] = n + 1
        self.total += 1
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

    def __init__(self, guard: ConnectionGuard, make_protocol: Callable[[], Any]) -> None:
        self._guard = guard
        self._make = make_protocol
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
        self._inner = self._make()
        self._inner.connection_made(_Watched(transport, self._answered))

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if self._request_timer is None:
            loop = asyncio.get_running_loop()
            self._request_timer = loop.call_later(self._guard.limits.request_timeout, self._expire)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

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
        for timer in (self._request_timer, self._stall_timer):
            if timer is not None:
                timer.cancel()
        self._request_timer = self._stall_timer = None
        if self._key is not None:
            self._guard._release(self._key)
            self._key = None
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def _answered(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _expire(self) -> None:
        self._guard.timed_out += 1
        if self._transport is not None:
            self._transport.abort()


__all__ = ["ConnectionGuard", "ConnectionLimits"]
