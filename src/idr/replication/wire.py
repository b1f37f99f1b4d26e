"""The replication link's bytes: frames, the mutual HMAC handshake, and sealed frames after it.

Why this shape (see docs/replication.md for the whole protocol):

* Every frame is ``u32 length`` + body, and a reader never takes more than the cap it was
  given — 4 KiB before authentication (an unknown peer cannot make us buffer more), 64 MiB
  after (a log entry may hold a bulk import batch).
* Handshake, both ways, over fresh 32-byte nonces ``nc`` (client) and ``ns`` (server)::

      client → HELLO {nonce: nc, node}
      server → CHALLENGE {nonce: ns, node, proof: HMAC(secret, "idr-repl server" nc ns)}
      client → AUTH {proof: HMAC(secret, "idr-repl client" nc ns)}

  Distinct labels stop a proof being reflected back; fresh nonces stop replay. The secret
  itself never crosses the wire.
* After it, each direction seals every frame with AES-256-GCM under its own key
  ``HMAC(HMAC(secret, "idr-repl keys" nc ns), "c2s"|"s2c")`` and a frame counter as nonce:
  a peer without the secret can neither read records (HS_SECKEY values travel here) nor
  inject, replay, reorder or drop a frame unnoticed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import struct
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from idr.codec.values import decode_values, encode_values
from idr.codec.wire import Reader, Writer
from idr.model.value import HandleRecord
from idr.store.base import LogEntry, RawEntry
from idr.store.records import PAYLOAD_VERSION, logged, read_writes, write_writes

VERSION = 1
PRE_AUTH_MAX = 4096
FRAME_MAX = 64 * 1024 * 1024
_BLOB_MAX = FRAME_MAX

# Sealed frame kinds.
JSON = 1  # a control message: a JSON object with "t"
ENTRY = 2  # one log entry
CHUNK = 3  # snapshot records

_LEN = struct.Struct(">I")
_SEQ_TS = struct.Struct(">Qd")


class LinkError(Exception):
    """The peer failed authentication, broke the protocol, or the link broke."""


REPLICATION = b"idr-repl"  # the handshake's label: a key of one kind of link opens no other kind


def _proof(secret: bytes, label: bytes, nc: bytes, ns: bytes) -> bytes:
    return hmac.new(secret, label + nc + ns, hashlib.sha256).digest()


def _keys(secret: bytes, nc: bytes, ns: bytes, purpose: bytes = REPLICATION) -> tuple[bytes, bytes]:
    prk = hmac.new(secret, purpose + b" keys" + nc + ns, hashlib.sha256).digest()
    c2s = hmac.new(prk, b"c2s", hashlib.sha256).digest()
    s2c = hmac.new(prk, b"s2c", hashlib.sha256).digest()
    return c2s, s2c


# --------------------------------------------------------------------------- entries


def encode_entry(e: LogEntry) -> bytes:
    w = Writer().raw(_SEQ_TS.pack(e.seq, e.timestamp)).text(e.op).text(e.actor)
    return write_writes(w, [logged(wr) for wr in e.writes]).getvalue()


def encode_raw_entry(e: RawEntry) -> bytes:
    """``encode_entry`` from a stored entry: its payload *is* the writes' encoding after the
    payload's version byte (``idr.store.records``), so nothing is decoded or re-encoded."""
    if not e.payload or e.payload[0] != PAYLOAD_VERSION:
        raise LinkError(f"log entry {e.seq} has a payload of an unknown version")
    head = Writer().raw(_SEQ_TS.pack(e.seq, e.timestamp)).text(e.op).text(e.actor).getvalue()
    return head + e.payload[1:]


def decode_entry(data: bytes) -> LogEntry:
    r = Reader(data)
    seq, ts = _SEQ_TS.unpack(r.raw(_SEQ_TS.size, "seq"))
    op = r.text("op", 256)
    actor = r.text("actor", 4096)
    writes = read_writes(r, _BLOB_MAX, _BLOB_MAX)
    r.expect_end("log entry")
    return LogEntry(seq, ts, op, actor, writes)


