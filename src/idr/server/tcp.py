"""The TCP front-end (port 2641): length-framed messages, many per connection.

Framing is the 20-byte envelope's MessageLength (RFC 3652 §2.2.1). Connection rules:
- Requests on one connection are answered one at a time, in order; pipelined requests wait in
  the input buffer.
- Memory per connection is bounded both ways. Input: reading pauses while more than one maximal
  message (262 164 bytes) is buffered. Output: the transport's write buffer has a high-water mark
  (``write_high``, default 64 KiB); past it asyncio calls ``pause_writing`` and we stop answering
  (and reading) until the client has taken the bytes (``resume_writing``). A client that pipelines
  requests and never reads holds at most write_high + one answer + one input buffer, however
  long it keeps going; everything is freed when it leaves.
- A MessageLength over 262144 (Handle.Net ``Common.MAX_MESSAGE_LENGTH``) or an envelope that is
  not Handle 2.x gets a PROTOCOL_ERROR (when it has a request id to answer) and the connection is
  closed: the stream cannot be re-synchronised.
- Handle.Net closes after each response; so do we when the request did not set KA (keep-alive),
  named no session, no further request is already buffered, the answer was not a 402 challenge
  (whose answer comes on the same connection), and the connection holds no session. With KA, or
  once the Teleinfo SDK has logged in on it (the SDK keeps its connections and never sets KA),
  the connection stays open; its sessions end with it.
- Idle timeout (default 30 s) with no complete request; a partial message must complete within
  the same timeout. At most ``max_connections`` at once (default 1024) and at most
  ``max_per_source`` (default 64) from one client address, so one client cannot take them all;
  beyond either, a new connection is closed at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from functools import partial
from time import perf_counter_ns
from typing import Any, cast

from idr.codec import peek
from idr.codec.bodies import is_sdk_resolution
from idr.codec.envelope import ENVELOPE_SIZE, MAX_MESSAGE_LENGTH, PROTOCOL_MAJOR
from idr.model.errors import ResponseCode
from idr.server.accesslog import AccessLog
from idr.server.answers import bare_error
from idr.server.handler import NativeHandler, Outcome
from idr.server.hotcache import AnswerCache, cache_key, patch
from idr.server.tally import NOT_FOUND_LOW, Tally

log = logging.getLogger("idr.native.tcp")

MIN_REQUEST = 44
KA_BYTE = 0x02  # OpFlag.KA in the op flags' top byte (message byte 28)


def _key(data: bytes, ka: int) -> bytes:
    """``cache_key`` with the keep-alive flag cleared: over TCP, persistent clients set KA on
    every request, and the answer differs only in echoing it (patched back in on a hit)."""
    if not ka:
        return cache_key(data)
    return data[:8] + data[12:28] + bytes((data[28] ^ ka,)) + data[29:36] + data[40:]


MAX_INPUT = MAX_MESSAGE_LENGTH + ENVELOPE_SIZE  # one maximal message buffered: stop reading


class TcpLimits:
    def __init__(
        self,
        *,
        idle_timeout: float = 30.0,
        max_connections: int = 1024,
        max_per_source: int = 64,
        write_high: int = 64 * 1024,
    ) -> None:
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.max_per_source = max_per_source
        self.write_high = write_high


class TcpServerState:
    def __init__(
        self,
        handler: NativeHandler,
        cache: AnswerCache,
        limits: TcpLimits,
        tally: Tally | None = None,
        access: AccessLog | None = None,
    ) -> None:
        self.handler = handler
        self.cache = cache
        self.limits = limits
        self.tally = tally or Tally()  # every answer counted (idr.server.tally)
        self.access = access
        self.connections: set[TcpConnection] = set()
        self.per_source: dict[Any, int] = {}
        self.refused = 0  # connections closed at once (global or per-source limit)

    def admit(self, peer: Any) -> bool:
        if len(self.connections) >= self.limits.max_connections:
            return False
        n = self.per_source.get(peer, 0)
        if n >= self.limits.max_per_source:
            return False
        self.per_source[peer] = n + 1
        return True

    def release(self, peer: Any) -> None:
        n = self.per_source.get(peer, 0) - 1
        if n > 0:
            self.per_source[peer] = n
        else:
            self.per_source.pop(peer, None)

    def factory(self) -> TcpConnection:
        return TcpConnection(self)


class TcpConnection(asyncio.Protocol):
    def __init__(self, state: TcpServerState) -> None:
        self.state = state
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.peer: Any = None
        self.busy = False
        self.paused = False  # reading paused (input full, or output full)
        self.write_paused = False  # the transport's write buffer is over its high-water mark
        self.admitted = False
        self.pooled = False  # the client pools this connection (id-pointer-sdk): never closed after an answer
        self.closing = False
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass, only shaped like one.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else peer
        if not self.state.admit(self.peer):
            self.state.refused += 1
            self.transport.abort()
            self.closing = True
            return
        self.admitted = True
        self.state.connections.add(self)
        self.transport.set_write_buffer_limits(high=self.state.limits.write_high)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.state.connections.discard(self)
        if self.admitted:
            self.admitted = False
            self.state.release(self.peer)
        self.state.handler.sessions.drop_scope(self)
        if self.timer is not None:
            self.timer.cancel()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.buf = bytearray()

    def pause_writing(self) -> None:
        """The client is not reading: stop answering and reading until it does."""
        self.write_paused = True
        self._flow()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.closing and not self.busy:
            self._drain()
        self._flow()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.buf += data
        if not self.busy:
            self._drain()
        self._flow()

    def _flow(self) -> None:
        """Read only while there is room for input and the client takes our output."""
        transport = self.transport
        if transport is None or self.closing:
            return
        stop = self.write_paused or len(self.buf) > MAX_INPUT
        if stop and not self.paused:
            self.paused = True
            transport.pause_reading()
        elif not stop and self.paused:
            self.paused = False
            transport.resume_reading()

    # ------------------------------------------------------------------ framing

    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.state.limits.idle_timeout, self._idle)

    def _idle(self) -> None:
        self._close()

    def _keep(self, data: bytes) -> bool:
        """Whether the connection stays open after the answer to ``data``: the request set KA,
        more requests are waiting, a session lives on this connection, or the client is
        id-pointer-sdk, which pools its channels and reuses them without ever setting KA (a
        closed channel would leave its next request unanswered until it times out)."""
        if (len(data) > 28 and data[28] & KA_BYTE) or self.buf or self.pooled or self._holds_session():
            return True
        self.pooled = is_sdk_resolution(data)
        return self.pooled

    def _close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def _drain(self) -> None:
        """Answer every complete message in the buffer; stop at the first that needs awaiting."""
        transport = self.transport
        assert transport is not None
        cache = self.state.cache
        access = self.state.access
        tally = self.state.tally
        hot = tally.hot
        while not self.closing and not self.write_paused and len(self.buf) >= ENVELOPE_SIZE:
            length = int.from_bytes(self.buf[16:20], "big")
            if self.buf[0] != PROTOCOL_MAJOR or length > MAX_MESSAGE_LENGTH:
                head = bytes(self.buf[:48])
                err = bare_error(
                    head,
                    ResponseCode.PROTOCOL_ERROR,
                    f"Invalid message length {length}"
                    if self.buf[0] == PROTOCOL_MAJOR
                    else "not a Handle protocol 2.x message",
                )
                if err is not None:
                    transport.write(err)
                self._close()
                return
            end = ENVELOPE_SIZE + length
            if len(self.buf) < end:
                break
            data = bytes(self.buf[:end])
            del self.buf[:end]
            arrived = perf_counter_ns() if access is not None else 0  # for the access log
            self._arm()
            t0 = time.perf_counter() if tally.probe else 0.0  # a latency sample is due (~20/s)
            ka = data[28] & KA_BYTE if len(data) >= MIN_REQUEST else 0
            answer = cache.data.get(_key(data, ka))
            if answer is not None:  # hot path: pre-encoded answer
                out = patch(answer, data)
                out[28] |= ka
                transport.write(out)
                hot[answer[27]] += 1  # counted by response code (its low byte: hotcache codes)
                if t0:
                    tally.probe = False
                    tally.observe(time.perf_counter() - t0)
                if access is not None:
                    access.native("tcp", arrived, self.peer, data, answer, len(out))
                if not self._keep(data):
                    self._close()
                    return
                continue
            negative = cache.not_found(data)
            if negative is not None:  # warm cache: a handle the store does not hold
                transport.write(patch(negative, data))
                hot[NOT_FOUND_LOW] += 1
                if access is not None:
                    access.native("tcp", arrived, self.peer, data, negative, len(negative))
                if not self._keep(data):
                    self._close()
                    return
                continue
            t0 = time.perf_counter()
            generation = cache.generation
            result = self.state.handler.handle(data, self.peer, udp=False, conn=self)
            if isinstance(result, Outcome):
                if not self._reply(result, data, generation, t0, arrived):
                    return
                continue
            self.busy = True

            async def run(
                coro: Any = result,
                data: bytes = data,
                generation: int = generation,
                t0: float = t0,
                arrived: int = arrived,
            ) -> None:
                try:
                    out = await coro
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception(
                        "native TCP request failed",
                        extra={"client": str(self.peer), "interface": "tcp", "operation": peek.opcode(data),
                               "handle": peek.handle(data)},
                    )  # fmt: skip
                    self._close()
                    return
                self.busy = False
                if self._reply(out, data, generation, t0, arrived):
                    self._drain()

            self.task = asyncio.get_running_loop().create_task(run())
            # a connection closed before the task ran cancels it unstarted: the request's own
            # coroutine is then closed here, not left to the collector's "never awaited" warning
            self.task.add_done_callback(partial(_close_coroutine, result))
            return
        self._flow()

    def _reply(self, out: Outcome, data: bytes, generation: int, t0: float, arrived: int = 0) -> bool:
        """Write the answer; False when the connection is (being) closed. ``t0``: the slow
        path's start (perf_counter, for the tally); ``arrived``: ns, set when the answer is logged."""
        transport = self.transport
        if transport is None or self.closing or transport.is_closing():
            return False
        if out.messages:
            transport.write(b"".join(out.messages))
            self.state.tally.answered_message(out.messages[0], time.perf_counter() - t0)
        access = self.state.access
        if arrived and access is not None:
            first = out.messages[0] if out.messages else b""
            access.native("tcp", arrived, self.peer, data, first, sum(len(m) for m in out.messages))
        if out.handle_key is not None and len(out.messages) == 1 and len(data) >= MIN_REQUEST:
            ka = data[28] & KA_BYTE
            answer = out.messages[0]
            if ka and answer[28] & KA_BYTE:  # stored without KA: one entry serves both kinds
                answer = answer[:28] + bytes((answer[28] ^ KA_BYTE,)) + answer[29:]
            cache = self.state.cache
            hk = out.handle_key
            if out.exists is None or not cache.learn(data, out.messages[0], hk, out.exists, generation):
                cache.put(_key(data, ka), answer, out.handle_key, generation)
            if out.exists:
                cache.note_shape(data, ka)
        self._arm()
        if not out.keep_alive and not out.challenge and not self._keep(data):
            self._close()
            return False
        return True

    def _holds_session(self) -> bool:
        return self.state.handler.sessions.holds(self)


def _close_coroutine(coro: Coroutine[Any, Any, Any], _task: object) -> None:
    coro.close()  # a no-op once it ran; an unstarted one is closed without a warning
