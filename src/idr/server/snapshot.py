"""The native answer cache kept across a restart: a restarted node answers warm at once.

On a clean stop (``idr serve`` on SIGTERM/SIGINT, and each ``--workers`` process) the answers
the node built — cache key → ready answer bytes, their index by handle, the shapes' splice heads
and HANDLE_NOT_FOUND templates — are written to a file in the data directory
(:func:`save`: temp file, fsync, rename, fsync of the directory); the next start loads it
(:func:`load`) before its UDP port opens. Format: a magic line, a fixed head (lengths, CRC-32),
a small JSON header, then one ``marshal`` blob: cache keys, answers and handle keys as three
lists side by side (the index of handles with several keys apart), read through an mmap.
Chosen by measurement (native.py's notes): ``marshal.loads`` of lists, then ``dict(zip(…))``
builds the maps with no Python work per answer (marshalled maps loaded slower), where
re-inserting answers one by one or re-splicing them from the store costs Python work per
handle, and an mmap'd sorted file would cost a bisect on every first request.

Correctness before speed — an acknowledged write is never hidden by a loaded answer:

* the file records the store's log position ``seq`` up to which every commit had reached this
  process's cache when it was dumped (``LogFollower.seq`` once the writer stopped and every
  listener ran), and that entry's commit time; on load every handle a log entry after ``seq``
  changed is dropped (read with ``log_since``: a ``idr`` command or a second node on the same
  PostgreSQL database while this one was down). If the log no longer reaches back to ``seq``
  (compacted, a mirror re-copied from its primary: ``REPLICA_COPY_OP``), the store is behind
  ``seq`` or its entry at ``seq`` has another commit time (another store), or a homed prefix
  changed, the file is discarded whole;
* anything else that shapes answers is in a fingerprint compared whole: the file format, the
  source of the installed idr package, the node's ``idr.toml`` and ``federation.toml``, its
  role, homed prefixes, server key, and the answering site's serial and primary flag;
* a truncated, corrupt or foreign file (magic, CRC, structure) is discarded: the node starts
  cold and answers from the store. Every discard is logged once with its reason.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import json
import logging
import marshal
import mmap
import os
import struct
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idr.server.hotcache import HOMED_KEY_PREFIX, AnswerCache, Splice
from idr.store.base import REPLICA_COPY_OP, Store

log = logging.getLogger("idr.native")

FORMAT = 1
MAGIC = b"IDR-ANSWERS\n"
_HEAD = struct.Struct(">IQI")  # header length, blob length, CRC-32 of header and blob
FILE_NAME = "native-answers.snap"
LOG_PAGE = 1000


def snapshot_path(data_dir: Path, worker: int = 0) -> Path:
    """Worker 0's file, or extra worker ``worker``'s own (each process has its own cache)."""
    return data_dir / (FILE_NAME if worker == 0 else f"native-answers.{worker}.snap")


@functools.cache
def _build() -> str:
    """A digest of the installed idr package's source: any change of code may change answers."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode())
        with contextlib.suppress(OSError):
            h.update(p.read_bytes())
    return h.hexdigest()


