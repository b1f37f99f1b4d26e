"""A bounded record cache in front of any engine, safe across the threads that use it.

The event loop (and, for engines whose reads block, a pool of reader threads) fill it on
misses; the writer thread and the log follower invalidate it after commits. A fill that
raced a commit (read the store before the commit, finished after its invalidation) must not
land, so each fill remembers the generation it started in and inserts only if no
invalidation happened since — and that check and the insert are one step under the lock,
as are an invalidation's bump and its removals. (Without the lock an invalidation could
fall between the check and the insert and leave a stale record until the next write to
that key: issue 11 item 4(c).) A hit takes no lock: one dict lookup.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Final

from idr.model.value import HandleRecord

MISSING: Final = object()  # ``lookup``: nothing cached for the key (None means "known absent")


class RecordCache:
    """Bounded map key → record (or None for a known miss); FIFO eviction keeps it O(1)."""

    __slots__ = ("_data", "_generation", "_lock", "capacity", "hits", "misses")

    def __init__(self, capacity: int) -> None:
        self._data: dict[str, HandleRecord | None] = {}
        self._generation = 0
        self._lock = threading.Lock()
        self.capacity = capacity
        self.hits = 0
        self.misses = 0

    def lookup(self, key: str) -> HandleRecord | object | None:
        """The cached entry, or ``MISSING``; never loads."""
        rec = self._data.get(key, MISSING)
        if rec is not MISSING:
            self.hits += 1
        return rec

    def get(self, key: str, load: Callable[[str], HandleRecord | None]) -> HandleRecord | None:
        try:
            rec = self._data[key]
            self.hits += 1
            return rec
        except KeyError:
            self.misses += 1
        generation = self._generation
        rec = load(key)
        if self.capacity > 0:
            with self._lock:
                if generation == self._generation:
                    if len(self._data) >= self.capacity and key not in self._data:
                        self._data.pop(next(iter(self._data), key), None)
                    self._data[key] = rec
        return rec

    def invalidate(self, keys: Iterable[str]) -> None:
        with self._lock:
            self._generation += 1
            for k in keys:
                self._data.pop(k, None)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
