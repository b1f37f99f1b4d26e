"""Multi-datagram UDP messages (RFC 3652 §2.3; Handle.Net ``HdlUdpRequestHandler``,
``HdlUdpPendingRequest``): a message longer than one 512-byte datagram travels as
ceil(len/492) datagrams, each a copy of the envelope (same request id, sequence number
0, 1, …, MessageLength = the whole message) followed by the next ≤492 bytes.

Pure: the caller passes the clock (``now``) and a hashable source (e.g. the peer address).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field, replace

from idr.codec.envelope import ENVELOPE_SIZE, HEADER_SIZE, Envelope, EnvFlag, decode_envelope
from idr.codec.wire import ProtocolError

MAX_UDP_PACKET = 512
MAX_UDP_DATA = MAX_UDP_PACKET - ENVELOPE_SIZE  # 492


def fragment(
    message: bytes, request_id: int | None = None, *, truncated: bool = False, max_payload: int = MAX_UDP_DATA
) -> list[bytes]:
    """Split a complete message (envelope first) into datagrams, as Handle.Net's
    ``HdlUdpRequestHandler.handleResponse`` does: each datagram is the envelope with its
    sequence number (bytes 12–15) set, then the next ``max_payload`` bytes.

    ``request_id`` overrides the envelope's; ``truncated`` sets TC on every datagram when there
    is more than one (what a Handle.Net client does for a multi-packet request — servers don't).
    The envelope is copied as it is (any version: this only cuts bytes)."""
    if len(message) < ENVELOPE_SIZE:
        raise ValueError(f"message of {len(message)} bytes has no envelope")
    payload = memoryview(message)[ENVELOPE_SIZE:]
    length = int.from_bytes(message[16:20], "big")
    if length != len(payload):
        raise ValueError(f"envelope length {length} != {len(payload)} bytes after it")
    head = bytearray(message[:ENVELOPE_SIZE])
    if request_id is not None:
        head[8:12] = (request_id & 0xFFFFFFFF).to_bytes(4, "big")
    n = max(1, -(-len(payload) // max_payload))
    if truncated and n > 1:
        head[2] |= EnvFlag.TC
    out = []
    for i in range(n):
        head[12:16] = i.to_bytes(4, "big")
        out.append(bytes(head) + payload[i * max_payload : (i + 1) * max_payload])
    return out


def tc_header(message: bytes) -> bytes:
    """Envelope + header of ``message`` with an empty body and TC set (DNS's "ask again over
    TCP", RFC 7766): what the UDP front-end sends past a source's budget (see server/udp.py)."""
    out = bytearray(message[: ENVELOPE_SIZE + HEADER_SIZE] + b"\0\0\0\0")
    out[2] |= EnvFlag.TC
    out[16:20] = (HEADER_SIZE + 4).to_bytes(4, "big")
    out[40:44] = b"\0\0\0\0"
    return bytes(out)


def wire_size(message: bytes, max_payload: int = MAX_UDP_DATA) -> int:
    """Bytes on the wire after :func:`fragment` (each extra datagram repeats the envelope)."""
    payload = len(message) - ENVELOPE_SIZE
    packets = max(1, -(-payload // max_payload))
    return payload + packets * ENVELOPE_SIZE


@dataclass(slots=True)
class _Pending:
    envelope: Envelope
    deadline: float
    count: int
    group: Hashable = None
    chunks: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


class Reassembler:
    """Collects datagrams into messages, bounded in messages, bytes and time, in all and per source.

    Memory is what has actually arrived (never the declared MessageLength); past the bounds the
    oldest partial messages are dropped, as a DNS server drops half-open state under load. A
    source past its own bounds (``per_source`` messages, ``source_bytes`` bytes) loses its own
    oldest partial messages, so one address cannot push out everyone else's.
    """

    def __init__(
        self,
        *,
        max_pending: int = 1024,
        max_bytes: int = 8 * 1024 * 1024,
        timeout: float = 5.0,
        max_payload: int = MAX_UDP_DATA,
        per_source: int = 32,
        source_bytes: int = 1024 * 1024,
    ) -> None:
        self.max_pending = max_pending
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.max_payload = max_payload
        self.per_source = per_source
        self.source_bytes = source_bytes
        self._pending: OrderedDict[tuple[Hashable, int], _Pending] = OrderedDict()
        self._sources: dict[
            Hashable, OrderedDict[tuple[Hashable, int], None]
        ] = {}  # group → its keys, oldest first
        self._source_bytes: dict[Hashable, int] = {}
        self._bytes = 0
        self.dropped = 0  # partial messages given up on (expired or evicted)

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def buffered_bytes(self) -> int:
        return self._bytes

    def _forget(self, key: tuple[Hashable, int]) -> _Pending:
        p = self._pending.pop(key)
        self._bytes -= p.size
        ids = self._sources[p.group]
        del ids[key]
        if ids:
            self._source_bytes[p.group] -= p.size
        else:
            del self._sources[p.group]
            del self._source_bytes[p.group]
        return p

    def _drop(self, key: tuple[Hashable, int]) -> None:
        self._forget(key)
        self.dropped += 1

    def expire(self, now: float) -> None:
        # deadlines grow in insertion order (each is its arrival + the same timeout)
        while self._pending:
            key, p = next(iter(self._pending.items()))
            if p.deadline > now:
                break
            self._drop(key)

    def feed(self, source: Hashable, datagram: bytes, now: float, group: Hashable = None) -> bytes | None:
        """Add one datagram; return the complete message (envelope + all data) once it is whole.
        ``source`` (with the request id) names the message; ``group`` is whom the per-source
        bounds count it against (default: the source; a server passes the address without the
        port, since a client chooses its ports).

        Raises ProtocolError for a datagram that cannot belong to a well-formed message."""
        env = decode_envelope(datagram)
        data = datagram[ENVELOPE_SIZE:]
        total = env.message_length
        count = max(1, -(-total // self.max_payload))
        if env.sequence_number >= count:
            raise ProtocolError(f"sequence number {env.sequence_number} of a {count}-packet message")
        last = total - (count - 1) * self.max_payload
        want = last if env.sequence_number == count - 1 else self.max_payload
        if len(data) != want:
            raise ProtocolError(f"packet {env.sequence_number} carries {len(data)} bytes, expected {want}")
        if count == 1:
            return bytes(datagram)
        self.expire(now)
        key = (source, env.request_id)
        p = self._pending.get(key)
        group = source if group is None else group
        if p is None:
            ids = self._sources.setdefault(group, OrderedDict())
            if len(ids) >= self.per_source:
                self._drop(next(iter(ids)))
                ids = self._sources.setdefault(group, OrderedDict())
            p = _Pending(replace(env, sequence_number=0), now + self.timeout, count, group)
            self._pending[key] = p
            ids[key] = None
            self._source_bytes.setdefault(group, 0)
        elif p.envelope.message_length != total or p.envelope.session_id != env.session_id:
            raise ProtocolError("datagram disagrees with the message it continues")
        if env.sequence_number in p.chunks:
            return None  # duplicate
        p.chunks[env.sequence_number] = data
        p.size += len(data)
        self._bytes += len(data)
        self._source_bytes[p.group] += len(data)
        if len(p.chunks) == p.count:
            self._forget(key)
            return p.envelope.encode() + b"".join(p.chunks[i] for i in range(p.count))
        while self._source_bytes.get(p.group, 0) > self.source_bytes:
            oldest = next(iter(self._sources[p.group]))
            self._drop(oldest)
            if oldest == key:
                return None
        while len(self._pending) > self.max_pending or self._bytes > self.max_bytes:
            oldest_key = next(iter(self._pending))
            self._drop(oldest_key)
            if oldest_key == key:
                break
        return None
