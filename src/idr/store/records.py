"""What every engine stores the same way: row values, the log payload, the write loop.

A row holds a record's values as ``idr.codec.values.encode_values`` (the wire form of
RFC 3651 §3.1); a log ``payload`` is ``encode_writes`` below: binary, length-prefixed with
the same primitives. Both engines use these, so logs read the same from either.
"""

from __future__ import annotations

from collections.abc import Sequence

from idr.codec.values import decode_values, encode_values
from idr.codec.wire import MAX_ARRAY_SIZE, ProtocolError, Reader, Writer
from idr.model.value import HandleRecord
from idr.store.base import StoreError, Write

# A stored record may be large (2048 values of up to 1 MiB each); the wire reader's
# default 1 MiB cap is for untrusted peers, not for our own store.
_MAX_BLOB = 2**31 - 1

PAYLOAD_VERSION = 1  # first byte of a log payload; the rest is ``write_writes``
_PUT = 1
_DELETE = 0

CHECKPOINT_PREFIX = "import:"  # meta rows holding bulk-import positions

# What a transaction logs per write: (key, handle, encoded values), or (key, None, None)
# for a delete. Values reuse the bytes already encoded for the row.
Logged = list[tuple[str, str | None, bytes | None]]


def prefix_of(key: str) -> str:
    return key.partition("/")[0]


def logged(w: Write) -> tuple[str, str | None, bytes | None]:
    """What the log holds of one write."""
    if w.record is None:
        return (w.key, None, None)
    return (w.key, w.record.handle, encode_values(w.record.values))


def write_writes(w: Writer, items: Sequence[tuple[str, str | None, bytes | None]]) -> Writer:
    """u32 count, then per write ``text key, u8 kind`` and, for a put, ``text handle, blob
    vals``: the writes of a log payload and of a replicated entry (idr.replication.wire)."""
    w.u32(len(items))
    for key, handle, vals in items:
        w.text(key)
        if handle is None or vals is None:
            w.u8(_DELETE)
        else:
            w.u8(_PUT).text(handle).blob(vals)
    return w


def read_writes(r: Reader, blob_max: int, count_max: int = MAX_ARRAY_SIZE) -> tuple[Write, ...]:
    """The writes ``write_writes`` wrote; ``blob_max`` caps each key, handle and values."""
    out: list[Write] = []
    for _ in range(r.count("writes", 5, count_max)):
        key = r.text("key", blob_max)
        kind = r.u8()
        if kind == _DELETE:
            out.append(Write(key, None))
        elif kind == _PUT:
            handle = r.text("handle", blob_max)
            vals = decode_values(r.blob("values", blob_max))
            out.append(Write(key, HandleRecord(handle, vals)))
        else:
            raise ProtocolError(f"unknown write kind {kind}")
    return tuple(out)


def encode_writes(items: Sequence[tuple[str, str | None, bytes | None]]) -> bytes:
    """Log payload: u8 version, then the writes (``write_writes``). Values reuse the bytes
    already encoded for the row."""
    return write_writes(Writer().u8(PAYLOAD_VERSION), items).getvalue()


def decode_writes(payload: bytes) -> tuple[Write, ...]:
    r = Reader(payload)
    version = r.u8()
    if version != PAYLOAD_VERSION:
        raise ProtocolError(f"unknown log payload version {version}")
    out = read_writes(r, _MAX_BLOB)
    r.expect_end("log payload")
    return out


def decode_record(key: str, handle: str, vals: bytes) -> HandleRecord:
    """A stored row as a record; a row that does not decode is the store's fault."""
    try:
        return HandleRecord(handle, decode_values(bytes(vals)))
    except ProtocolError as e:
        raise StoreError(f"stored record {key!r} does not decode: {e.message}") from e


def decode_log_payload(seq: int, where: str, payload: bytes) -> tuple[Write, ...]:
    """The writes of log entry ``seq``; a payload that does not decode is the store's fault."""
    try:
        return decode_writes(bytes(payload))
    except ProtocolError as e:
        raise StoreError(f"log entry {seq} {where} does not decode: {e.message}") from e


# Each key's final state after a group of writes: its logged item (by key) and its record.
GroupRows = tuple[dict[str, tuple[str, str | None, bytes | None]], dict[str, HandleRecord | None]]


def group_rows(groups: Sequence[Sequence[Write]]) -> tuple[list[bytes], GroupRows]:
    """Each group's log payload, and the final state of every key the groups write, applied in
    order (the last write to a key wins): its logged item and its record. Engines write a
    group commit's rows from this, one statement per table instead of one per write."""
    final: dict[str, tuple[str, str | None, bytes | None]] = {}
    records: dict[str, HandleRecord | None] = {}
    payloads = []
    for writes in groups:
        items = [logged(w) for w in writes]
        for item, w in zip(items, writes, strict=True):
            final[item[0]] = item
            records[item[0]] = w.record
        payloads.append(encode_writes(items))
    return payloads, (final, records)
