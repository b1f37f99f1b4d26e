"""The scale engine: a node's records and log in a PostgreSQL database (psycopg 3, pooled).

Same contract as the SQLite engine (the shared suite in tests/store runs on both); what
changes is where the bytes live and how many machines can write and read them.

Why this schema::

    meta(name TEXT PRIMARY KEY, value TEXT)          -- schema_version, partitions, import:<file>
    handles(key TEXT COLLATE "C" PRIMARY KEY, prefix TEXT COLLATE "C", handle TEXT, vals BYTEA)
        PARTITION BY HASH (key)                      -- handles_p0 … handles_p<N-1>
    handles (prefix, key)                            -- list/count/prefixes, per partition
    txseq(id=1, seq BIGINT)                          -- the one-row sequence counter
    txlog(seq BIGINT PRIMARY KEY, ts FLOAT8, op TEXT, actor TEXT, payload BYTEA)

* One row per handle with its values pre-encoded (``idr.codec.values``): a resolution is
  one primary-key probe in one partition and no decoding of columns.
* Hash partitions keep each partition's index small enough to stay cached, let VACUUM and
  index builds work per partition, and are the unit to move to another tablespace/disk.
  The count is fixed when the store is created (stored in ``meta``).
* ``COLLATE "C"`` makes key order byte order (= code point order for UTF-8), as SQLite's
  BINARY collation: listing pages identically on both engines whatever the server locale.
* Listing is ``WHERE prefix = $1 AND key > $2 ORDER BY key LIMIT $3``: a Merge Append of
  one index range per partition, each stopping after ``limit`` rows; never OFFSET.
* Sequence numbers come from ``txseq`` updated inside the writing transaction (a row lock
  held to COMMIT), so they are gap-free and in commit order however many writers a node
  runs; ``nextval`` would leave gaps on rollback and could commit out of order.
* ``synchronous_commit = on`` for every session: ``commit`` returns after the WAL is
  flushed (and, with synchronous standbys configured on the server, after they hold it).
* Bulk loads ``COPY`` (binary) into a transaction-scoped temp table, then one
  ``INSERT … ON CONFLICT (key) DO UPDATE`` and one log entry, in one transaction.

Row values and the log payload are encoded as by the SQLite engine (``idr.store.records``),
so logs read the same from either engine.

Reverse lookup (``idr.store.search``; mode in the meta row ``search_index``, changed when the
store is opened with another, built for stores made before it)::

    value_index(type TEXT COLLATE "C", data TEXT COLLATE "C", key TEXT COLLATE "C",
                PRIMARY KEY (type, data, key))                -- exact and prefix patterns
    value_index (key)                                         -- replacing a record's entries
    value_index USING gin (data gin_trgm_ops)                 -- mode full: substrings (pg_trgm)

Every write path updates it in its own transaction (a bulk load: one DELETE and one COPY).

Read-only mode (``read_only=True``) is for a mirror reading a streaming-replication hot
standby: it never creates or changes anything and every write raises ``StoreError``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from idr.codec.values import encode_values
from idr.model.handle import normalize_key
from idr.model.value import HandleRecord
from idr.store.base import (
    REPLICA_COPY_OP,
    Commit,
    LogEntry,
    RawEntry,
    Store,
    StoreError,
    StoreUnavailable,
)
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
    index_entries,
    like_pattern,
    search_sql,
)

SCHEMA_VERSION = 1
# Any constant: serialises schema creation between processes opening one database at once.
_SCHEMA_LOCK = 0x1D2_0001
_CONNECT_TIMEOUT_S = 10.0
# How long the pool retries one lost connection (backoff 1, 2, 4 … s) before it gives the slot
# up; the next request starts a fresh attempt at once. Short, so that after a failover the
# store reconnects within about 2 s of the new primary accepting writes, however long the
# outage was (psycopg_pool's default, 300 s, would back off up to minutes).
_RECONNECT_TIMEOUT_S = 5.0
# Once a request has waited the whole timeout for a connection in vain, the store counts as down
# until a connection is made again: meanwhile requests wait this long, not the whole timeout, so
# a queue of requests (the writer's) is refused in turn quickly instead of 10 s each.
_DOWN_WAIT_S = 0.5

P = ParamSpec("P")
T = TypeVar("T")


class _LostConnection(StoreUnavailable):
    """A pooled connection turned out dead (its server restarted or failed over)."""


def _retried(read: Callable[Concatenate[PostgresStore, P], T]) -> Callable[Concatenate[PostgresStore, P], T]:
    """A read that found its pooled connection dead runs once more on another (reads are
    idempotent): after a failover, idle connections to the old primary cost no answer."""

    def run(store: PostgresStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return read(store, *args, **kwargs)
        except _LostConnection:
            return read(store, *args, **kwargs)

    run.__name__, run.__qualname__, run.__doc__ = read.__name__, read.__qualname__, read.__doc__
    return run


# Take the next sequence number and append the entry in one round trip. The counter row
# stays locked until COMMIT, which is what makes numbers gap-free and commit-ordered.
_LOG = (
    "WITH s AS (UPDATE txseq SET seq = seq + 1 WHERE id = 1 RETURNING seq) "
    "INSERT INTO txlog (seq, ts, op, actor, payload) "
    "SELECT s.seq, extract(epoch FROM clock_timestamp()), %s, %s, %s FROM s RETURNING seq"
)
# A whole group commit as one statement (data-modifying CTEs, all on one snapshot): the counter
# row takes the group's seqs (locked to COMMIT, it orders groups like single commits) and the
# log its entries; deleted rows out; rows upserted; of the written keys' reverse-lookup entries, those
# not among the new ones out, and the new ones in (an entry already there is kept, not deleted
# and re-inserted: CTEs do not see each other's changes, so one row must not be touched twice).
_GROUP_LOG = (
    "WITH s AS (UPDATE txseq SET seq = seq + %(n)s WHERE id = 1 RETURNING seq), "
    "lg AS (INSERT INTO txlog (seq, ts, op, actor, payload) "
    "SELECT s.seq - %(n)s + e.ord, extract(epoch FROM clock_timestamp()), e.op, e.actor, e.payload "
    "FROM s, unnest(%(ops)s::text[], %(actors)s::text[], %(payloads)s::bytea[]) "
    "WITH ORDINALITY AS e(op, actor, payload, ord) RETURNING seq), "
    "d AS (DELETE FROM handles WHERE key = ANY(%(deletes)s::text[])), "
    "u AS (INSERT INTO handles (key, prefix, handle, vals) "
    "SELECT * FROM unnest(%(keys)s::text[], %(prefixes)s::text[], %(handles)s::text[], %(vals)s::bytea[]) "
    "ON CONFLICT (key) DO UPDATE SET prefix = EXCLUDED.prefix, handle = EXCLUDED.handle, "
    "vals = EXCLUDED.vals) "
)
_GROUP_UNINDEXED = _GROUP_LOG + "SELECT seq FROM lg"
_GROUP = (
    _GROUP_LOG.rstrip() + ", "
    "n AS (SELECT * FROM unnest(%(vi_types)s::text[], %(vi_data)s::text[], %(vi_keys)s::text[]) "
    "AS n(type, data, key)), "
    "vd AS (DELETE FROM value_index v WHERE v.key = ANY(%(written)s::text[]) AND NOT EXISTS "
    '(SELECT 1 FROM n WHERE n.type COLLATE "C" = v.type AND n.data COLLATE "C" = v.data '
    'AND n.key COLLATE "C" = v.key)), '
    "vi AS (INSERT INTO value_index (type, data, key) SELECT type, data, key FROM n "
    "ON CONFLICT DO NOTHING) "
    "SELECT seq FROM lg"
)
_UPSERT_MANY = (
    "INSERT INTO handles (key, prefix, handle, vals) "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bytea[]) "
    "ON CONFLICT (key) DO UPDATE SET prefix = EXCLUDED.prefix, handle = EXCLUDED.handle, "
    "vals = EXCLUDED.vals"
)
_DELETE_MANY = "DELETE FROM handles WHERE key = ANY(%s::text[])"
_LOG_ENTRIES = (  # a mirror's: the primary's seqs and timestamps
    "INSERT INTO txlog (seq, ts, op, actor, payload) "
    "SELECT * FROM unnest(%s::bigint[], %s::float8[], %s::text[], %s::text[], %s::bytea[])"
)
_VI_DELETE_MANY = "DELETE FROM value_index WHERE key = ANY(%s::text[])"
_VI_INSERT_MANY = (
    "INSERT INTO value_index (type, data, key) "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]) ON CONFLICT DO NOTHING"
)
_STAGE = (
    'CREATE TEMP TABLE idr_stage (ord BIGINT, key TEXT COLLATE "C", prefix TEXT COLLATE "C", '
    "handle TEXT, vals BYTEA) ON COMMIT DROP"
)
# Last occurrence of a key wins, as with row-by-row upserts (ON CONFLICT may not touch
# one row twice in a statement).
_MERGE_STAGE = (
    "INSERT INTO handles (key, prefix, handle, vals) "
    "SELECT DISTINCT ON (key) key, prefix, handle, vals FROM idr_stage ORDER BY key, ord DESC "
    "ON CONFLICT (key) DO UPDATE SET prefix = EXCLUDED.prefix, handle = EXCLUDED.handle, "
    "vals = EXCLUDED.vals"
)
_SET_META = (
    "INSERT INTO meta (name, value) VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value"
)
_SEARCH_META = "search_index"
_VALUE_INDEX = (
    'CREATE TABLE value_index (type TEXT COLLATE "C" NOT NULL, data TEXT COLLATE "C" NOT NULL, '
    'key TEXT COLLATE "C" NOT NULL, PRIMARY KEY (type, data, key))',
    "CREATE INDEX value_index_key ON value_index (key)",
)
_TRIGRAMS = "CREATE INDEX value_index_trgm ON value_index USING gin (data gin_trgm_ops)"
_VI_BUILD_CHUNK = 5000


def _schema(partitions: int) -> list[sql.SQL | sql.Composed]:
    stmts: list[sql.SQL | sql.Composed] = [
        sql.SQL("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"),
        sql.SQL(
            'CREATE TABLE handles (key TEXT COLLATE "C" NOT NULL, prefix TEXT COLLATE "C" NOT NULL, '
            "handle TEXT NOT NULL, vals BYTEA NOT NULL, PRIMARY KEY (key)) PARTITION BY HASH (key)"
        ),
    ]
    for i in range(partitions):
        stmts.append(
            sql.SQL("CREATE TABLE {} PARTITION OF handles FOR VALUES WITH (MODULUS {}, REMAINDER {})").format(
                sql.Identifier(f"handles_p{i}"), sql.Literal(partitions), sql.Literal(i)
            )
        )
    stmts += [
        sql.SQL("CREATE INDEX handles_prefix ON handles (prefix, key)"),
        sql.SQL("CREATE TABLE txseq (id INT PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL)"),
        sql.SQL("INSERT INTO txseq VALUES (1, 0)"),
        sql.SQL(
            "CREATE TABLE txlog (seq BIGINT PRIMARY KEY, ts FLOAT8 NOT NULL, op TEXT NOT NULL, "
            "actor TEXT NOT NULL, payload BYTEA NOT NULL)"
        ),
        sql.SQL("INSERT INTO meta VALUES ('schema_version', {}), ('partitions', {})").format(
            sql.Literal(str(SCHEMA_VERSION)), sql.Literal(str(partitions))
        ),
    ]
    return stmts


class PostgresStore(Store):
    """A node's store in one PostgreSQL database (see the module docstring).

    ``dsn`` is a libpq connection string or URI. ``partitions`` applies only when the schema
    is created. ``pool_size`` bounds connections: readers and writers share the pool, so a
    long bulk load holds one connection and reads use the others.
    """

    def __init__(
        self,
        dsn: str,
        *,
        partitions: int = 16,
        pool_size: int = 8,
        read_only: bool = False,
        timeout: float = _CONNECT_TIMEOUT_S,
        search_mode: str | None = None,
    ) -> None:
        """``search_mode``: the reverse-lookup index wanted (``idr.store.search.MODES``); None
        keeps the store's own (``full`` for a new store; read-only stores never change it)."""
        if search_mode is not None and search_mode not in MODES:
            raise StoreError(f"search index mode must be one of {', '.join(MODES)}, not {search_mode!r}")
        self._search_mode = MODE_OFF
        if not 1 <= partitions <= 1024:
            raise StoreError(f"partitions must be 1…1024, not {partitions}")
        if pool_size < 2:
            # One connection would make every read wait for a bulk load to finish.
            raise StoreError(f"pool_size must be at least 2, not {pool_size}")
        self.read_only = read_only
        self.blocking_reads = True  # a server across a socket: reads stay off the event loop
        self._closed = False
        self._down = False  # a request found no connection within the timeout; none had one since
        self._checking = threading.Lock()  # one background check of idle connections at a time
        self._close_lock = threading.Lock()
        self._where = _redact(dsn)
        self._dsn = dsn  # for reopen_spec (never logged: it may hold a password)
        self._pool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout))},
            configure=self._configure,
            timeout=timeout,
            reconnect_timeout=_RECONNECT_TIMEOUT_S,
            open=False,
            name="idr-store",
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
        except psycopg.Error as e:
            self._pool.close()
            raise StoreError(f"cannot connect to PostgreSQL at {self._where}: {e}") from e
        try:
            self.partitions = self._init_schema(partitions, search_mode)
        except BaseException:
            self._pool.close()
            raise

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        self._down = False  # the pool has just made a connection
        conn.execute("SET synchronous_commit = on")
        # Before PostgreSQL 18 a cached generic plan locks every partition (and its indexes)
        # at each execution, a cost that grows with the partition count (256 at scale, see
        # docs/scale.md); a custom plan prunes to the one partition first. At 16 partitions
        # the two measured the same here.
        conn.execute("SET plan_cache_mode = force_custom_plan")
        if self.read_only:
            conn.execute("SET default_transaction_read_only = on")

    # -- connections -------------------------------------------------------------------

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        if self._closed:
            raise StoreError("store is closed")
        conn: psycopg.Connection[Any] | None = None
        try:
            with self._pool.connection(self._wait()) as conn:
                self._down = False
                yield conn
        except psycopg.Error as e:
            raise self._failure(f"PostgreSQL at {self._where}: {e}", e, conn) from e

    def _wait(self) -> float | None:
        """How long a request waits for a connection: the pool's timeout, less while down."""
        return _DOWN_WAIT_S if self._down else None

    def _failure(self, message: str, e: Exception, conn: psycopg.Connection[Any] | None) -> StoreError:
        """``e`` as the store error it is. A connection-level failure (the server gone, a
        failover, no connection within the timeout) is ``StoreUnavailable``; a dead connection
        also has the pool check its idle ones (in the background), so that the next requests
        wait for fresh connections (libpq picks the writable host of a multi-host DSN) rather
        than fail on old ones."""
        if self._closed:
            return StoreError("store is closed")
        if not isinstance(e, psycopg.OperationalError):
            return StoreError(message)
        if conn is not None and conn.broken:
            self._check_idle()
            return _LostConnection(message)
        if isinstance(e, PoolTimeout):
            self._down = True
            message = f"no connection to PostgreSQL at {self._where}: {e}"
        return StoreUnavailable(message)

    def _check_idle(self) -> None:
        if not self._checking.acquire(blocking=False):
            return  # a check is under way

        def check() -> None:
            try:
                self._pool.check()
            except Exception:  # the pool closed meanwhile: nothing left to check
                pass
            finally:
                self._checking.release()

        threading.Thread(target=check, name="idr-store-check", daemon=True).start()

    def _init_schema(self, partitions: int, search_mode: str | None) -> int:
        """Create the schema in an empty database; refuse someone else's or a newer one."""
        with self._conn() as conn:
            in_recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            if in_recovery and in_recovery[0] and not self.read_only:
                raise StoreError(f"{self._where} is a standby (in recovery): open it with read_only=True")
            with conn.transaction():
                if not self.read_only:
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                has_meta = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
                if not (has_meta and has_meta[0]):
                    has_handles = conn.execute("SELECT to_regclass('handles') IS NOT NULL").fetchone()
                    if has_handles and has_handles[0]:
                        raise StoreError(
                            f"database at {self._where} has a 'handles' table but is not an idr store"
                        )
                    if self.read_only:
                        raise StoreError(
                            f"database at {self._where} holds no idr store (read-only: not creating)"
                        )
                    for stmt in _schema(partitions):
                        conn.execute(stmt)
                    self._search_mode = self._value_index_mode(conn, search_mode)
                    return partitions
                meta = dict(conn.execute("SELECT name, value FROM meta WHERE name IN "
                                         "('schema_version', 'partitions')").fetchall())  # fmt: skip
                found = meta.get("schema_version")
                if found != str(SCHEMA_VERSION):
                    raise StoreError(
                        f"store at {self._where} has schema version {found!r}; "
                        f"this idr reads {SCHEMA_VERSION}"
                    )
                self._search_mode = self._value_index_mode(conn, search_mode)
        return int(meta.get("partitions", partitions))

    def _value_index_mode(self, conn: psycopg.Connection[Any], wanted: str | None) -> str:
        """Inside the opening transaction: the search index as ``wanted`` (None: as it is; a
        store from before the index gets the default), built or dropped to match."""
        row = conn.execute("SELECT value FROM meta WHERE name = %s", (_SEARCH_META,)).fetchone()
        have = None if row is None else str(row[0])
        if self.read_only:
            return have or MODE_OFF
        mode = wanted or have or DEFAULT_MODE
        if mode == have:
            return mode
        conn.execute("DROP TABLE IF EXISTS value_index")
        if mode != MODE_OFF:
            for stmt in _VALUE_INDEX:
                conn.execute(stmt)
            if mode == MODE_FULL:
                try:
                    with conn.transaction():
                        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
                except psycopg.Error as e:
                    raise StoreError(
                        f"search index 'full' needs PostgreSQL's pg_trgm extension at {self._where} "
                        f"(CREATE EXTENSION pg_trgm as the database owner or a superuser), or choose "
                        f"[search] index = 'exact': {e}"
                    ) from e
                conn.execute(_TRIGRAMS)
            with conn.cursor() as cur:
                _build_value_index(cur)
        conn.execute(_SET_META, (_SEARCH_META, mode))
        return mode

    def _writable(self) -> None:
        if self.read_only:
            raise StoreError(f"store at {self._where} is read-only (a standby): writes go to the primary")

    # -- reads -------------------------------------------------------------------------

    @_retried
    def get(self, key: str) -> HandleRecord | None:
        if "\x00" in key:  # PostgreSQL text cannot hold NUL, so no such key can be stored
            return None
        with self._conn() as conn:
            row = conn.execute("SELECT handle, vals FROM handles WHERE key = %s", (key,)).fetchone()
        return None if row is None else decode_record(key, row[0], row[1])

    @_retried
    def get_many(self, keys: Sequence[str]) -> dict[str, HandleRecord]:
        wanted = [k for k in dict.fromkeys(keys) if "\x00" not in k]
        if not wanted:
            return {}
        with self._conn() as conn:  # one statement: one snapshot
            rows = conn.execute(
                "SELECT key, handle, vals FROM handles WHERE key = ANY(%s)", (wanted,)
            ).fetchall()
        return {key: decode_record(key, handle, vals) for key, handle, vals in rows}

    @_retried
    def list_handles(self, prefix: str, after: str | None = None, limit: int = 1000) -> list[str]:
        if limit <= 0:
            return []
        with self._conn() as conn:
            if after is None:
                cur = conn.execute(
                    "SELECT handle FROM handles WHERE prefix = %s ORDER BY key LIMIT %s", (prefix, limit)
                )
            else:
                cur = conn.execute(
                    "SELECT handle FROM handles WHERE prefix = %s AND key > %s ORDER BY key LIMIT %s",
                    (prefix, after, limit),
                )
            return [r[0] for r in cur.fetchall()]

    @_retried
    def count(self, prefix: str | None = None) -> int:
        """An index(-only) scan: O(n) in the handles counted, as on SQLite."""
        with self._conn() as conn:
            if prefix is None:
                row = conn.execute("SELECT count(*) FROM handles").fetchone()
            else:
                row = conn.execute("SELECT count(*) FROM handles WHERE prefix = %s", (prefix,)).fetchone()
        return int(row[0]) if row else 0

    @_retried
    def prefixes(self) -> list[str]:
        """A loose index scan (one seek per distinct prefix) in one snapshot."""
        with self._conn() as conn:
            rows = conn.execute(
                "WITH RECURSIVE p(prefix) AS ("
                " (SELECT prefix FROM handles ORDER BY prefix LIMIT 1)"
                " UNION ALL"
                " SELECT (SELECT h.prefix FROM handles h WHERE h.prefix > p.prefix ORDER BY h.prefix LIMIT 1)"
                " FROM p WHERE p.prefix IS NOT NULL)"
                " SELECT prefix FROM p WHERE prefix IS NOT NULL"
            ).fetchall()
        return [r[0] for r in rows]

    # -- reverse lookup ----------------------------------------------------------------

    @property
    def search_mode(self) -> str:
        return self._search_mode

    @_retried
    def search(self, terms: Sequence[Term], limit: int = 1000, offset: int = 0) -> list[str]:
        query, params = self._search_sql(terms, limit, offset)
        with self._conn() as conn:
            return [r[0] for r in conn.execute(query, params).fetchall()]

    @_retried
    def search_plan(self, terms: Sequence[Term], limit: int = 1000, offset: int = 0) -> str:
        """PostgreSQL's EXPLAIN of a search (for tests and benches)."""
        query, params = self._search_sql(terms, limit, offset)
        with self._conn() as conn:
            return "\n".join(str(r[0]) for r in conn.execute("EXPLAIN " + query, params).fetchall())

    def _search_sql(self, terms: Sequence[Term], limit: int, offset: int) -> tuple[str, list[object]]:
        if self._search_mode == MODE_OFF:
            raise SearchError("reverse lookup is off for this store (search index mode 'off')")
        return search_sql(terms, _DIALECT, limit, offset)

    @_retried
    def last_seq(self) -> int:
        with self._conn() as conn:
            row = conn.execute("SELECT coalesce(max(seq), 0) FROM txlog").fetchone()
        return int(row[0]) if row else 0

    @_retried
    def log_raw_since(self, seq: int, limit: int = 1000) -> list[RawEntry]:
        if limit <= 0:
            return []
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT seq, ts, op, actor, payload FROM txlog WHERE seq > %s ORDER BY seq LIMIT %s",
                (seq, limit),
            ).fetchall()
        return [RawEntry(int(s), float(ts), op, actor, bytes(payload)) for s, ts, op, actor, payload in rows]

    @property
    def where(self) -> str:
        return f"at {self._where}"

    @_retried
    def first_seq(self) -> int:
        with self._conn() as conn:
            row = conn.execute("SELECT coalesce(min(seq), 0) FROM txlog").fetchone()
        return int(row[0]) if row else 0

    @_retried
    def entry_time(self, seq: int) -> float | None:
        with self._conn() as conn:
            row = conn.execute("SELECT ts FROM txlog WHERE seq >= %s ORDER BY seq LIMIT 1", (seq,)).fetchone()
        return None if row is None else float(row[0])

    def truncate_log(self, before: int, limit: int = 10_000) -> int:
        """Deleted rows' space is reused once (auto)vacuum has passed; the counter (txseq) is
        separate, so numbering is unaffected either way."""
        self._writable()
        if limit <= 0:
            return 0
        with self._write("truncating the log") as cur:
            cur.execute(
                "DELETE FROM txlog WHERE seq IN (SELECT seq FROM txlog WHERE seq < %s "
                "AND seq < (SELECT max(seq) FROM txlog) ORDER BY seq LIMIT %s)",
                (before, limit),
            )
            return max(0, cur.rowcount)

    @_retried
    def checkpoint(self, name: str) -> int:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT value FROM meta WHERE name = %s", (CHECKPOINT_PREFIX + name,)
            ).fetchone()
        return int(row[0]) if row else 0

    # -- writes ------------------------------------------------------------------------

    def commit_many(self, commits: Sequence[Commit]) -> list[int]:
        """The whole group as one statement (``_GROUP``), which on the pool's autocommit
        connections is one transaction: the log entries with their gap-free seqs, each table's
        rows from arrays (the last write to a key wins, as applied in order), the reverse-lookup
        entries — one round trip and one WAL flush however many writes, and one wait for the
        server. Each wait releases the GIL and must take it back from the event loop (up to the
        switch interval, 5 ms); as a pipeline (BEGIN, a statement per table, COMMIT, sync) a
        group took a dozen. Nothing is committed unless all of it is."""
        self._writable()
        if not commits:
            return []
        what = f"commit of {commits[0].op!r}" if len(commits) == 1 else f"group commit of {len(commits)}"
        with self._write(what, transaction=False) as cur:  # an encoding error too: StoreError
            payloads, (final, records) = group_rows([c.writes for c in commits])
            puts = [(k, h, v) for k, h, v in final.values() if h is not None]
            entries = [] if self._search_mode == MODE_OFF else _entries(records)
            params = {
                "n": len(commits),
                "ops": [c.op for c in commits],
                "actors": [c.actor for c in commits],
                "payloads": payloads,
                "deletes": [k for k, h, _ in final.values() if h is None],
                "keys": [k for k, _, _ in puts],
                "prefixes": [prefix_of(k) for k, _, _ in puts],
                "handles": [h for _, h, _ in puts],
                "vals": [v for _, _, v in puts],
                "written": list(records),
                "vi_types": [t for t, _, _ in entries],
                "vi_data": [d for _, d, _ in entries],
                "vi_keys": [k for _, _, k in entries],
            }
            cur.execute(_GROUP if self._search_mode != MODE_OFF else _GROUP_UNINDEXED, params)
            seqs = sorted(int(r[0]) for r in cur.fetchall())
        if len(seqs) != len(commits):  # pragma: no cover - the counter row always exists
            raise StoreError("sequence counter row is missing")
        return seqs

    def _write_rows(self, cur: psycopg.Cursor[Any], rows: GroupRows) -> None:
        """Each key's final state (``group_rows``): one statement per table, reverse lookup
        included."""
        final, records = rows
        puts = [(k, h, v) for k, h, v in final.values() if h is not None and v is not None]
        deletes = [k for k, h, _ in final.values() if h is None]
        if deletes:
            cur.execute(_DELETE_MANY, (deletes,))
        if puts:
            keys = [k for k, _, _ in puts]
            cur.execute(_UPSERT_MANY, (keys, [prefix_of(k) for k in keys], [h for _, h, _ in puts],
                                       [v for _, _, v in puts]))  # fmt: skip
        self._reindex(cur, records)

    def _reindex(self, cur: psycopg.Cursor[Any], records: dict[str, HandleRecord | None]) -> None:
        """The reverse-lookup entries of ``records``' keys replaced by theirs (none: deleted)."""
        if self._search_mode == MODE_OFF or not records:
            return
        cur.execute(_VI_DELETE_MANY, (list(records),))
        entries = _entries(records)
        if entries:
            cur.execute(_VI_INSERT_MANY, tuple(list(col) for col in zip(*entries, strict=True)))

    def bulk_load(
        self,
        records: Iterable[HandleRecord],
        op: str = "import",
        actor: str = "",
        checkpoint: tuple[str, int] | None = None,
    ) -> int:
        """COPY into a staging table, merge, log once: one transaction (see module docstring)."""
        self._writable()

        def apply(cur: psycopg.Cursor[Any]) -> Logged:
            out: Logged = []
            last: dict[str, HandleRecord] = {}
            cur.execute(_STAGE)
            with cur.copy("COPY idr_stage (ord, key, prefix, handle, vals) FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(["int8", "text", "text", "text", "bytea"])
                for i, rec in enumerate(records):
                    key = normalize_key(rec.handle)
                    vals = encode_values(rec.values)
                    out.append((key, rec.handle, vals))
                    last[key] = rec
                    cp.write_row((i, key, prefix_of(key), rec.handle, vals))
            if out:
                cur.execute(_MERGE_STAGE)
                if self._search_mode != MODE_OFF:
                    cur.execute("DELETE FROM value_index WHERE key IN (SELECT key FROM idr_stage)")
                    _copy_entries(cur, (e for key, rec in last.items() for e in index_entries(key, rec)))
            if checkpoint is not None:
                cur.execute(_SET_META, (CHECKPOINT_PREFIX + checkpoint[0], str(checkpoint[1])))
            return out

        return self._transaction(op, actor, apply)

    def _transaction(self, op: str, actor: str, apply: Callable[[psycopg.Cursor[Any]], Logged]) -> int:
        """Run ``apply`` and append its log entry in one transaction, or nothing."""
        with self._write(f"commit of {op!r}") as cur:
            items = apply(cur)
            cur.execute(_LOG, (op, actor, encode_writes(items)))
            row = cur.fetchone()
        if row is None:  # pragma: no cover - the counter row always exists
            raise StoreError("log insert returned no sequence number")
        return int(row[0])

    @contextmanager
    def _write(
        self, what: str, *, pipeline: bool = False, transaction: bool = True
    ) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor inside one transaction, committed when the block ends and rolled back
        when it raises. An engine error becomes ``StoreError`` naming ``what`` failed.
        ``pipeline``: BEGIN, the block's statements and COMMIT go out together (pipeline mode),
        their results are read when the block ends (a cursor's rows only after it).
        ``transaction=False``: no BEGIN/COMMIT — for a block of one statement, which the
        autocommit connection commits on its own."""
        if self._closed:
            raise StoreError("store is closed")
        conn: psycopg.Connection[Any] | None = None
        try:
            with (
                self._pool.connection(self._wait()) as conn,
                conn.pipeline() if pipeline else contextlib.nullcontext(),
                conn.transaction() if transaction else contextlib.nullcontext(),
                conn.cursor() as cur,
            ):
                self._down = False
                yield cur
        except StoreError:
            raise
        except Exception as e:
            raise self._write_error(what, e, conn) from e

    # -- replication -------------------------------------------------------------------

    def apply_entry(self, entry: LogEntry) -> bool:
        """The primary's entry with its own seq; the counter row lock orders it like a commit."""
        return self.apply_entries([entry]) == 1

    def apply_entries(self, entries: Sequence[LogEntry]) -> int:
        """Consecutive primary entries in one transaction; those already held are skipped. As
        a group commit: after the counter row is locked and read, one pipeline — each table's
        rows in one statement, the entries' log rows in one, the counter, COMMIT."""
        self._writable()
        if not entries:
            return 0
        with self._write(f"applying entries {entries[0].seq}…", pipeline=True) as cur:
            row = cur.execute("SELECT seq FROM txseq WHERE id = 1 FOR UPDATE").fetchone()
            last = int(row[0]) if row else 0
            todo: list[LogEntry] = []
            for entry in entries:
                if entry.seq <= last:
                    continue
                if entry.seq != last + 1:
                    raise StoreError(f"log gap: entry {entry.seq} does not follow {last}")
                todo.append(entry)
                last = entry.seq
            if todo:
                payloads, rows = group_rows([e.writes for e in todo])
                self._write_rows(cur, rows)
                cur.execute(
                    _LOG_ENTRIES,
                    ([e.seq for e in todo], [e.timestamp for e in todo], [e.op for e in todo],
                     [e.actor for e in todo], payloads),
                )  # fmt: skip
                cur.execute("UPDATE txseq SET seq = %s WHERE id = 1", (last,))
        return len(todo)

    def reopen_spec(self) -> tuple[str, str] | None:
        return ("postgres", self._dsn)

    def snapshot(self) -> tuple[int, Iterator[tuple[str, HandleRecord]]]:
        """A pooled connection holds one REPEATABLE READ transaction while the rows stream
        through a server-side cursor (memory stays flat however many records)."""
        if self._closed:
            raise StoreError("store is closed")
        try:
            conn = self._pool.getconn()
        except psycopg.Error as e:
            raise self._failure(f"PostgreSQL at {self._where}: {e}", e, None) from e
        try:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            row = conn.execute("SELECT coalesce(max(seq), 0) FROM txlog").fetchone()
            seq = int(row[0]) if row else 0
        except BaseException as e:
            self._pool.putconn(conn)
            if isinstance(e, psycopg.Error):
                raise StoreError(f"PostgreSQL at {self._where}: {e}") from e
            raise

        def rows() -> Iterator[tuple[str, HandleRecord]]:
            try:
                with conn.cursor(name="idr_snapshot") as cur:
                    cur.itersize = 2000
                    cur.execute("SELECT key, handle, vals FROM handles ORDER BY key")
                    for key, handle, vals in cur:
                        yield key, decode_record(key, handle, vals)
            except psycopg.Error as e:
                raise StoreError(f"snapshot read from {self._where} failed: {e}") from e
            finally:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
                self._pool.putconn(conn)

        return seq, rows()

    def replace_all(self, records: Iterable[tuple[str, HandleRecord]], seq: int) -> None:
        self._writable()
        with self._write("replacing the contents") as cur:
            cur.execute("LOCK TABLE txseq IN EXCLUSIVE MODE")  # no commit may interleave
            # DELETE, not TRUNCATE: readers keep reading the old rows until COMMIT.
            cur.execute("DELETE FROM handles")
            cur.execute("DELETE FROM txlog")
            with cur.copy("COPY handles (key, prefix, handle, vals) FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(["text", "text", "text", "bytea"])
                for key, rec in records:
                    cp.write_row((key, prefix_of(key), rec.handle, encode_values(rec.values)))
            if self._search_mode != MODE_OFF:
                _build_value_index(cur)
            cur.execute("UPDATE txseq SET seq = %s WHERE id = 1", (seq,))
            if seq > 0:
                cur.execute(
                    "INSERT INTO txlog (seq, ts, op, actor, payload) "
                    "VALUES (%s, extract(epoch FROM clock_timestamp()), %s, '', %s)",
                    (seq, REPLICA_COPY_OP, encode_writes([])),
                )

    def _write_error(self, what: str, e: Exception, conn: psycopg.Connection[Any] | None) -> StoreError:
        if conn is not None and conn.broken:
            # The connection died with the transaction sent: COMMIT may have reached the server.
            message = f"{what} of {self._where}: connection lost, the write may or may not have happened: {e}"
        else:
            message = f"{what} of {self._where} failed, nothing written: {e!r}"
        error = self._failure(message, e, conn)
        # Never retried: a write is tried once (the caller decides).
        return StoreUnavailable(str(error)) if isinstance(error, _LostConnection) else error

    def close(self) -> None:
        """Close the pool; waits for connections in use to come back. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._pool.close()


# The planner picks the B-tree for exact values and literal prefixes, the trigram GIN index
# (mode full) for substrings, the key index for the per-handle checks.
_DIALECT = Dialect("%s", "LIKE", like_pattern, "value_index f")


def _entries(records: dict[str, HandleRecord | None]) -> list[tuple[str, str, str]]:
    """The reverse-lookup entries of the records written (none for a deleted key)."""
    return [e for k, r in records.items() if r is not None for e in index_entries(k, r)]


def _copy_entries(cur: psycopg.Cursor[Any], entries: Iterable[tuple[str, str, str]]) -> None:
    with cur.copy("COPY value_index (type, data, key) FROM STDIN (FORMAT BINARY)") as cp:
        cp.set_types(["text", "text", "text"])
        for e in entries:
            cp.write_row(e)


def _build_value_index(cur: psycopg.Cursor[Any]) -> None:
    """Replace the index by one built from every stored record, a key range at a time."""
    cur.execute("DELETE FROM value_index")
    after = ""
    while True:
        rows = cur.execute(
            "SELECT key, handle, vals FROM handles WHERE key > %s ORDER BY key LIMIT %s",
            (after, _VI_BUILD_CHUNK),
        ).fetchall()
        if not rows:
            return
        _copy_entries(
            cur,
            (e for key, handle, vals in rows for e in index_entries(key, decode_record(key, handle, vals))),
        )
        after = rows[-1][0]


def _redact(dsn: str) -> str:
    """The DSN for messages, without a password."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "<unparsable dsn>"
    info.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in info.items())
