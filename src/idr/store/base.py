"""The storage interface every engine implements (SQLite now, PostgreSQL later).

Engines are deliberately dumb: they store whole records by normalised key and append a
log entry per write, atomically. Every rule (existence checks, authorisation, value
merging) lives in ``idr.core``, which is the single writer of a node's store.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from idr.model.errors import HandleError, ResponseCode
from idr.model.value import HandleRecord
from idr.store.search import Term


class StoreError(Exception):
    """The engine failed (disk full, corrupt file…); the write did not happen."""


class StoreUnavailable(StoreError):
    """The store cannot be reached now (its server down, a failover under way, the connection
    lost): worth trying again shortly. Front-ends answer SERVER_TOO_BUSY (HTTP 503). A write
    that lost its connection while committing may have happened: the message says so."""


def store_failure(e: StoreError) -> HandleError:
    """What a client is told about a store failure: SERVER_TOO_BUSY (HTTP 503, try again) while
    the store is unreachable, ERROR otherwise."""
    if isinstance(e, StoreUnavailable):
        return HandleError(ResponseCode.SERVER_TOO_BUSY, f"storage unavailable, try again shortly: {e}")
    return HandleError(ResponseCode.ERROR, f"storage failure: {e}")


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


@dataclass(frozen=True, slots=True)
class Commit:
    """One write's transaction as the core hands it to ``commit_many``: its own log entry."""

    op: str
    actor: str
    writes: tuple[Write, ...]


@dataclass(frozen=True, slots=True)
class RawEntry:
    """A log entry as stored: its writes still encoded (``idr.store.records`` payload), for
    shipping to a mirror without decoding and re-encoding every value."""

    seq: int
    timestamp: float
    op: str
    actor: str
    payload: bytes


# Op of the marker entry ``replace_all`` leaves at the snapshot's seq: it stands for the
# history the snapshot replaced, so it is never shipped as an entry (a follower needing
# anything at or before it takes a snapshot instead).
REPLICA_COPY_OP = "replica-copy"


