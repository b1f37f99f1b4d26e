"""The default engine: one SQLite file per node, WAL mode, a durable commit per write.

Why these settings:

* ``journal_mode=WAL`` lets readers (the event-loop thread) keep reading a snapshot
  while the writer thread commits, so resolution never waits for a registration.
* ``synchronous=FULL`` fsyncs the WAL at every commit. ``NORMAL`` survives ``kill -9``
  but may lose the last commits on power loss, and ``commit`` promises more than that.
* ``BEGIN IMMEDIATE`` takes the write lock before the first statement, so a commit can
  never fail half-way with SQLITE_BUSY on a lock upgrade; ``busy_timeout`` covers another
  process (e.g. an offline ``idr`` command) holding the lock for a moment.

Connections: one writer connection behind a lock (the node has a single writer thread;
the lock only makes a second writer safe, not fast) and one reader connection per
thread, created on first use. Each read is its own short read transaction, so it sees
every commit that returned before it started and never a part of one.

Schema (version 1)::

    meta(name TEXT PRIMARY KEY, value TEXT)                       -- schema_version
    handles(key TEXT PRIMARY KEY, prefix TEXT, handle TEXT, vals BLOB) WITHOUT ROWID
    handles_prefix ON handles(prefix, key)                        -- list/count/prefixes
    txlog(seq INTEGER PRIMARY KEY, ts REAL, op TEXT, actor TEXT, payload BLOB)

``vals`` and a log ``payload`` are encoded as in ``idr.store.records`` (shared with the
PostgreSQL engine).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from idr.codec.values import encode_values
from idr.model.handle import normalize_key
from idr.model.value import HandleRecord
from idr.private import create_private
from idr.store.base import REPLICA_COPY_OP, Commit, LogEntry, RawEntry, Store, StoreError
from idr.store.records import (
    CHECKPOINT_PREFIX,
    Logged,
    apply_writes,
    decode_record,
    encode_writes,
    prefix_of,
)

SCHEMA_VERSION = 1

_BUSY_TIMEOUT_MS = 10_000
# Keys per statement in get_many; far below SQLITE_MAX_VARIABLE_NUMBER on any build.
_IN_CHUNK = 500

_SCHEMA = (
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE handles (key TEXT PRIMARY KEY, prefix TEXT NOT NULL, handle TEXT NOT NULL,"
    " vals BLOB NOT NULL) WITHOUT ROWID",
    "CREATE INDEX handles_prefix ON handles (prefix, key)",
    "CREATE TABLE txlog (seq INTEGER PRIMARY KEY, ts REAL NOT NULL, op TEXT NOT NULL,"
    " actor TEXT NOT NULL, payload BLOB NOT NULL)",
    f"INSERT INTO meta (name, value) VALUES ('schema_version', '{SCHEMA_VERSION}')",
)

_UPSERT = (
    "INSERT INTO handles (key, prefix, handle, vals) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET prefix = excluded.prefix, handle = excluded.handle, "
    "vals = excluded.vals"
)
_DELETE_SQL = "DELETE FROM handles WHERE key = ?"
_LOG = "INSERT INTO txlog (ts, op, actor, payload) VALUES (?, ?, ?, ?)"


class SqliteStore(Store):
    """A node's records and transaction log in one SQLite file (see the module docstring)."""

    def __init__(self, path: Path | str) -> None:
        if str(path) == ":memory:" or str(path).startswith("file:"):
            raise StoreError("SqliteStore needs a file path (each thread opens its own connection)")
        self.path = Path(path)
        if not self.path.parent.is_dir():
            # A missing data directory is a configuration mistake; creating it would hide it.
            raise StoreError(f"data directory {self.path.parent} does not exist")
        # It will hold secret keys (HS_SECKEY): created 0600 before SQLite opens it, and SQLite
        # gives its -wal and -shm files the database file's permissions.
        create_private(self.path)
        self._closed = False
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()  # guards _readers
        self._readers: dict[threading.Thread, sqlite3.Connection] = {}
        self._local = threading.local()
        self._wconn = self._connect()
        try:
            self._init_file()
        except BaseException:
            self._wconn.close()
            raise

    # -- connections ---------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            # isolation_level=None: no implicit transactions; we issue BEGIN/COMMIT.
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=_BUSY_TIMEOUT_MS / 1000
            )
        except sqlite3.Error as e:
            raise StoreError(f"cannot open store {self.path}: {e}") from e
        try:
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous = FULL")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"store {self.path}: cannot switch to WAL mode (got {mode!r})")
        except sqlite3.Error as e:
            conn.close()
            raise StoreError(f"cannot open store {self.path}: {e} (corrupt or not an SQLite file?)") from e
        except BaseException:
            conn.close()
            raise
        return conn

    def _init_file(self) -> None:
        """Create the schema in a new file; refuse a file that is someone else's or newer."""
        conn = self._wconn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if not tables:
                    for stmt in _SCHEMA:
                        conn.execute(stmt)
                elif "meta" not in tables:
                    raise StoreError(f"{self.path} is an SQLite file but not an idr store (no meta table)")
                else:
                    row = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
                    found = None if row is None else row[0]
                    if found != str(SCHEMA_VERSION):
                        raise StoreError(
                            f"store {self.path} has schema version {found!r}; this idr reads {SCHEMA_VERSION}"
                        )
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
        except sqlite3.Error as e:
            raise StoreError(f"cannot open store {self.path}: {e} (corrupt or not an SQLite file?)") from e

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection (reads never queue behind the writer's lock)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._new_reader()
        return conn

    def _new_reader(self) -> sqlite3.Connection:
        with self._rlock:
            if self._closed:
                raise StoreError("store is closed")
            # Connections of threads that have ended are closed here rather than piling up.
            for thread in [t for t in self._readers if not t.is_alive()]:
                self._readers.pop(thread).close()
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            self._readers[threading.current_thread()] = conn
            self._local.conn = conn
            return conn

    def _read_error(self, e: Exception) -> StoreError:
        if self._closed:
            return StoreError("store is closed")
        return StoreError(f"read from store {self.path} failed: {e}")

    # -- reads -----------------------------------------------------------------------

    def get(self, key: str) -> HandleRecord | None:
        try:
            row = self._reader().execute("SELECT handle, vals FROM handles WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as e:
            raise self._read_error(e) from e
        if row is None:
            return None
        return decode_record(key, row[0], row[1])

    def get_many(self, keys: Sequence[str]) -> dict[str, HandleRecord]:
        wanted = list(dict.fromkeys(keys))
        out: dict[str, HandleRecord] = {}
        if not wanted:
            return out
        conn = self._reader()
        try:
            with _read_snapshot(conn, len(wanted) > _IN_CHUNK):
                for i in range(0, len(wanted), _IN_CHUNK):
                    chunk = wanted[i : i + _IN_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    sql = f"SELECT key, handle, vals FROM handles WHERE key IN ({marks})"
                    for key, handle, vals in conn.execute(sql, chunk).fetchall():
                        out[key] = decode_record(key, handle, vals)
        except sqlite3.Error as e:
            raise self._read_error(e) from e
        return out

    def list_handles(self, prefix: str, after: str | None = None, limit: int = 1000) -> list[str]:
        if limit <= 0:
            return []
        conn = self._reader()
        try:
            if after is None:
                cur = conn.execute(
                    "SELECT handle FROM handles WHERE prefix = ? ORDER BY key LIMIT ?", (prefix, limit)
                )
            else:
                cur = conn.execute(
                    "SELECT handle FROM handles WHERE prefix = ? AND key > ? ORDER BY key LIMIT ?",
                    (prefix, after, limit),
                )
            return [r[0] for r in cur.fetchall()]
        except sqlite3.Error as e:
            raise self._read_error(e) from e

    def count(self, prefix: str | None = None) -> int:
        """Counts index entries: O(n) in the handles counted (a covering index scan)."""
        conn = self._reader()
        try:
            if prefix is None:
                row = conn.execute("SELECT count(*) FROM handles").fetchone()
            else:
                row = conn.execute("SELECT count(*) FROM handles WHERE prefix = ?", (prefix,)).fetchone()
        except sqlite3.Error as e:
            raise self._read_error(e) from e
        return int(row[0])

    def prefixes(self) -> list[str]:
        """Distinct key prefixes, sorted: one index seek per prefix, however many handles."""
        conn = self._reader()
        out: list[str] = []
        try:
            with _read_snapshot(conn, True):
                row = conn.execute("SELECT prefix FROM handles ORDER BY prefix LIMIT 1").fetchone()
                while row is not None:
                    out.append(row[0])
                    row = conn.execute(
                        "SELECT prefix FROM handles WHERE prefix > ? ORDER BY prefix LIMIT 1", (row[0],)
                    ).fetchone()
        except sqlite3.Error as e:
            raise self._read_error(e) from e
        return out

    def checkpoint(self, name: str) -> int:
        try:
            row = (
                self._reader()
                .execute("SELECT value FROM meta WHERE name = ?", (CHECKPOINT_PREFIX + name,))
                .fetchone()
            )
        except sqlite3.Error as e:
            raise self._read_error(e) from e
        return 0 if row is None else int(row[0])

    def last_seq(self) -> int:
        try:
            row = self._reader().execute("SELECT coalesce(max(seq), 0) FROM txlog").fetchone()
        except sqlite3.Error as e:
            raise self._read_error(e) from e
        return int(row[0])

    def log_raw_since(self, seq: int, limit: int = 1000) -> list[RawEntry]:
        if limit <= 0:
            return []
        try:
            rows = (
                self._reader()
                .execute(
                    "SELECT seq, ts, op, actor, payload FROM txlog WHERE seq > ? ORDER BY seq LIMIT ?",
                    (seq, limit),
                )
                .fetchall()
            )
        except sqlite3.Error as e:
            raise self._read_error(e) from e
        return [RawEntry(int(s), float(ts), op, actor, bytes(payload)) for s, ts, op, actor, payload in rows]

    @property
    def where(self) -> str:
        return f"in {self.path}"

    def first_seq(self) -> int:
        try:
            row = self._reader().execute("SELECT coalesce(min(seq), 0) FROM txlog").fetchone()
        except sqlite3.Error as e:
            raise self._read_error(e) from e
        return int(row[0])

    def entry_time(self, seq: int) -> float | None:
        try:
            row = (
                self._reader()
                .execute("SELECT ts FROM txlog WHERE seq >= ? ORDER BY seq LIMIT 1", (seq,))
                .fetchone()
            )
        except sqlite3.Error as e:
            raise self._read_error(e) from e
        return None if row is None else float(row[0])

    def truncate_log(self, before: int, limit: int = 10_000) -> int:
        """Freed pages are reused by later writes (the file stops growing; it does not shrink
        without VACUUM)."""
        if limit <= 0:
            return 0
        with self._write(f"truncating the log of {self.path} failed") as conn:
            last = int(conn.execute("SELECT coalesce(max(seq), 0) FROM txlog").fetchone()[0])
            cur = conn.execute(
                "DELETE FROM txlog WHERE seq IN (SELECT seq FROM txlog WHERE seq < ? ORDER BY seq LIMIT ?)",
                (min(before, last), limit),
            )
            return max(0, cur.rowcount)

    # -- writes ----------------------------------------------------------------------

    def commit_many(self, commits: Sequence[Commit]) -> list[int]:
        """One IMMEDIATE transaction holding every commit and its log entry: one WAL fsync."""
        if not commits:
            return []
        seqs: list[int] = []
        what = commits[0].op if len(commits) == 1 else f"{len(commits)} grouped writes"
        with self._write(f"commit of {what!r} to {self.path} failed, nothing written") as conn:
            now = time.time()
            for c in commits:
                logged = apply_writes(conn.execute, _UPSERT, _DELETE_SQL, c.writes)
                seq = conn.execute(_LOG, (now, c.op, c.actor, encode_writes(logged))).lastrowid
                if seq is None:  # pragma: no cover - an INSERT always sets lastrowid
                    raise StoreError("log insert returned no sequence number")
                seqs.append(seq)
        return seqs

    def bulk_load(
        self,
        records: Iterable[HandleRecord],
        op: str = "import",
        actor: str = "",
        checkpoint: tuple[str, int] | None = None,
    ) -> int:
        """One transaction, one log entry holding every record: callers importing millions
        should call this per batch (~10,000 records) so a log entry stays a few MB.
        A checkpoint is a ``meta`` row ``import:<name>`` (no schema change)."""

        def apply(conn: sqlite3.Connection) -> Logged:
            logged: Logged = []

            def rows() -> Iterator[tuple[str, str, str, bytes]]:
                for rec in records:
                    key = normalize_key(rec.handle)
                    vals = encode_values(rec.values)
                    logged.append((key, rec.handle, vals))
                    yield key, prefix_of(key), rec.handle, vals

            conn.executemany(_UPSERT, rows())
            if checkpoint is not None:
                conn.execute(
                    "INSERT INTO meta (name, value) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (CHECKPOINT_PREFIX + checkpoint[0], str(checkpoint[1])),
                )
            return logged

        return self._transaction(op, actor, apply)

    def _transaction(
        self,
        op: str,
        actor: str,
        apply: Callable[[sqlite3.Connection], Logged],
    ) -> int:
        """Run ``apply`` and append its log entry in one IMMEDIATE transaction, or nothing."""
        with self._write(f"commit of {op!r} to {self.path} failed, nothing written") as conn:
            logged = apply(conn)
            seq = conn.execute(_LOG, (time.time(), op, actor, encode_writes(logged))).lastrowid
        if seq is None:  # pragma: no cover - an INSERT always sets lastrowid
            raise StoreError("log insert returned no sequence number")
        return seq

    @contextmanager
    def _write(self, failed: str) -> Iterator[sqlite3.Connection]:
        """The writer connection inside one IMMEDIATE transaction, committed when the block
        ends (unless it rolled back itself) and rolled back when it raises. An engine error
        becomes ``StoreError(f"{failed}: …")``."""
        with self._wlock:
            if self._closed:
                raise StoreError("store is closed")
            conn = self._wconn
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    if conn.in_transaction:
                        conn.execute("COMMIT")
                except BaseException:
                    _rollback(conn)
                    raise
            except StoreError:
                raise
            except Exception as e:
                raise StoreError(f"{failed}: {e!r}") from e

    # -- replication -------------------------------------------------------------------

    def apply_entry(self, entry: LogEntry) -> bool:
        """The primary's entry with its own seq, payload re-encoded exactly as ``commit`` does."""
        return self.apply_entries([entry]) == 1

    def apply_entries(self, entries: Sequence[LogEntry]) -> int:
        """Consecutive primary entries in one transaction (one fsync); those held are skipped."""
        if not entries:
            return 0
        applied = 0
        with self._write(f"applying entries {entries[0].seq}… to {self.path} failed") as conn:
            last = int(conn.execute("SELECT coalesce(max(seq), 0) FROM txlog").fetchone()[0])
            for entry in entries:
                if entry.seq <= last:
                    continue
                if entry.seq != last + 1:
                    raise StoreError(f"log gap: entry {entry.seq} does not follow {last}")
                logged = apply_writes(conn.execute, _UPSERT, _DELETE_SQL, entry.writes)
                conn.execute(
                    "INSERT INTO txlog (seq, ts, op, actor, payload) VALUES (?, ?, ?, ?, ?)",
                    (entry.seq, entry.timestamp, entry.op, entry.actor, encode_writes(logged)),
                )
                last = entry.seq
                applied += 1
            if not applied:
                _rollback(conn)
        return applied

    def snapshot(self) -> tuple[int, Iterator[tuple[str, HandleRecord]]]:
        """A private connection holds one read transaction until the iterator ends or closes."""
        conn = self._connect()
        try:
            conn.execute("PRAGMA query_only = ON")
            conn.execute("BEGIN")
            seq = int(conn.execute("SELECT coalesce(max(seq), 0) FROM txlog").fetchone()[0])
        except BaseException:
            conn.close()
            raise

        def rows() -> Iterator[tuple[str, HandleRecord]]:
            try:
                for key, handle, vals in conn.execute("SELECT key, handle, vals FROM handles ORDER BY key"):
                    yield key, decode_record(key, handle, vals)
            except sqlite3.Error as e:
                raise self._read_error(e) from e
            finally:
                _rollback(conn)
                conn.close()

        return seq, rows()

    def replace_all(self, records: Iterable[tuple[str, HandleRecord]], seq: int) -> None:
        with self._write(f"replacing the contents of {self.path} failed") as conn:
            conn.execute("DELETE FROM handles")
            conn.execute("DELETE FROM txlog")
            conn.executemany(
                _UPSERT,
                ((key, prefix_of(key), rec.handle, encode_values(rec.values)) for key, rec in records),
            )
            if seq > 0:
                conn.execute(
                    "INSERT INTO txlog (seq, ts, op, actor, payload) VALUES (?, ?, ?, ?, ?)",
                    (seq, time.time(), REPLICA_COPY_OP, "", encode_writes([])),
                )

    def close(self) -> None:
        """Close every connection; waits for a commit in progress. Idempotent."""
        with self._wlock:
            if self._closed:
                return
            self._closed = True
            with self._rlock:
                for conn in self._readers.values():
                    conn.close()
                self._readers.clear()
            self._wconn.close()


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open; a failure here must not mask the cause."""
    if conn.in_transaction:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


@contextmanager
def _read_snapshot(conn: sqlite3.Connection, needed: bool) -> Iterator[None]:
    """Make several SELECTs one consistent snapshot (a deferred read transaction)."""
    if not needed:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        _rollback(conn)
