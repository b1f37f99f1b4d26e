"""The last log entries this process committed, in memory, as stored.

A primary ships every group commit's entries to its mirrors at once, from the event loop
(``idr.replication.manager``): reading them back from the file would be a statement on the
loop per group — one that releases the GIL to the writer thread and waits to take it back.
The writer stages a transaction's entries and publishes them once its COMMIT returned, so a
reader never sees an entry that is not durable. The tail is contiguous: an entry committed by
anyone else (another process on the same file) leaves a gap in what this process saw, and the
tail restarts after it; every other change to the log (an import, a copy, compaction) empties
it. ``Store.log_recent`` answers from it; what it does not hold from ``seq + 1`` on is read
from the file (``log_raw_since``, which never answers from here: the file is the truth).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from itertools import islice

from idr.store.base import RawEntry

MAX_ENTRIES = 4096
MAX_BYTES = 8 * 1024 * 1024  # of payloads held


class LogTail:
    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: deque[RawEntry] = deque()
        self._bytes = 0
        self._staged: tuple[int, Sequence[RawEntry]] | None = None  # the writer's only

    def stage(self, after: int, entries: Sequence[RawEntry]) -> None:
        """The open transaction appends ``entries``, the log's last seq before them ``after``."""
        self._staged = (after, entries)

    def committed(self) -> None:
        """The transaction committed: publish what it staged; if it staged nothing, it changed
        the log some other way (or not at all): forget everything."""
        staged, self._staged = self._staged, None
        with self._lock:
            if staged is None or not staged[1]:
                self._clear()
                return
            after, entries = staged
            if not self._entries or self._entries[-1].seq != after:
                self._clear()
            self._entries.extend(entries)
            self._bytes += sum(len(e.payload) for e in entries)
            while self._entries and (len(self._entries) > self.max_entries or self._bytes > self.max_bytes):
                self._bytes -= len(self._entries.popleft().payload)

    def rolled_back(self) -> None:
        self._staged = None

    def since(self, seq: int, limit: int) -> list[RawEntry]:
        """Entries ``seq + 1`` … (at most ``limit``, up to the newest held), or [] when the
        tail does not hold ``seq + 1``."""
        with self._lock:
            if not self._entries:
                return []
            i = seq + 1 - self._entries[0].seq
            if i < 0 or i >= len(self._entries):
                return []
            return list(islice(self._entries, i, i + limit))

    def _clear(self) -> None:
        self._entries.clear()
        self._bytes = 0


__all__ = ["LogTail"]