class Store(ABC):
    """Records keyed by ``normalize_key(handle)``; one atomic, logged transaction per ``commit``."""

    # Whether a read may wait on something slower than a local file (a database server across
    # a network): the node then keeps such reads off its event loop.
    blocking_reads = False

    @abstractmethod
    def get(self, key: str) -> HandleRecord | None:
        """The record stored under ``key``, or None."""

    @abstractmethod
    def get_many(self, keys: Sequence[str]) -> dict[str, HandleRecord]:
        """The records that exist among ``keys``."""

    def get_raw(self, key: str) -> tuple[str, bytes] | None:
        """``(handle, values)`` stored under ``key``, the values in their wire form
        (``encode_values``, what a row holds), or None: what the native hot path splices into
        an answer without decoding (``idr.server.hotcache``). Engines override it to skip the
        decode-and-encode round trip."""
        from idr.codec.values import encode_values

        record = self.get(key)
        return None if record is None else (record.handle, encode_values(record.values))

    def raw_reads(self, defer: Callable[[Callable[[], None]], object]) -> RawReads:
        """The stored values (``get_raw``'s second half: a miss splices them under the request's
        handle, so the handle column is not read) for one thread's bursts of point reads (the
        native hot path's misses, on the event loop). An engine may serve a burst from one read
        snapshot: it then calls ``defer(release)`` when it takes one, and the caller runs
        ``release`` soon (the native server: ``READ_HOLD`` later) and also before any read that
        must see a newer commit."""
        get_raw = self.get_raw

        def values(key: str) -> bytes | None:
            row = get_raw(key)
            return None if row is None else row[1]

        return RawReads(values)

    def reopen_spec(self) -> tuple[str, str] | None:
        """``(engine, location)`` another process can open this store's data with
        (``idr.server.warmhelper``: the warm-up reads its snapshot there), or None when the data
        lives only in this process."""
        return None

    def commit(self, op: str, actor: str, writes: Sequence[Write]) -> int:
        """Apply ``writes`` and append one log entry, atomically and durably; return its seq.

        When this returns, the change survives a crash (``kill -9``, power loss as far as
        fsync promises). When it raises, nothing of it was applied.
        """
        return self.commit_many([Commit(op, actor, tuple(writes))])[0]

    @abstractmethod
    def commit_many(self, commits: Sequence[Commit]) -> list[int]:
        """Group commit: every commit applied in order, each with its own log entry (seqs
        consecutive, returned in order), in ONE transaction made durable once (one fsync).

        All or nothing: when it raises, none of them was applied (the caller may then retry
        them one by one to find which one the engine refuses).
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
    def prefixes(self) -> list[str]:
        """The distinct prefixes (key part before the first '/') that hold handles, sorted.

        For statistics and for listing what a node serves, without scanning every handle.
        """

    # -- reverse lookup (idr.store.search): an index kept by every write, in its transaction --

    @property
    @abstractmethod
    def search_mode(self) -> str:
        """How values are indexed for ``search``: ``full``, ``exact`` or ``off`` (kept in the store)."""

    @abstractmethod
    def search(self, terms: Sequence[Term], limit: int = 1000, offset: int = 0) -> list[str]:
        """Handles (as first written), in key order, holding for every term a searchable value
        of its type whose data matches its pattern; ``offset`` matches skipped, at most
        ``limit`` returned. ``SearchError`` when the store's index is off."""

    @abstractmethod
    def last_seq(self) -> int:
        """Sequence number of the newest log entry (0 for an empty log)."""

    def log_since(self, seq: int, limit: int = 1000) -> list[LogEntry]:
        """Log entries with sequence number greater than ``seq``, oldest first.

        After ``truncate_log`` the first entry returned may be later than ``seq + 1``: a
        reader that needs every change (a mirror, a cache follower) must check for that gap.
        """
        from idr.store.records import decode_log_payload

        return [
            LogEntry(e.seq, e.timestamp, e.op, e.actor, decode_log_payload(e.seq, self.where, e.payload))
            for e in self.log_raw_since(seq, limit)
        ]

    @abstractmethod
    def log_raw_since(self, seq: int, limit: int = 1000) -> list[RawEntry]:
        """``log_since`` with the payloads as stored."""

    def log_recent(self, seq: int, limit: int = 1000) -> list[RawEntry]:
        """``log_raw_since`` from memory: the entries from ``seq + 1`` on (at most ``limit``)
        that this process committed last, as it logged them, without a read — or [] when it
        does not hold ``seq + 1`` (then read ``log_raw_since``). For shipping a group commit
        to mirrors from the event loop; an engine without such a tail always answers []."""
        return []

    @property
    def where(self) -> str:
        """The store, for messages (a path, a DSN without its password)."""
        return type(self).__name__

    @abstractmethod
    def first_seq(self) -> int:
        """Sequence number of the oldest entry the log still holds (0 for an empty log)."""

    def entry_time(self, seq: int) -> float | None:
        """Commit time of the first entry at or after ``seq`` (None past the end): lets
        retention find a time in the log by bisection without decoding payloads."""
        entries = self.log_since(seq - 1, 1)
        return entries[0].timestamp if entries else None

    @abstractmethod
    def truncate_log(self, before: int, limit: int = 10_000) -> int:
        """Delete up to ``limit`` of the oldest entries with seq < ``before``, in one short
        transaction; the newest entry is never deleted (numbering continues from it).
        Returns how many were deleted. Records are untouched: only history goes."""

    @abstractmethod
    def bulk_load(
        self,
        records: Iterable[HandleRecord],
        op: str = "import",
        actor: str = "",
        checkpoint: tuple[str, int] | None = None,
    ) -> int:
        """Insert or replace many records in one transaction with one log entry; return its seq.

        ``checkpoint=(name, position)`` records ``position`` under ``name`` in the same
        transaction, so a resumable importer knows exactly what is committed (``checkpoint``).
        """

    @abstractmethod
    def checkpoint(self, name: str) -> int:
        """The position last recorded under ``name`` by ``bulk_load`` (0 if never)."""

    # -- replication (idr.replication): a mirror holds the primary's log with the same seqs --

    @abstractmethod
    def apply_entry(self, entry: LogEntry) -> bool:
        """Apply a primary's log entry atomically, keeping its seq; False if already held.

        Idempotent so a re-sent entry is harmless (``entry.seq <= last_seq()`` → skipped);
        raises StoreError on a gap (``entry.seq > last_seq() + 1``): applying out of order
        would make this log differ from the primary's at the same seq.
        """

    def apply_entries(self, entries: Sequence[LogEntry]) -> int:
        """``apply_entry`` for consecutive entries in one transaction where the engine can
        (one fsync for a mirror catching up with a group commit); returns how many applied."""
        return sum(1 for e in entries if self.apply_entry(e))

    @abstractmethod
    def snapshot(self) -> tuple[int, Iterator[tuple[str, HandleRecord]]]:
        """``(seq, (key, record)…)``: every record as of one consistent point, and its seq.

        Keys are returned as stored (they are not always ``normalize_key(record.handle)``).
        Close the iterator (or exhaust it) to release the read snapshot.
        """

    def snapshot_raw(self) -> tuple[int, Iterator[tuple[str, str, bytes]]]:
        """``snapshot`` as ``(key, handle, values in wire form)`` rows, undecoded (warm-up)."""
        from idr.codec.values import encode_values

        seq, rows = self.snapshot()

        def raw() -> Iterator[tuple[str, str, bytes]]:
            try:
                for key, record in rows:
                    yield key, record.handle, encode_values(record.values)
            finally:
                close = getattr(rows, "close", None)
                if close is not None:
                    close()

        return seq, raw()

    @abstractmethod
    def replace_all(self, records: Iterable[tuple[str, HandleRecord]], seq: int) -> None:
        """Replace every record and the whole log by a primary's snapshot taken at ``seq``.

        One transaction. Afterwards ``last_seq() == seq`` and the log holds one marker entry
        (op ``REPLICA_COPY_OP``, no writes) at ``seq``, so the next applied entry is ``seq + 1``.
        """

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RawReads:
    """What :meth:`Store.raw_reads` gives: ``get``, a key's stored values; ``release`` ends the
    snapshot a burst of ``get`` shares (nothing for an engine without one)."""

    def __init__(self, get: Callable[[str], bytes | None]) -> None:
        self.get = get

    def release(self) -> None:
        return None