def encode_chunk(items: Sequence[tuple[str, HandleRecord]]) -> bytes:
    w = Writer().u32(len(items))
    for key, rec in items:
        w.text(key).text(rec.handle).blob(encode_values(rec.values))
    return w.getvalue()


def decode_chunk(data: bytes) -> list[tuple[str, HandleRecord]]:
    r = Reader(data)
    out: list[tuple[str, HandleRecord]] = []
    for _ in range(r.count("records", 12, _BLOB_MAX)):
        key = r.text("key", _BLOB_MAX)
        handle = r.text("handle", _BLOB_MAX)
        out.append((key, HandleRecord(handle, decode_values(r.blob("values", _BLOB_MAX)))))
    r.expect_end("snapshot chunk")
    return out


def iter_chunks(chunks: Iterable[bytes]) -> Iterable[tuple[str, HandleRecord]]:
    """Decode received chunks lazily, so a mirror holds a snapshot as bytes, not objects."""
    for c in chunks:
        yield from decode_chunk(c)


# --------------------------------------------------------------------------- frames


async def _read_frame(reader: asyncio.StreamReader, cap: int) -> bytes:
    try:
        (n,) = _LEN.unpack(await reader.readexactly(4))
        if n > cap:
            raise LinkError(f"frame of {n} bytes exceeds {cap}")
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError as e:
        raise LinkError("connection closed by peer") from e


def _frame(body: bytes) -> bytes:
    return _LEN.pack(len(body)) + body


async def _plain_json(reader: asyncio.StreamReader) -> dict[str, Any]:
    try:
        msg = orjson.loads(await _read_frame(reader, PRE_AUTH_MAX))
    except orjson.JSONDecodeError as e:
        raise LinkError("handshake message is not JSON") from e
    if not isinstance(msg, dict):
        raise LinkError("handshake message is not an object")
    return msg


def _hex(msg: dict[str, Any], name: str, size: int) -> bytes:
    try:
        b = bytes.fromhex(str(msg[name]))
    except (KeyError, ValueError) as e:
        raise LinkError(f"handshake field {name!r} missing or not hex") from e
    if len(b) != size:
        raise LinkError(f"handshake field {name!r} has {len(b)} bytes, not {size}")
    return b


class Sealer:
    """One direction of a link after the handshake: AES-256-GCM with the frame counter as
    nonce, so a frame cannot be read, forged, replayed, reordered or dropped unnoticed."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self._n = 0

    def seal(self, kind: int, payload: bytes) -> bytes:
        """The whole frame (length prefix included) carrying ``kind`` and ``payload``."""
        nonce = self._n.to_bytes(12, "big")
        self._n += 1
        return _frame(self._aead.encrypt(nonce, bytes([kind]) + payload, None))

    def open(self, body: bytes) -> tuple[int, bytes]:
        """``(kind, payload)`` of a received frame's body (after its length prefix)."""
        nonce = self._n.to_bytes(12, "big")
        self._n += 1
        try:
            plain = self._aead.decrypt(nonce, body, None)
        except InvalidTag as e:
            raise LinkError("frame failed authentication (tampered, replayed or wrong key)") from e
        if not plain:
            raise LinkError("empty frame")
        return plain[0], plain[1:]