def config_tag(*files: Path) -> str:
    """What a node's configuration files hold (a missing file counts as empty)."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0")
        with contextlib.suppress(OSError):
            h.update(f.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def fingerprint(parts: Iterable[object]) -> str:
    """Everything besides the records that shapes the cached answers, as one digest."""
    from idr import __version__

    text = json.dumps([FORMAT, __version__, _build(), *[repr(p) for p in parts]])
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Loaded:
    """What :func:`load` did: ``answers`` kept (0 when discarded, with ``reason``)."""

    answers: int = 0
    dropped: int = 0  # answers of handles changed since the snapshot
    reason: str = ""
    seconds: float = 0.0
    size: int = 0


def _entry_time(store: Store, seq: int) -> float | None:
    """Commit time of the log entry ``seq`` if the log still holds it."""
    if seq <= 0:
        return None
    entries = store.log_raw_since(seq - 1, 1)
    return entries[0].timestamp if entries and entries[0].seq == seq else None


def save(cache: AnswerCache, path: Path, store: Store, seq: int, print_: str) -> int:
    """Write the cache's answers to ``path`` as of log position ``seq`` (every commit up to it
    has reached the cache) under fingerprint ``print_``; returns how many answers."""
    keys, answers, owners, multi = cache.export()
    heads = {k: s.parts() for k, s in cache.heads.items() if s is not None}
    blob = marshal.dumps((keys, answers, owners, multi, heads, dict(cache.negative)), 4)
    header = json.dumps(
        {
            "format": FORMAT,
            "seq": seq,
            "time": _entry_time(store, seq),
            "fingerprint": print_,
            "answers": len(keys),
        }
    ).encode()
    crc = zlib.crc32(blob, zlib.crc32(header))
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + _HEAD.pack(len(header), len(blob), crc))
            f.write(header)
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return len(keys)


@contextlib.contextmanager
def _no_collection() -> Iterator[None]:
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class Discard(Exception):
    """The snapshot cannot be used (the message says why)."""


def _read(mapped: mmap.mmap) -> tuple[dict[str, Any], int]:
    """The header of a whole file and where its blob starts, once the CRC matched. Every view
    of the map is released on the way out, whatever happens (the map must close)."""
    if len(mapped) < len(MAGIC) + _HEAD.size or mapped[: len(MAGIC)] != MAGIC:
        raise Discard("not an answer snapshot (magic)")
    hlen, blen, crc = _HEAD.unpack_from(mapped, len(MAGIC))
    at = len(MAGIC) + _HEAD.size
    if len(mapped) != at + hlen + blen:
        raise Discard(f"truncated or padded ({len(mapped)} bytes, header says {at + hlen + blen})")
    with memoryview(mapped) as whole, whole[at:] as rest:
        ok = zlib.crc32(rest) == crc  # of the header and the blob
    if not ok:
        raise Discard("checksum mismatch (corrupt)")
    try:
        meta = json.loads(mapped[at : at + hlen])
    except ValueError as e:
        raise Discard(f"header unreadable: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        seen = meta.get("format") if isinstance(meta, dict) else "?"
        raise Discard(f"format {seen} (this idr reads {FORMAT})")
    return meta, at + hlen


def changed_since(store: Store, seq: int, when: float | None) -> set[str]:
    """Keys of every record changed by a log entry after ``seq``; Discard when the log cannot
    tell (it no longer reaches back, it is another store, a whole copy or a homed change)."""
    last = store.last_seq()
    if last < seq:
        raise Discard(f"the store's log ends at {last}, before the snapshot's position {seq}")
    if when is not None:
        now = _entry_time(store, seq)
        if now is not None and now != when:
            raise Discard(f"the store's log entry {seq} is not the one the snapshot saw (another store)")
    keys: set[str] = set()
    at = seq
    while at < last:
        entries = store.log_since(at, LOG_PAGE)
        if not entries:
            break
        if entries[0].seq != at + 1:
            raise Discard(
                f"the store's log no longer reaches back to {seq} (compacted from {entries[0].seq})"
            )
        for e in entries:
            if e.op == REPLICA_COPY_OP:
                raise Discard(f"the store was re-copied from its primary at {e.seq}")
            keys.update(w.key for w in e.writes)
        at = entries[-1].seq
    if any(k.startswith(HOMED_KEY_PREFIX) for k in keys):
        raise Discard("the homed prefixes changed")
    return keys


def load(cache: AnswerCache, path: Path, store: Store, print_: str) -> Loaded:
    """Fill an empty ``cache`` from ``path`` when it is sound and still true (see the module
    docstring); never raises for a bad file: the reason is logged and the cache left empty."""
    t0 = time.monotonic()
    out = Loaded()
    try:
        out.size = path.stat().st_size
    except FileNotFoundError:
        out.reason = "no snapshot"
        return out
    except OSError as e:
        out.reason = f"cannot read: {e}"
    try:
        if out.reason:
            raise Discard(out.reason)
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            meta, at = _read(mapped)
            if meta.get("fingerprint") != print_:
                raise Discard("the node's configuration, sites, keys or idr itself changed")
            seq, when = meta.get("seq"), meta.get("time")
            if not isinstance(seq, int) or not (when is None or isinstance(when, float | int)):
                raise Discard("header incomplete")
            changed = changed_since(store, seq, when)
            # millions of new objects: no collection walks them meanwhile
            with _no_collection(), memoryview(mapped) as whole, whole[at:] as blob:
                try:
                    body = marshal.loads(blob)
                except (ValueError, EOFError, TypeError) as e:
                    raise Discard(f"body unreadable: {e}") from e
        with _no_collection():
            if not isinstance(body, tuple) or len(body) != 6:
                raise Discard("body malformed")
            keys, answers, owners, multi, heads, negative = body
            del body
            if not (
                isinstance(keys, list)
                and isinstance(answers, list)
                and isinstance(owners, list)
                and isinstance(multi, dict)
                and isinstance(heads, dict)
                and isinstance(negative, dict)
                and len(keys) == len(answers) == len(owners)
            ):
                raise Discard("body malformed")
            splices = {k: Splice.from_parts(v) for k, v in heads.items()}
            out.dropped = cache.restore(keys, answers, owners, multi, changed, splices, negative)
            out.answers = len(cache.data)
    except Discard as e:
        out.reason = str(e)
    except (OSError, ValueError, TypeError, KeyError) as e:
        out.reason = f"unusable: {type(e).__name__}: {e}"
    out.seconds = time.monotonic() - t0
    if out.reason:
        log.warning("answer snapshot %s discarded, starting cold: %s", path, out.reason)
        cache.clear()
    else:
        log.info(
            "answer snapshot loaded: %d answers (%d dropped: changed since) from %s (%.1f MB) in %.2f s",
            out.answers,
            out.dropped,
            path,
            out.size / 1e6,
            out.seconds,
        )
    return out


__all__: Sequence[str] = [
    "FILE_NAME",
    "Loaded",
    "changed_since",
    "config_tag",
    "fingerprint",
    "load",
    "save",
    "snapshot_path",
]
