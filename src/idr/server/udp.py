"""The UDP front-end (port 2641).

Hot path: a resolution whose answer is in :class:`~idr.server.hotcache.AnswerCache` is answered
in ``datagram_received`` with one dict lookup, one copy with two fields written in place, and one
``sendto``; nothing is decoded. Everything else goes to :class:`~idr.server.handler.NativeHandler`.
The socket is read in bursts per wake-up of the loop (:class:`DrainedSocket`, measured in
``idr/server/native.py``'s notes), and the hot path's answers go out together at each burst's end.

Large answers go as RFC 3652 multi-datagram messages, exactly as Handle.Net's server sends them
(``codec.udp.fragment``: 512-byte datagrams, each with its own envelope, same request id,
sequence numbers 0…n-1, MessageLength = the whole message, TC not set); hdllib
(``HandleResolver.sendHdlUdpRequest``) and idr's client reassemble them. Multi-datagram requests
(TC set by the client) are reassembled, bounded (``codec.udp.Reassembler``).

Amplification defence (:class:`Amplification`). A UDP answer goes to an address nobody has
proven to own, so a large answer to a small request is a lever for reflection attacks. As DNS
servers do (response rate limiting, RRL), each source network (/24 for IPv4, /56 for IPv6) has a
byte budget for answers larger than the request could justify:

- an answer (all its datagrams) of at most max(``floor``, ``factor`` × request bytes) — one
  classic 512-byte datagram, or 3× the request (QUIC's pre-validation limit, RFC 9000 §8) — is
  sent, unmetered;
- a larger one is sent whole while the source network's budget lasts: ``rate`` bytes/s refilled,
  up to ``burst`` (defaults 64 KiB/s, 256 KiB: a 50 × 1 KB record is ~55 KB);
- past the budget, answers are dropped, and every ``slip``-th one is replaced by a 48-byte
  header-only copy with TC set (BIND's RRL "slip"): no bigger than the request, and the clients
  that act on it (idr's own; hdllib, whose decoder fails on the empty body and moves on to its
  next interface) go to TCP, where the handshake proves their address. A client that ignores it
  retries, and its retries fall into the next second's budget.

Answers to a completed challenge are exempt (the client received our nonce at its address).
The table of budgets is bounded (``max_sources``, LRU). ``truncate=True`` restores the former
DNS-style rule instead (any answer over the free size becomes the TC header, never fragments):
strict, but hdllib then fails UDP-only resolution of any larger record. ``factor=None`` turns
the defence off, as Handle.Net's server runs. See docs/security.md for the trade-off.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from fcntl import ioctl
from termios import FIONREAD
from time import perf_counter_ns
from typing import Any, cast

from idr.codec import peek
from idr.codec.envelope import ENVELOPE_SIZE, HEADER_SIZE, EnvFlag
from idr.codec.udp import MAX_UDP_PACKET, Reassembler, fragment, tc_header, wire_size
from idr.codec.wire import ProtocolError
from idr.server.accesslog import AccessLog, HotRecord
from idr.server.handler import NativeHandler, Outcome
from idr.server.hotcache import AnswerCache, cache_key, put4
from idr.server.limits import RateTable, source_network
from idr.server.tally import Tally

try:  # built by ``pip install`` (a C compiler): one system call per burst each way
    from idr.server._mmsg import recv_burst, send_burst

    BURSTS = True
except ImportError:  # pragma: no cover - a build without the extension: one call a datagram
    BURSTS = False

log = logging.getLogger("idr.native.udp")

MIN_REQUEST = ENVELOPE_SIZE + HEADER_SIZE


def _no_record(_: HotRecord) -> None:
    """The logged twin's record when there is no access log (the twin is then never used)."""


MAX_INFLIGHT = 1024  # concurrent slow (write/auth) UDP requests; beyond: dropped, the client retries


