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
  TLS handshake must finish within ``tls_handshake_timeout``;
* TLS handshakes are paced per address: a burst of ``tls_handshake_burst``, then
  ``tls_handshakes_per_second``. A server handshake costs ~1–2 ms of CPU (more than the client's),
  on the loop that also answers UDP, so one address opening and closing connections in a loop
  could otherwise take the whole core; a connection beyond the pace waits (paused, its place
  held) for its turn, and one whose turn is further off than ``tls_handshake_timeout`` is closed
  at once. A client that keeps its connections alive never meets the pace.

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
import time
from collections import OrderedDict
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
    tls_handshakes_per_second: float = 100.0  # per address, after the burst (0: not paced)
    tls_handshake_burst: int = 200

    @classmethod
    def from_config(cls, h: HttpLimits) -> ConnectionLimits:
        return cls(
            h.max_connections,
            h.max_connections_per_source,
            h.request_timeout,
            h.write_stall_timeout,
            h.keepalive_timeout,
            h.tls_handshake_timeout,
            h.tls_handshakes_per_second,
            h.tls_handshake_burst,
        )


class HandshakePace:
    """When each address's next TLS handshake may start: a burst, then a steady rate (the
    generic cell rate algorithm — one "theoretical arrival time" per address, no timers).

    ``clock`` is injected so tests move time; at most ``capacity`` addresses are remembered
    (least recently seen forgotten first: forgetting one only gives it a fresh burst)."""

    def __init__(
        self, rate: float, burst: int, capacity: int = 16384, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.tolerance = max(burst - 1, 0) * self.interval
        self.capacity = capacity
        self.clock = clock
        self._due: OrderedDict[str, float] = OrderedDict()

    def wait(self, key: str, most: float) -> float | None:
        """Seconds until ``key``'s handshake may start (its turn taken), or None — nothing
        taken — when that is more than ``most``."""
        if not self.interval:
            return 0.0
        now = self.clock()
        due = max(self._due.get(key, now), now)
        start = max(now, due - self.tolerance)
        if start - now > most:
            return None
        self._due[key] = due + self.interval
        self._due.move_to_end(key)
        if len(self._due) > self.capacity:
            self._due.popitem(last=False)
        return start - now


class ConnectionGuard:
    """Counts a node's HTTP connections (all its listeners share one guard)."""

    def __init__(self, limits: ConnectionLimits | None = None) -> None:
        self.limits = limits or ConnectionLimits()
        self.per_source: dict[str, int] = {}
        self.total = 0
        self.accepted = 0  # connections admitted since the start (total: open now)
        self.refused = 0
        self.timed_out = 0
        lim = self.limits
        self.pace = HandshakePace(lim.tls_handshakes_per_second, lim.tls_handshake_burst)
        self.handshakes_paced = 0  # TLS handshakes that waited for their address's turn
        self.handshakes_refused = 0  # connections closed: their turn was beyond the handshake timeout

    def factory(
        self, make_protocol: Callable[[], Any], tls: ssl.SSLContext | None = None
    ) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server`` (without ``ssl``) around aiohttp's
        ``runner.server``; ``tls``: the guard speaks TLS with it once a connection is admitted."""
        return lambda: _Guarded(self, make_protocol, tls)

    def metrics(self) -> dict[str, float]:
        """Gauges for ``/metrics``."""
        return {
            "idr_http_connections_open": float(self.total),
            "idr_http_connections_accepted": float(self.accepted),
            "idr_http_connections_refused": float(self.refused),
            "idr_http_connections_timed_out": float(self.timed_out),
            "idr_tls_handshakes_paced": float(self.handshakes_paced),
            "idr_tls_handshakes_refused": float(self.handshakes_refused),
        }

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
        self._turn: asyncio.TimerHandle | None = None  # a paced handshake waiting to start
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
        wait = self._guard.pace.wait(key, self._guard.limits.tls_handshake_timeout)
        if wait is None:
            self._guard.handshakes_refused += 1
            transport.abort()
            self._forget()
            return
        transport.pause_reading()  # start_tls takes the connection from here, ClientHello included
        self._pre_tls = []  # …but uvloop may have read some of it already: kept for TLS
        if wait > 0:
            self._guard.handshakes_paced += 1
            loop = asyncio.get_running_loop()
            self._turn = loop.call_later(wait, self._begin_tls, transport, self._tls)
        else:
            self._begin_tls(transport, self._tls)

    def _begin_tls(self, transport: asyncio.Transport, tls: ssl.SSLContext) -> None:
        self._turn = None
        if self._key is None:  # gone while it waited for its turn
            return
        self._handshake = asyncio.get_running_loop().create_task(self._start_tls(transport, tls))

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
        for timer in (self._request_timer, self._stall_timer, self._turn):
            if timer is not None:
                timer.cancel()
        self._request_timer = self._stall_timer = self._turn = None
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


__all__ = ["ConnectionGuard", "ConnectionLimits", "HandshakePace"]
