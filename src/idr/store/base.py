"""The storage interface every engine implements (SQLite now, PostgreSQL later).

Engines are deliberately dumb: they store whole records by normalised key and append a
log entry per write, atomically. Every rule (existence checks, authorisation, value
merging) lives in ``idr.core``, which is the single writer of a node's store.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from idr.model.value import HandleRecord


class StoreError(Exception):
    """The engine failed (disk full, corrupt file…); the write did not happen."""


@dataclass(frozen=True, slots=True)
class Write:
    """One record change inside a transaction: ``record=None`` deletes ``key``."""

    key: str
    record: HandleRecord | None


@dataclass(frozen=True, slots=True)
class LogEntry:
    """A committed transaction: its sequence number, commit time (Unix seconds), the
    operation that caused it (e.g. ``create``), the acting identity, and its writes."""

    seq: int
    timestamp: float
    op: str
    actor: str
    writes: tuple[Write, ...]


class Store(ABC):
    """Records keyed by ``normalize_key(handle)``; one atomic, logged transaction per ``commit``."""

    @abstractmethod
    def get(self, key: str) -> HandleRecord | None:
        """The record stored under ``key``, or None."""

    @abstractmethod
    def get_many(self, keys: Sequence[str]) -> dict[str, HandleRecord]:
        """The records that exist among ``keys``."""

    @abstractmethod
    def commit(self, op: str, actor: str, writes: Sequence[Write]) -> int:
        """Apply ``writes`` and append one log entry, atomically and durably; return its seq.

        When this returns, the change survives a crash (``kill -9``, power loss as far as
        fsync promises). When it raises, nothing of it was applied.
        """

    @abstractmethod
    def list_handles(self, prefix: str, after: str | None = None, limit: int = 1000) -> list[str]:
        """Handles (as first written) under ``prefix`` in key order, starting after key ``after``.

        ``prefix`` and ``after`` are normalised keys; paging is by key, never by offset.
        """

    @abstractmethod
    def count(self, prefix: str | None = None) -> int:
        """Number of handles under ``prefix`` (all handles when None)."""

    @abstractmethod
    def last_seq(self) -> int:
        """Sequence number of the newest log entry (0 for an empty log)."""

    @abstractmethod
    def log_since(self, seq: int, limit: int = 1000) -> list[LogEntry]:
        """Log entries with sequence number greater than ``seq``, oldest first."""

    @abstractmethod
    def bulk_load(self, records: Iterable[HandleRecord], op: str = "import", actor: str = "") -> int:
        """Insert or replace many records in one transaction with one log entry; return its seq."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