@dataclass(frozen=True, slots=True)
class Amplification:
    """The UDP amplification defence (see module docstring)."""

    factor: float | None = 3.0  # None: no limit at all (Handle.Net's behaviour)
    floor: int = MAX_UDP_PACKET  # answers up to this many bytes are never metered
    rate: int = 64 * 1024  # bytes/s of larger answers per source network
    burst: int = 256 * 1024
    slip: int = 2  # past the budget, every slip-th answer becomes a TC header (0: never)
    truncate: bool = False  # legacy: TC header instead of any answer over the free size
    v4_prefix: int = 24
    v6_prefix: int = 56
    max_sources: int = 16384  # budgets kept (LRU); ~200 bytes each

    def free(self, answer_bytes: int, request_bytes: int) -> bool:
        """Small enough to send to any address without spending the source's budget."""
        return self.factor is None or answer_bytes <= max(self.floor, self.factor * request_bytes)


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(
        self,
        handler: NativeHandler,
        cache: AnswerCache,
        amp: Amplification,
        tally: Tally | None = None,
        access: AccessLog | None = None,
    ) -> None:
        self.handler = handler
        self.cache = cache
        self.amp = amp
        self.budget = RateTable(amp.rate, amp.burst, amp.max_sources)
        self.over_budget = 0  # large answers not sent whole because the budget was spent
        self.tally = tally or Tally()  # every answer counted (idr.server.tally)
        self._hot = self.tally.hot
        self.tally.samplers.append(self.sample_next)
        self.reassembler = Reassembler(max_pending=1024, max_bytes=4 * 1024 * 1024, timeout=5.0)
        self.transport: asyncio.DatagramTransport | None = None
        self.inflight: set[asyncio.Task[None]] = set()
        # A cached answer this small always passes the amplification rule.
        self.fast_limit = MAX_UDP_PACKET if amp.factor is None else min(MAX_UDP_PACKET, amp.floor)
        self.slow = 0
        self._get = cache.data.get  # the dict object lives as long as the cache (clear() empties it)
        self._miss = cache.miss
        self._later: Callable[[tuple[Any, Any]], object] = self._send_item  # see connection_made
        self.access = access
        # the logged twin's record: the access log buffer's own append (no Python call)
        self._record: Callable[[HotRecord], object] = access.record if access is not None else _no_record
        self._plain()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        # answers settled in memory are sent at the end of the burst when the socket is ours
        # (DrainedSocket.send_later: a list's append, no Python call per answer)
        self._later = getattr(transport, "send_later", None) or self._send_item

    def _send_item(self, item: tuple[Any, Any]) -> None:
        if self.transport is not None:
            self.transport.sendto(*item)

    @property
    def hits(self) -> int:
        """Answers from memory (pre-encoded and not-found templates)."""
        return sum(self._hot)

    def _plain(self) -> None:
        """Receive with the class's hot path, or its logged twin when ``access`` is set (an
        instance attribute: unlogged, not even a check is added to the hot path)."""
        if self.access is None:
            self.__dict__.pop("datagram_received", None)
        else:
            self.__dict__["datagram_received"] = self._received_logged

    def sample_next(self) -> None:
        """Time the next datagram (the tally's sampler, ~20/s). The instance attribute shadows
        the method for one call, so the hot path itself carries no test for it."""
        self.__dict__["datagram_received"] = self._timed

    def datagram_received(self, data: bytes, addr: Any) -> None:
        # ---- hot path: no decoding, one key, one lookup, one copy patched in place, one send
        answer = self._get(data[:8] + data[12:36] + data[40:])
        if answer is not None and len(answer) <= self.fast_limit:
            out = bytearray(answer)
            put4(out, 8, data[8:12])
            put4(out, 36, data[36:40])
            self._later((out, addr))
            self._hot[answer[27]] += 1  # counted by response code (its low byte: hotcache codes)
            return
        if len(data) < ENVELOPE_SIZE:
            return  # not a Handle message; silence is the only safe answer to garbage
        # ---- a plain resolution settled by memory or one store row: not found, or spliced
        # (not for an answer already known to be too large to send freely: the slow path's)
        if answer is None:
            ready = self._miss(data, self.fast_limit)  # to send as it is: this request's id in place
            if ready is not None:
                self._later((ready, addr))
                self._hot[ready[27]] += 1  # not found or spliced: both hotcache codes
                return
        self._slow(data, addr)

    def _received_logged(self, data: bytes, addr: Any) -> None:
        """``datagram_received`` with an access-log record per answer (``access`` set): the
        answer's five references appended to the log's buffer (``accesslog.HotRecord``)."""
        t0 = perf_counter_ns()
        answer = self._get(data[:8] + data[12:36] + data[40:])
        if answer is not None and len(answer) <= self.fast_limit:
            out = bytearray(answer)
            put4(out, 8, data[8:12])
            put4(out, 36, data[36:40])
            self._later((out, addr))
            self._hot[answer[27]] += 1
            self._record((t0, perf_counter_ns(), addr, data, answer))
            return
        if len(data) < ENVELOPE_SIZE:
            return
        if answer is None:
            ready = self._miss(data, self.fast_limit)  # as the unlogged path: already patched
            if ready is not None:
                self._later((ready, addr))
                self._hot[ready[27]] += 1
                self._record((t0, perf_counter_ns(), addr, data, ready))
                return
        self._slow(data, addr, t0)

    def _timed(self, data: bytes, addr: Any) -> None:
        """One datagram with its hot-path latency observed (the slow path times itself)."""
        self._plain()
        before = self.hits
        t0 = time.perf_counter()
        self.datagram_received(data, addr)
        if self.hits != before:
            self.tally.observe(time.perf_counter() - t0)

    def _slow(self, data: bytes, addr: Any, arrived: int = 0) -> None:
        t0 = time.perf_counter()
        self.slow += 1
        whole = True
        request = data
        if data[2] & EnvFlag.TC:
            try:
                full = self.reassembler.feed(addr, data, time.monotonic(), addr[0])
            except ProtocolError:
                full = data  # let the decoder produce the precise protocol error
            if full is None:
                return
            request, whole = full, False
        generation = self.cache.generation
        result = self.handler.handle(request, addr[0], udp=True, whole=whole)
        if isinstance(result, Outcome):
            self._send(result, request, addr, generation, whole, t0, arrived)
        else:
            self._spawn(result, request, addr, generation, t0, arrived)

    def _spawn(
        self,
        coro: Coroutine[Any, Any, Outcome],
        request: bytes,
        addr: Any,
        generation: int,
        t0: float,
        arrived: int,
    ) -> None:
        if len(self.inflight) >= MAX_INFLIGHT:
            coro.close()
            return

        async def run() -> None:
            try:
                out = await coro
            except Exception:
                log.exception(
                    "native UDP request failed",
                    extra={"client": str(addr[0]), "interface": "udp", "operation": peek.opcode(request),
                           "handle": peek.handle(request)},
                )  # fmt: skip
                return
            self._send(out, request, addr, generation, False, t0, arrived)

        task = asyncio.get_running_loop().create_task(run())
        self.inflight.add(task)
        task.add_done_callback(self.inflight.discard)
        task.add_done_callback(lambda _t: coro.close())  # cancelled unstarted (a stop): closed

    def _send(
        self,
        out: Outcome,
        request: bytes,
        addr: Any,
        generation: int,
        whole: bool,
        t0: float,
        arrived: int = 0,
    ) -> None:
        """Send the answer. ``t0``: the slow path's start (perf_counter, for the tally);
        ``arrived``: ns, set when the answer is logged."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        amp = self.amp
        if out.messages:
            self.tally.answered_message(out.messages[0], time.perf_counter() - t0)
        sent = 0
        for message in out.messages:
            size = wire_size(message)
            if out.authenticated or amp.free(size, len(request)):
                self._emit(transport, message, addr)
                sent += size
            elif amp.truncate:
                header = tc_header(message)
                transport.sendto(header, addr)
                sent += len(header)
            elif self.budget.take(self._network(addr), size, time.monotonic()):
                self._emit(transport, message, addr)
                sent += size
            else:
                self.over_budget += 1
                if amp.slip and self.over_budget % amp.slip == 0:
                    header = tc_header(message)
                    transport.sendto(header, addr)
                    sent += len(header)
        if arrived and self.access is not None:
            self.access.native("udp", arrived, addr, request, out.messages[0] if out.messages else b"", sent)
        if whole and out.handle_key is not None and len(out.messages) == 1 and len(request) >= MIN_REQUEST:
            answer = out.messages[0]
            hk = out.handle_key
            if out.exists is None or not self.cache.learn(request, answer, hk, out.exists, generation):
                self.cache.put(cache_key(request), answer, out.handle_key, generation)
            if out.exists:
                self.cache.learn_splice(request, answer, hk)
                self.cache.note_shape(request)

    @staticmethod
    def _emit(transport: asyncio.DatagramTransport, message: bytes, addr: Any) -> None:
        """One datagram, or the RFC 3652 multi-datagram message Handle.Net sends."""
        if len(message) <= MAX_UDP_PACKET:
            transport.sendto(message, addr)
        else:
            for datagram in fragment(message):
                transport.sendto(datagram, addr)

    def _network(self, addr: Any) -> str:
        host = addr[0] if isinstance(addr, tuple) else str(addr)
        return source_network(host, self.amp.v4_prefix, self.amp.v6_prefix)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable etc.: nothing to do
        log.debug("UDP error: %s", exc)


DRAIN_BURST = 64  # datagrams read per wake-up at most, then the loop's other work gets a turn
RECV_SIZE = 65536  # any datagram whole (the largest UDP payload is 65,507 bytes)
MAX_QUEUED = 256  # slow-path datagrams held while the socket's send buffer is full; then dropped
_NONE_WAITING = bytes(4)  # FIONREAD's answer when no datagram is waiting


class DrainedSocket(asyncio.DatagramTransport):
    """The UDP socket read in bursts: one wake-up of the loop (``add_reader``) reads every
    datagram waiting (at most ``DRAIN_BURST``) — with one ``recvmmsg`` on an IPv4 socket (the
    ``_mmsg`` extension), else ``recvfrom`` until the socket is empty —, each handed to the
    protocol at once, instead of one callback through the loop's transport per datagram. A
    burst is what a busy server sees (16 requests in flight from one client are often all
    waiting when it wakes), so the wake-ups, and the loop's bookkeeping per datagram, are
    shared. Measured on the minimal responder of bench/native_resolve.py (the same answers,
    only the reading changed) and on idr: see ``idr/server/native.py``'s notes.

    Answers settled in memory (``send_later``) are sent at the end of the burst, in order (before
    any other answer the burst sends), with one ``sendmmsg`` (else a ``sendto`` each); when the
    send buffer is full such an answer is dropped, as a UDP server must (the client retries).
    Sent one by one as each was ready, an answer to a client that is waiting for it wakes it up
    — on loopback the sender's CPU runs that wake-up (``sendmsg`` was a third of a cold answer's
    CPU) — and a client faster than the server is waiting for nearly every answer; sent
    together, the first wakes it and the rest find it running (CPU per answer 0.80× warm and 0.72× cold,
    ``--before`` in one run, 100,000 handles, load ~7; the first answer of a burst waits for
    the burst: p50 latency went down, 232 → 166 µs, as the server keeps up better).
    Everything else (``sendto``: the slow path, multi-datagram answers) waits in a bounded queue
    for the socket to be writable, in order."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol: asyncio.DatagramProtocol,
        *,
        bursts: bool | None = None,
    ) -> None:
        super().__init__()
        self._loop = loop
        self._sock = sock
        self._protocol = protocol
        self._queue: deque[tuple[bytes, Any]] = deque()
        self._closing = False
        # Received into one buffer kept for the socket's life, each datagram copied out at its
        # size: ``recvfrom(RECV_SIZE)`` allocates 64 KiB per datagram and shrinks it, and
        # glibc's malloc, free and consolidation of those blocks were ~1.5% of a warm answer's
        # samples (perf, 100,000 handles)
        self._view = memoryview(bytearray(RECV_SIZE))
        self._later: list[tuple[Any, Any]] = []  # answers of this burst, sent at its end
        self.send_later = self._later.append  # (answer, address) to send at the burst's end
        self.dropped = 0  # answers not sent: the send buffer was full
        # A burst that has read as many datagrams as the last one that ended on an empty socket
        # (clients keeping a window of requests in flight send bursts of that size: 15.65
        # datagrams on average under hdlperf's 16) asks the kernel whether another is waiting
        # (``FIONREAD``: the next datagram's size, 0 for none) instead of a ``recvfrom`` that
        # finds the socket empty — a system call and a ``BlockingIOError`` built and caught,
        # 1.1-1.2 µs against 0.42-0.46 µs (``timeit``). A datagram of size 0 left waiting is
        # read at the loop's next turn (the reader is level-triggered).
        self._expect = DRAIN_BURST  # no burst seen yet
        self._fd = sock.fileno()
        self._waiting = bytearray(4)  # FIONREAD's answer (an int) written here
        # IPv4: a burst read with one ``recvmmsg`` and its answers sent with one ``sendmmsg``
        # (``bursts``: False for one call per datagram, as without the extension)
        self.bursts = BURSTS and sock.family == socket.AF_INET and bursts is not False
        protocol.connection_made(self)
        loop.add_reader(sock.fileno(), self._drain_bursts if self.bursts else self._drain)

    def _drain_bursts(self) -> None:
        """``_drain`` in one system call: every datagram waiting (at most ``DRAIN_BURST``)."""
        protocol = self._protocol
        try:
            try:
                burst = recv_burst(self._fd, DRAIN_BURST)
            except OSError as exc:  # an ICMP error reported on the socket: nothing to answer
                protocol.error_received(exc)
                return
            for data, addr in burst:
                try:
                    protocol.datagram_received(data, addr)  # (looked up each time: it may be swapped)
                except OSError as exc:  # e.g. an address the kernel will not send to
                    protocol.error_received(exc)
                if self._closing:
                    return
        finally:
            if self._later:
                self._send_burst()

    def _drain(self) -> None:
        recv_into, view = self._sock.recvfrom_into, self._view
        protocol = self._protocol
        expect, fd, waiting = self._expect, self._fd, self._waiting
        try:
            for i in range(1, DRAIN_BURST + 1):
                try:
                    n, addr = recv_into(view)
                except (BlockingIOError, InterruptedError):
                    if i > 1:
                        self._expect = i - 1  # this burst emptied the socket: its size
                    return
                except OSError as exc:  # an ICMP error reported on the socket: nothing to answer
                    protocol.error_received(exc)
                    continue
                data = bytes(view[:n])
                try:
                    protocol.datagram_received(data, addr)  # (looked up each time: it may be swapped)
                except OSError as exc:  # e.g. an address the kernel will not send to
                    protocol.error_received(exc)
                if i == expect:  # as many as the last burst that emptied the socket
                    if self._closing:
                        return
                    ioctl(fd, FIONREAD, waiting, True)
                    if waiting == _NONE_WAITING:
                        return  # and it is empty: no recvfrom to find that out
        finally:
            if self._later:
                self._send_burst()

    def _send_burst(self) -> None:
        """Send the burst's answers in order; the list is emptied whatever happens, so an answer
        that is not bytes-like (a bug upstream: its TypeError is raised) cannot hold back the
        answers of every later burst."""
        later = self._later
        try:
            if not self.bursts:
                for data, addr in later:
                    self._send_one(data, addr)
                return
            fd, i, n = self._fd, 0, len(later)
            while i < n:
                try:
                    i += send_burst(fd, later, i)  # all of them, or up to the one that fails
                except ValueError:  # not a numeric IPv4 (host, port): the socket's own sendto
                    self._send_one(*later[i])
                    i += 1
                except (BlockingIOError, InterruptedError):
                    self.dropped += 1
                    i += 1
                except OSError as exc:
                    self._protocol.error_received(exc)
                    i += 1
        finally:
            later.clear()

    def _send_one(self, data: Any, addr: Any) -> None:
        try:
            self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self.dropped += 1  # the send buffer is full: dropped, as a UDP server must
        except OSError as exc:  # e.g. an address the kernel will not send to
            self._protocol.error_received(exc)

    def sendto(self, data: Any, addr: Any = None) -> None:
        if self._closing:
            return
        if self._later:  # answers to earlier datagrams go first
            self._send_burst()
        if not self._queue:
            try:
                self._sock.sendto(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                self._loop.add_writer(self._sock.fileno(), self._flush)
            except OSError as exc:
                self._protocol.error_received(exc)
                return
        if len(self._queue) < MAX_QUEUED:
            self._queue.append((bytes(data), addr))
        else:
            self.dropped += 1

    def _flush(self) -> None:
        while self._queue:
            data, addr = self._queue[0]
            try:
                self._sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._protocol.error_received(exc)
            self._queue.popleft()
        self._loop.remove_writer(self._sock.fileno())

    def get_write_buffer_size(self) -> int:
        return sum(len(d) for d, _ in self._queue)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self._sock
        if name == "sockname":
            return self._sock.getsockname()
        return default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._later.clear()
        fd = self._sock.fileno()
        self._loop.remove_reader(fd)
        if self._queue:
            self._loop.remove_writer(fd)
            self._queue.clear()
        self._sock.close()
        self._loop.call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()