class Channel:
    """An authenticated, sealed, ordered message stream to one peer."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        send_key: bytes,
        recv_key: bytes,
        peer: str,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.peer = peer  # the peer's node id, as it announced it (it proved the secret)
        self._send = Sealer(send_key)
        self._recv = Sealer(recv_key)

    async def send(self, kind: int, payload: bytes) -> None:
        self.writer.write(self._send.seal(kind, payload))
        await self.writer.drain()

    def put(self, kind: int, payloads: Sequence[bytes]) -> None:
        """Queue one frame per payload in one transport write, without waiting for the peer
        to read them (the caller drains, or checks ``unsent``): a group commit's entries
        leave in one segment, not one send and one wake-up of the reader each."""
        self.writer.write(b"".join([self._send.seal(kind, p) for p in payloads]))

    def unsent(self) -> int:
        """Bytes written but not yet taken by the kernel (the transport's buffer)."""
        return self.writer.transport.get_write_buffer_size()

    async def drain(self) -> None:
        await self.writer.drain()

    async def send_json(self, msg: dict[str, Any]) -> None:
        await self.send(JSON, orjson.dumps(msg))

    async def recv(self) -> tuple[int, bytes]:
        return self._recv.open(await _read_frame(self.reader, FRAME_MAX + 64))

    async def recv_json(self) -> dict[str, Any]:
        kind, payload = await self.recv()
        if kind != JSON:
            raise LinkError(f"expected a control message, got frame kind {kind}")
        msg = orjson.loads(payload)
        if not isinstance(msg, dict):
            raise LinkError("control message is not an object")
        return msg

    def close(self) -> None:
        self.writer.close()


def client_hello(node: str) -> tuple[bytes, bytes]:
    """The client's first handshake frame (sans I/O): its nonce and the frame to send."""
    nc = os.urandom(32)
    return nc, _frame(orjson.dumps({"v": VERSION, "nonce": nc.hex(), "node": node}))


def client_answer(
    msg: dict[str, Any], secret: bytes, nc: bytes, purpose: bytes = REPLICATION
) -> tuple[bytes, bytes, bytes, str]:
    """The client's step on the server's CHALLENGE (sans I/O): the AUTH frame to send, the
    send and receive keys, and the peer's name. LinkError when the server is not genuine."""
    if "error" in msg:
        raise LinkError(f"peer refused: {msg['error']}")
    ns = _hex(msg, "nonce", 32)
    if not hmac.compare_digest(_hex(msg, "proof", 32), _proof(secret, purpose + b" server", nc, ns)):
        raise LinkError("peer does not know the link's secret")
    auth = _frame(orjson.dumps({"proof": _proof(secret, purpose + b" client", nc, ns).hex()}))
    c2s, s2c = _keys(secret, nc, ns, purpose)
    return auth, c2s, s2c, str(msg.get("node", ""))


async def client_handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    secret: bytes,
    node: str,
    purpose: bytes = REPLICATION,
) -> Channel:
    nc, hello = client_hello(node)
    writer.write(hello)
    await writer.drain()
    auth, c2s, s2c, peer = client_answer(await _plain_json(reader), secret, nc, purpose)
    writer.write(auth)
    await writer.drain()
    return Channel(reader, writer, c2s, s2c, peer)


async def server_handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    secret: bytes,
    node: str,
    purpose: bytes = REPLICATION,
) -> Channel:
    hello = await _plain_json(reader)
    if hello.get("v") != VERSION:
        writer.write(_frame(orjson.dumps({"error": f"link protocol version {VERSION} only"})))
        raise LinkError(f"peer speaks link protocol version {hello.get('v')!r}")
    nc = _hex(hello, "nonce", 32)
    ns = os.urandom(32)
    proof = _proof(secret, purpose + b" server", nc, ns).hex()
    writer.write(_frame(orjson.dumps({"nonce": ns.hex(), "node": node, "proof": proof})))
    await writer.drain()
    auth = await _plain_json(reader)
    if not hmac.compare_digest(_hex(auth, "proof", 32), _proof(secret, purpose + b" client", nc, ns)):
        raise LinkError("peer does not know the link's secret")
    c2s, s2c = _keys(secret, nc, ns, purpose)
    return Channel(reader, writer, s2c, c2s, str(hello.get("node", "")))


async def connect(address: tuple[str, int], secret: bytes, node: str, timeout: float) -> Channel:
    """Open and authenticate a link to ``address`` within ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(*address)
        try:
            return await client_handshake(reader, writer, secret, node)
        except BaseException:
            writer.close()
            raise
