"""Pre-encoded resolution answers: the hot path of the native front-ends.

Key: the request's bytes with the two fields that vary per request cut out — the envelope's
RequestId (bytes 8–11) and the header's ExpirationTime (bytes 36–39). Everything else that can
shape the answer (versions, session id, op flags, recursion count, the body with its filters) is
part of the key, so a hit is, by construction, a request the slow path already answered with
these exact bytes apart from the echoed RequestId and expiration, which are patched in by two
slice assignments. Only answers that depend on nothing else are stored: resolution without RD
(the digest covers the expiration), without a session or credential, from one datagram/frame,
with no identity (see ``Outcome.cacheable``).

Invalidation: ``NodeService.add_listener`` calls :meth:`invalidate` after every commit with the
normalised keys it changed (from the writer thread); an index key → cache keys drops exactly
the affected answers; a change of homed prefixes drops everything (301 answers depend on it). A
generation counter closes the race between a slow-path read and a concurrent commit: an answer
computed before a commit is never stored after it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

HOMED_KEY_PREFIX = "0.HOMED/"  # idr.core.service.HOMED_PREFIX + "/"


def cache_key(data: bytes) -> bytes:
    """The request bytes minus RequestId and ExpirationTime (a request is ≥ 44 bytes here)."""
    return data[:8] + data[12:36] + data[40:]


def patch(template: bytes, data: bytes) -> bytearray:
    """A cached answer with this request's RequestId and ExpirationTime."""
    out = bytearray(template)
    out[8:12] = data[8:12]
    out[36:40] = data[36:40]
    return out


class AnswerCache:
    """Bounded map cache key → complete response bytes; FIFO eviction (O(1), no LRU bookkeeping
    on hits, so a hit is one dict lookup)."""

    def __init__(self, capacity: int = 500_000) -> None:
        self.capacity = capacity
        self.data: dict[bytes, bytes] = {}  # read lock-free on the hot path (dict ops are atomic)
        self._owner: dict[bytes, str] = {}  # cache key → normalised handle key
        self._index: dict[str, set[bytes]] = {}  # normalised handle key → cache keys
        self._lock = threading.Lock()
        self.generation = 0
        self.hits = 0  # counted by the front-ends when they want to
        self.stores = 0

    def __len__(self) -> int:
        return len(self.data)

    def put(self, key: bytes, answer: bytes, handle_key: str, generation: int) -> bool:
        """Store unless a commit happened since ``generation`` was read (the answer may be stale)."""
        if self.capacity <= 0:
            return False
        with self._lock:
            if generation != self.generation:
                return False
            if key not in self.data:
                while len(self.data) >= self.capacity:
                    self._drop(next(iter(self.data)))
                self._index.setdefault(handle_key, set()).add(key)
                self._owner[key] = handle_key
            self.data[key] = answer
            self.stores += 1
            return True

    def _drop(self, key: bytes) -> None:
        self.data.pop(key, None)
        owner = self._owner.pop(key, None)
        if owner is not None:
            keys = self._index.get(owner)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._index[owner]

    def invalidate(self, keys: Sequence[str]) -> None:
        """Listener for ``NodeService.add_listener``: drop answers about the changed handles."""
        with self._lock:
            self.generation += 1
            if any(k.startswith(HOMED_KEY_PREFIX) for k in keys):
                self._clear()
                return
            for k in keys:
                for ck in self._index.pop(k, ()):
                    self.data.pop(ck, None)
                    self._owner.pop(ck, None)

    def _clear(self) -> None:
        self.data.clear()
        self._owner.clear()
        self._index.clear()

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._clear()
