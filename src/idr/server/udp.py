"""The UDP front-end (port 2641).

Hot path: a resolution whose answer is in :class:`~idr.server.hotcache.AnswerCache` is answered
in ``datagram_received`` with one dict lookup, one copy with two slice assignments, and one
``sendto``; nothing is decoded. Everything else goes to :class:`~idr.server.handler.NativeHandler`.

Large answers are split into 512-byte datagrams exactly as Handle.Net does
(``codec.udp.fragment``); multi-datagram requests (TC set by the client) are reassembled, bounded
(``codec.udp.Reassembler``).

Anti-amplification rule. A UDP answer goes to an address nobody has proven to own, so it must not
be a lever for reflection attacks. An answer (all its datagrams together) is sent whole when
    answer_bytes ≤ max(floor, factor × request_bytes)      (defaults: floor 512, factor 3)
i.e. anything that fits one classic 512-byte datagram (Handle.Net's and DNS's UDP size), or up to
3× the request (QUIC's pre-validation limit, RFC 9000 §8). Otherwise the client gets, instead, a
header-only copy of the answer — same opcode, response code and flags, empty body, TC set in the
envelope — the DNS convention (RFC 1035 §4.2.1, RFC 7766) that tells it to ask again over TCP,
where the handshake proves its address. Exempt: the answer to a completed challenge (the client
received our nonce at its address). ``factor=None`` turns the rule off and reproduces the
reference server, which fragments any answer. Handle.Net's own UDP interface has no such limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, cast

from idr.codec.envelope import ENVELOPE_SIZE, HEADER_SIZE, EnvFlag
from idr.codec.udp import MAX_UDP_PACKET, Reassembler, fragment
from idr.codec.wire import ProtocolError
from idr.server.handler import NativeHandler, Outcome
from idr.server.hotcache import AnswerCache, cache_key, patch

log = logging.getLogger("idr.native.udp")

MIN_REQUEST = ENVELOPE_SIZE + HEADER_SIZE
MAX_INFLIGHT = 1024  # concurrent slow (write/auth) UDP requests; beyond: dropped, the client retries


@dataclass(frozen=True, slots=True)
class Amplification:
    factor: float | None = 3.0  # None: no limit (reference behaviour)
    floor: int = MAX_UDP_PACKET

    def allows(self, answer_bytes: int, request_bytes: int) -> bool:
        return self.factor is None or answer_bytes <= max(self.floor, self.factor * request_bytes)


def truncated(message: bytes) -> bytes:
    """Envelope + header of ``message`` with an empty body and TC set: "retry over TCP"."""
    out = bytearray(message[: ENVELOPE_SIZE + HEADER_SIZE] + b"\0\0\0\0")
    out[2] |= EnvFlag.TC
    out[16:20] = (HEADER_SIZE + 4).to_bytes(4, "big")
    out[40:44] = b"\0\0\0\0"
    return bytes(out)


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, handler: NativeHandler, cache: AnswerCache, amp: Amplification) -> None:
        self.handler = handler
        self.cache = cache
        self.amp = amp
        self.reassembler = Reassembler(max_pending=1024, max_bytes=4 * 1024 * 1024, timeout=5.0)
        self.transport: asyncio.DatagramTransport | None = None
        self.inflight: set[asyncio.Task[None]] = set()
        # A cached answer this small always passes the amplification rule.
        self.fast_limit = MAX_UDP_PACKET if amp.factor is None else min(MAX_UDP_PACKET, amp.floor)
        self.slow = 0
        self.hits = 0
        self._get = cache.data.get  # the dict object lives as long as the cache (clear() empties it)
        self._sendto: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self._sendto = self.transport.sendto

    def datagram_received(self, data: bytes, addr: Any) -> None:
        # ---- hot path: no decoding, one key, one lookup, one copy with two patches, one send
        answer = self._get(data[:8] + data[12:36] + data[40:])
        if answer is not None and len(answer) <= self.fast_limit:
            out = bytearray(answer)
            out[8:12] = data[8:12]
            out[36:40] = data[36:40]
            self._sendto(out, addr)
            self.hits += 1
            return
        # ---- warm cache: a plain resolution of a handle the store does not hold
        if len(data) < ENVELOPE_SIZE:
            return  # not a Handle message; silence is the only safe answer to garbage
        negative = self.cache.not_found(data)
        if negative is not None:
            self._sendto(patch(negative, data), addr)
            return
        # ---- slow path
        self.slow += 1
        whole = True
        request = data
        if data[2] & EnvFlag.TC:
            try:
                full = self.reassembler.feed(addr, data, time.monotonic())
            except ProtocolError:
                full = data  # let the decoder produce the precise protocol error
            if full is None:
                return
            request, whole = full, False
        generation = self.cache.generation
        result = self.handler.handle(request, addr[0], udp=True, whole=whole)
        if isinstance(result, Outcome):
            self._send(result, request, addr, generation, whole)
        else:
            self._spawn(result, request, addr, generation)

    def _spawn(self, coro: Coroutine[Any, Any, Outcome], request: bytes, addr: Any, generation: int) -> None:
        if len(self.inflight) >= MAX_INFLIGHT:
            coro.close()
            return

        async def run() -> None:
            try:
                out = await coro
            except Exception:
                log.exception("native UDP request failed")
                return
            self._send(out, request, addr, generation, False)

        task = asyncio.get_running_loop().create_task(run())
        self.inflight.add(task)
        task.add_done_callback(self.inflight.discard)

    def _send(self, out: Outcome, request: bytes, addr: Any, generation: int, whole: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        for message in out.messages:
            if not out.authenticated and not self.amp.allows(_wire_size(message), len(request)):
                transport.sendto(truncated(message), addr)
                continue
            if len(message) <= MAX_UDP_PACKET:
                transport.sendto(message, addr)
            else:
                for datagram in fragment(message):
                    transport.sendto(datagram, addr)
        if whole and out.handle_key is not None and len(out.messages) == 1 and len(request) >= MIN_REQUEST:
            answer = out.messages[0]
            hk = out.handle_key
            if out.exists is None or not self.cache.learn(request, answer, hk, out.exists, generation):
                self.cache.put(cache_key(request), answer, out.handle_key, generation)
            if out.exists:
                self.cache.note_shape(request)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable etc.: nothing to do
        log.debug("UDP error: %s", exc)


def _wire_size(message: bytes) -> int:
    """Bytes on the wire after fragmentation (each extra datagram repeats the envelope)."""
    payload = len(message) - ENVELOPE_SIZE
    packets = max(1, -(-payload // (MAX_UDP_PACKET - ENVELOPE_SIZE)))
    return payload + packets * ENVELOPE_SIZE
