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

Reverse lookup (``idr.store.search``; its mode is the meta row ``search_index``, tables made
or dropped when a store is opened with another mode, and built for stores made before it)::

    value_index(id INTEGER PRIMARY KEY, type TEXT, data TEXT, key TEXT)
    value_index_td ON value_index(type, data, key) UNIQUE      -- exact and prefix patterns
    value_index_key ON value_index(key)                         -- replacing a record's entries
    value_trgm USING fts5(data, content=value_index, tokenize=trigram case_sensitive 1)  -- full

Every write path (``commit``, ``bulk_load``, ``apply_entry``, ``replace_all``) updates them
inside its transaction, so a search never sees a record and an index that disagree.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from functools import cache
from pathlib import Path

from idr.codec.values import encode_values
from idr.model.handle import normalize_key
from idr.model.value import HandleRecord
from idr.private import create_private
from idr.store import readahead
from idr.store.base import REPLICA_COPY_OP, Commit, LogEntry, RawEntry, RawReads, Store, StoreError
from idr.store.records import (
    CHECKPOINT_PREFIX,
    GroupRows,
    Logged,
    decode_record,
    encode_writes,
    group_rows,
    prefix_of,
)
from idr.store.search import (
    DEFAULT_MODE,
    MODE_FULL,
    MODE_OFF,
    MODES,
    Dialect,
    SearchError,
    Term,
    glob_pattern,
    index_entries,
    search_sql,
)
from idr.store.tail import LogTail

SCHEMA_VERSION = 1

_BUSY_TIMEOUT_MS = 10_000
_READ_MMAP_BYTES = 1 << 40  # readers map the whole file (SQLite caps it at SQLITE_MAX_MMAP_SIZE)
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
_UPSERT_ROWS = (
    "INSERT INTO handles (key, prefix, handle, vals) VALUES {} "
    "ON CONFLICT (key) DO UPDATE SET prefix = excluded.prefix, handle = excluded.handle, "
    "vals = excluded.vals"
)
_LOG = "INSERT INTO txlog (ts, op, actor, payload) VALUES (?, ?, ?, ?)"

_SEARCH_META = "search_index"
_VALUE_INDEX = (
    "CREATE TABLE value_index (id INTEGER PRIMARY KEY, type TEXT NOT NULL, data TEXT NOT NULL,"
    " key TEXT NOT NULL)",
    "CREATE UNIQUE INDEX value_index_td ON value_index (type, data, key)",
    "CREATE INDEX value_index_key ON value_index (key)",
)
# detail=none: only which rows hold a trigram, enough for LIKE/GLOB (checked against the row).
_TRIGRAMS = (
    "CREATE VIRTUAL TABLE value_trgm USING fts5(data, content='value_index', content_rowid='id',"
    " tokenize='trigram case_sensitive 1', detail='none', columnsize=0)"
)
_VI_INSERT = "INSERT OR IGNORE INTO value_index (type, data, key) VALUES (?, ?, ?)"
_VI_DELETE = "DELETE FROM value_index WHERE key = ?"
_TRGM_INSERT_AFTER = "INSERT INTO value_trgm (rowid, data) SELECT id, data FROM value_index WHERE id > ?"
_TRGM_DELETE_IN = (
    "INSERT INTO value_trgm (value_trgm, rowid, data) "
    "SELECT 'delete', id, data FROM value_index WHERE key IN (VALUES {})"
)
_TRGM_DELETE = (
    "INSERT INTO value_trgm (value_trgm, rowid, data) "
    "SELECT 'delete', id, data FROM value_index WHERE key = ?"
)


class SqliteStore(Store):
    """A node's records and transaction log in one SQLite file (see the module docstring)."""

    def __init__(self, path: Path | str, *, search_mode: str | None = None) -> None:
        """``search_mode``: the reverse-lookup index wanted (``idr.store.search.MODES``); None
        keeps the store's own (``full`` for a new store)."""
        if search_mode is not None and search_mode not in MODES:
            raise StoreError(f"search index mode must be one of {', '.join(MODES)}, not {search_mode!r}")
        self._search_mode = MODE_OFF
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
        self._held: list[sqlite3.Connection] = []  # raw_reads connections
        self.read_ahead: readahead.ReadAhead | None = None  # started by the first raw_reads
        self._tail = LogTail()
        self._wconn = self._connect()
        try:
            self._init_file(search_mode)
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

    def _init_file(self, search_mode: str | None) -> None:
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
                self._search_mode = _value_index_mode(conn, search_mode)
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
            # Reads through a memory map: a point read of a page the OS already caches costs no
            # read() call and no copy (half the CPU of a cold-started node's first reads).
            conn.execute(f"PRAGMA mmap_size = {_READ_MMAP_BYTES}")
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

    def reopen_spec(self) -> tuple[str, str] | None:
        return ("sqlite", str(self.path))

    def get_raw(self, key: str) -> tuple[str, bytes] | None:
        try:
            row = self._reader().execute("SELECT handle, vals FROM handles WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as e:
            raise self._read_error(e) from e
        return None if row is None else (row[0], row[1])

    def raw_reads(self, defer: Callable[[Callable[[], None]], object]) -> RawReads:
        """A burst of point reads shares one read transaction (see :class:`_HeldReads`)."""
        with self._rlock:
            if self._closed:
                raise StoreError("store is closed")
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            conn.execute(f"PRAGMA mmap_size = {_READ_MMAP_BYTES}")
            self._held.append(conn)
            if self.read_ahead is None:  # the reads go through the mmap: have the file cached
                wal = self.path.with_name(self.path.name + "-wal")
                self.read_ahead = readahead.ReadAhead([self.path, wal])
        return _HeldReads(conn, defer, self._read_error)

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

    def log_recent(self, seq: int, limit: int = 1000) -> list[RawEntry]:
        return self._tail.since(seq, limit) if limit > 0 else []

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

    # -- reverse lookup -----------------------------------------------------------------

    @property
    def search_mode(self) -> str:
        return self._search_mode

    def search(self, terms: Sequence[Term], limit: int = 1000, offset: int = 0) -> list[str]:
        sql, params = self._search_sql(terms, limit, offset)
        try:
            return [r[0] for r in self._reader().execute(sql, params).fetchall()]
        except sqlite3.Error as e:
            raise self._read_error(e) from e

    def search_plan(self, terms: Sequence[Term], limit: int = 1000, offset: int = 0) -> str:
        """SQLite's EXPLAIN QUERY PLAN of a search, one step per line (for tests and benches)."""
        sql, params = self._search_sql(terms, limit, offset)
        rows = self._reader().execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
        return "\n".join(str(r[3]) for r in rows)

    def _search_sql(self, terms: Sequence[Term], limit: int, offset: int) -> tuple[str, list[object]]:
        if self._search_mode == MODE_OFF:
            raise SearchError("reverse lookup is off for this store (search index mode 'off')")
        return search_sql(terms, _FULL if self._search_mode == MODE_FULL else _EXACT, limit, offset)

    # -- writes ----------------------------------------------------------------------

    def commit_many(self, commits: Sequence[Commit]) -> list[int]:
        """One IMMEDIATE transaction holding every commit and its log entry: one WAL fsync.
        The group's rows go set-wise (``_write_group``): a dozen statements per group, not
        six per write — each statement releases and retakes the GIL, and the writer thread
        waits to retake it while the event loop runs (up to the switch interval each time)."""
        if not commits:
            return []
        what = commits[0].op if len(commits) == 1 else f"{len(commits)} grouped writes"
        with self._write(f"commit of {what!r} to {self.path} failed, nothing written") as conn:
            now = time.time()
            payloads, rows = group_rows([c.writes for c in commits])
            # The seqs SQLite would give (max + 1), chosen here so one statement logs the group.
            last = int(conn.execute("SELECT coalesce(max(seq), 0) FROM txlog").fetchone()[0])
            seqs = list(range(last + 1, last + 1 + len(commits)))
            _write_group(conn, self._search_mode, rows)
            logged = [(seq, now, c.op, c.actor, p) for seq, c, p in zip(seqs, commits, payloads, strict=True)]
            _each_chunk(conn, "INSERT INTO txlog (seq, ts, op, actor, payload) VALUES {}", logged)
            self._tail.stage(last, [RawEntry(*row) for row in logged])
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
            written: list[tuple[str, HandleRecord]] = []

            def rows() -> Iterator[tuple[str, str, str, bytes]]:
                for rec in records:
                    key = normalize_key(rec.handle)
                    vals = encode_values(rec.values)
                    logged.append((key, rec.handle, vals))
                    written.append((key, rec))
                    yield key, prefix_of(key), rec.handle, vals

            conn.executemany(_UPSERT, rows())
            if self._search_mode != MODE_OFF:
                _reindex_batch(conn, self._search_mode, written)
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
                        self._tail.committed()
                    else:  # the block rolled back itself
                        self._tail.rolled_back()
                except BaseException:
                    self._tail.rolled_back()
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
        with self._write(f"applying entries {entries[0].seq}… to {self.path} failed") as conn:
            last = int(conn.execute("SELECT coalesce(max(seq), 0) FROM txlog").fetchone()[0])
            todo: list[LogEntry] = []
            for entry in entries:
                if entry.seq <= last:
                    continue
                if entry.seq != last + 1:
                    raise StoreError(f"log gap: entry {entry.seq} does not follow {last}")
                todo.append(entry)
                last = entry.seq
            applied = len(todo)
            if todo:
                payloads, rows = group_rows([e.writes for e in todo])
                _write_group(conn, self._search_mode, rows)
                logged = [(e.seq, e.timestamp, e.op, e.actor, p) for e, p in zip(todo, payloads, strict=True)]
                _each_chunk(conn, "INSERT INTO txlog (seq, ts, op, actor, payload) VALUES {}", logged)
                self._tail.stage(todo[0].seq - 1, [RawEntry(*row) for row in logged])
            if not applied:
                _rollback(conn)
        return applied

    def snapshot(self) -> tuple[int, Iterator[tuple[str, HandleRecord]]]:
        """A private connection holds one read transaction until the iterator ends or closes."""
        seq, rows = self.snapshot_raw()

        def records() -> Iterator[tuple[str, HandleRecord]]:
            try:
                for key, handle, vals in rows:
                    yield key, decode_record(key, handle, vals)
            finally:
                rows.close()

        return seq, records()

    def snapshot_raw(self) -> tuple[int, Generator[tuple[str, str, bytes], None, None]]:
        conn = self._connect()
        try:
            conn.execute("PRAGMA query_only = ON")
            conn.execute("BEGIN")
            seq = int(conn.execute("SELECT coalesce(max(seq), 0) FROM txlog").fetchone()[0])
        except BaseException:
            conn.close()
            raise

        def rows() -> Generator[tuple[str, str, bytes], None, None]:
            try:
                yield from conn.execute("SELECT key, handle, vals FROM handles ORDER BY key")
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
            if self._search_mode != MODE_OFF:
                _build_value_index(conn, self._search_mode)
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
                for conn in [*self._readers.values(), *self._held]:
                    conn.close()
                self._readers.clear()
                self._held.clear()
            self._wconn.close()
            if self.read_ahead is not None:
                self.read_ahead.close()


class _HeldReads(RawReads):
    """Point reads of raw rows on one connection whose read transaction spans a burst.

    In WAL mode every read transaction costs SQLite three system calls (a shared lock on the
    database file and on a WAL read mark, taken and released with ``fcntl``, and an ``fstat``):
    about as much CPU as the lookup itself through the memory map. A cold native node answers
    each miss with one point read, a burst of them per turn of the event loop, so the first read
    opens a transaction (``BEGIN``) that the next ones share and ``release`` ends — called
    through ``defer`` (the native server: ``READ_HOLD``, 2 ms, later, so the bursts of many turns
    share it) and by the answer cache whenever a commit was announced since: a snapshot is never
    older than the last commit the caller heard of, and never holds back a WAL checkpoint for
    longer than the caller's hold."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        defer: Callable[[Callable[[], None]], object],
        error: Callable[[Exception], StoreError],
    ) -> None:
        super().__init__(self._get)
        self._conn = conn
        self._cur = conn.cursor()
        self._defer = defer
        self._error = error
        self._held = False

    def _get(self, key: str) -> bytes | None:
        cur = self._cur
        try:
            if not self._held:
                cur.execute("BEGIN")
                self._held = True
                self._defer(self.release)
            row = cur.execute("SELECT vals FROM handles WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as e:
            raise self._error(e) from e
        return None if row is None else row[0]

    def release(self) -> None:
        if self._held:
            self._held = False
            with suppress(sqlite3.Error):  # closed with the store: nothing is held any more
                self._cur.execute("ROLLBACK")


def _trigram_term(t: Term) -> tuple[str, list[object]]:
    # CROSS JOIN fixes the order: the trigram index first, then each candidate's row.
    return (
        "SELECT v.key AS key FROM value_trgm CROSS JOIN value_index v ON v.id = value_trgm.rowid "
        "WHERE value_trgm.data GLOB ? AND v.type = ?",
        [glob_pattern(t.pattern), t.type],
    )


# The per-handle check names the key index: SQLite would otherwise read every entry of the type.
_EXACT = Dialect("?", "GLOB", glob_pattern, "value_index f INDEXED BY value_index_key")
_FULL = replace(_EXACT, substring=_trigram_term)


def _value_index_mode(conn: sqlite3.Connection, wanted: str | None) -> str:
    """Inside the opening transaction: the store's search index as ``wanted`` (None: as it is;
    a store from before the index gets the default), built or dropped to match."""
    row = conn.execute("SELECT value FROM meta WHERE name = ?", (_SEARCH_META,)).fetchone()
    have = None if row is None else str(row[0])
    mode = wanted or have or DEFAULT_MODE
    if mode == have:
        return mode
    conn.execute("DROP TABLE IF EXISTS value_trgm")
    conn.execute("DROP TABLE IF EXISTS value_index")
    if mode != MODE_OFF:
        for stmt in _VALUE_INDEX:
            conn.execute(stmt)
        if mode == MODE_FULL:
            conn.execute(_TRIGRAMS)
        _build_value_index(conn, mode)
    conn.execute(
        "INSERT INTO meta (name, value) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (_SEARCH_META, mode),
    )
    return mode


# Rows per multi-row statement: a group of n rows takes n's binary digits (a few statements),
# from a handful of statement texts the connection's statement cache keeps.
_CHUNKS = (128, 64, 32, 16, 8, 4, 2, 1)


@cache
def _rows_sql(sql: str, width: int, rows: int) -> str:
    one = "(" + ", ".join("?" * width) + ")"
    return sql.format(", ".join([one] * rows))


def _each_chunk(conn: sqlite3.Connection, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
    """``sql`` with its ``{}`` replaced by ``(?, …), (?, …)`` for a chunk of ``rows`` (a VALUES
    list, or ``IN (VALUES {})``), run once per chunk: one SQLite step for many rows, where
    ``executemany`` steps — and releases and retakes the GIL — once per row."""
    i = 0
    while i < len(rows):
        size = next(c for c in _CHUNKS if c <= len(rows) - i)
        chunk = rows[i : i + size]
        conn.execute(_rows_sql(sql, len(chunk[0]), size), [x for row in chunk for x in row])
        i += size


def _write_group(conn: sqlite3.Connection, mode: str, rows: GroupRows) -> None:
    """Each key's final state after a group (``group_rows``) in a few statements: its old
    reverse-lookup entries out, deleted rows out, rows upserted, new entries in."""
    final, records = rows
    keys = [(k,) for k in final]
    if mode != MODE_OFF:
        if mode == MODE_FULL:
            _each_chunk(conn, _TRGM_DELETE_IN, keys)
        _each_chunk(conn, "DELETE FROM value_index WHERE key IN (VALUES {})", keys)
    deletes = [(k,) for k, h, _ in final.values() if h is None]
    _each_chunk(conn, "DELETE FROM handles WHERE key IN (VALUES {})", deletes)
    puts = [(k, prefix_of(k), h, v) for k, h, v in final.values() if h is not None]
    _each_chunk(conn, _UPSERT_ROWS, puts)
    if mode == MODE_OFF:
        return
    entries = [e for k, rec in records.items() if rec is not None for e in index_entries(k, rec)]
    if not entries:
        return
    top = int(conn.execute("SELECT coalesce(max(id), 0) FROM value_index").fetchone()[0])
    _each_chunk(conn, "INSERT OR IGNORE INTO value_index (type, data, key) VALUES {}", entries)
    if mode == MODE_FULL:
        conn.execute(_TRGM_INSERT_AFTER, (top,))


def _reindex_batch(conn: sqlite3.Connection, mode: str, written: Sequence[tuple[str, HandleRecord]]) -> None:
    """A bulk load's index update in a few statements: the batch's old entries out, then the
    new entries of each key's last record in (one executemany, one trigram insert)."""
    last = dict(written)
    keys = [(k,) for k in last]
    if mode == MODE_FULL:
        conn.executemany(_TRGM_DELETE, keys)
    conn.executemany(_VI_DELETE, keys)
    top = int(conn.execute("SELECT coalesce(max(id), 0) FROM value_index").fetchone()[0])
    conn.executemany(_VI_INSERT, (e for key, rec in last.items() for e in index_entries(key, rec)))
    if mode == MODE_FULL:
        conn.execute(_TRGM_INSERT_AFTER, (top,))


def _build_value_index(conn: sqlite3.Connection, mode: str) -> None:
    """Replace the index by one built from every stored record (one pass over ``handles``)."""
    conn.execute("DELETE FROM value_index")

    def entries() -> Iterator[tuple[str, str, str]]:
        for key, handle, vals in conn.execute("SELECT key, handle, vals FROM handles"):
            yield from index_entries(key, decode_record(key, handle, vals))

    conn.executemany(_VI_INSERT, entries())
    if mode == MODE_FULL:
        conn.execute("INSERT INTO value_trgm (value_trgm) VALUES ('rebuild')")


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
