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

Read-only mode (``read_only=True``) is for a mirror reading a streaming-replication hot
standby: it never creates or changes anything and every write raises ``StoreError``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from idr.codec.values import encode_values
from idr.model.handle import normalize_key
from idr.model.value import HandleRecord
from idr.store.base import REPLICA_COPY_OP, Commit, LogEntry, RawEntry, Store, StoreError, Write
from idr.store.records import (
    CHECKPOINT_PREFIX,
    Logged,
    apply_writes,
    decode_record,
    encode_writes,
    logged,
    prefix_of,
)

SCHEMA_VERSION = 1
# Any constant: serialises schema creation between processes opening one database at once.
_SCHEMA_LOCK = 0x1D2_0001
_CONNECT_TIMEOUT_S = 10.0

_UPSERT = (
    "INSERT INTO handles (key, prefix, handle, vals) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (key) DO UPDATE SET prefix = EXCLUDED.prefix, handle = EXCLUDED.handle, "
    "vals = EXCLUDED.vals"
)
_DELETE = "DELETE FROM handles WHERE key = %s"
# Take the next sequence number and append the entry in one round trip. The counter row
# stays locked until COMMIT, which is what makes numbers gap-free and commit-ordered.
_LOG = (
    "WITH s AS (UPDATE txseq SET seq = seq + 1 WHERE id = 1 RETURNING seq) "
    "INSERT INTO txlog (seq, ts, op, actor, payload) "
    "SELECT s.seq, extract(epoch FROM clock_timestamp()), %s, %s, %s FROM s RETURNING seq"
)
# Group commit: reserve n numbers at once (the row lock orders groups like single commits).
_RESERVE = "UPDATE txseq SET seq = seq + %s WHERE id = 1 RETURNING seq"
_LOG_AT = (
    "INSERT INTO txlog (seq, ts, op, actor, payload) "
    "VALUES (%s, extract(epoch FROM clock_timestamp()), %s, %s, %s)"
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
    ) -> None:
        if not 1 <= partitions <= 1024:
            raise StoreError(f"partitions must be 1…1024, not {partitions}")
        if pool_size < 2:
            # One connection would make every read wait for a bulk load to finish.
            raise StoreError(f"pool_size must be at least 2, not {pool_size}")
        self.read_only = read_only
        self.blocking_reads = True  # a server across a socket: reads stay off the event loop
        self._closed = False
        self._close_lock = threading.Lock()
        self._where = _redact(dsn)
        self._pool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout))},
            configure=self._configure,
            timeout=timeout,
            open=False,
            name="idr-store",
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
        except psycopg.Error as e:
            self._pool.close()
            raise StoreError(f"cannot connect to PostgreSQL at {self._where}: {e}") from e
        try:
            self.partitions = self._init_schema(partitions)
        except BaseException:
            self._pool.close()
            raise

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
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
        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg.Error as e:
            if self._closed:
                raise StoreError("store is closed") from e
            raise StoreError(f"PostgreSQL at {self._where}: {e}") from e

    def _init_schema(self, partitions: int) -> int:
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
                    return partitions
                meta = dict(conn.execute("SELECT name, value FROM meta WHERE name IN "
                                         "('schema_version', 'partitions')").fetchall())  # fmt: skip
        found = meta.get("schema_version")
        if found != str(SCHEMA_VERSION):
            raise StoreError(
                f"store at {self._where} has schema version {found!r}; this idr reads {SCHEMA_VERSION}"
            )
        return int(meta.get("partitions", partitions))

    def _writable(self) -> None:
        if self.read_only:
            raise StoreError(f"store at {self._where} is read-only (a standby): writes go to the primary")

    # -- reads -------------------------------------------------------------------------

    def get(self, key: str) -> HandleRecord | None:
        if "\x00" in key:  # PostgreSQL text cannot hold NUL, so no such key can be stored
            return None
        with self._conn() as conn:
            row = conn.execute("SELECT handle, vals FROM handles WHERE key = %s", (key,)).fetchone()
        return None if row is None else decode_record(key, row[0], row[1])

    def get_many(self, keys: Sequence[str]) -> dict[str, HandleRecord]:
        wanted = [k for k in dict.fromkeys(keys) if "\x00" not in k]
        if not wanted:
            return {}
        with self._conn() as conn:  # one statement: one snapshot
            rows = conn.execute(
                "SELECT key, handle, vals FROM handles WHERE key = ANY(%s)", (wanted,)
            ).fetchall()
        return {key: decode_record(key, handle, vals) for key, handle, vals in rows}

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

    def count(self, prefix: str | None = None) -> int:
        """An index(-only) scan: O(n) in the handles counted, as on SQLite."""
        with self._conn() as conn:
            if prefix is None:
                row = conn.execute("SELECT count(*) FROM handles").fetchone()
            else:
                row = conn.execute("SELECT count(*) FROM handles WHERE prefix = %s", (prefix,)).fetchone()
        return int(row[0]) if row else 0

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

    def last_seq(self) -> int:
        with self._conn() as conn:
            row = conn.execute("SELECT coalesce(max(seq), 0) FROM txlog").fetchone()
        return int(row[0]) if row else 0

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

    def first_seq(self) -> int:
        with self._conn() as conn:
            row = conn.execute("SELECT coalesce(min(seq), 0) FROM txlog").fetchone()
        return int(row[0]) if row else 0

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

    def checkpoint(self, name: str) -> int:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT value FROM meta WHERE name = %s", (CHECKPOINT_PREFIX + name,)
            ).fetchone()
        return int(row[0]) if row else 0

    # -- writes ------------------------------------------------------------------------

    def commit_many(self, commits: Sequence[Commit]) -> list[int]:
        """One transaction for the group: the counter row advanced once by the group's size
        (seqs stay gap-free and in commit order), the rows and log entries written with
        ``executemany`` (pipelined: a few round trips however many writes), one WAL flush."""
        self._writable()
        if not commits:
            return []
        what = f"commit of {commits[0].op!r}" if len(commits) == 1 else f"group commit of {len(commits)}"
        with self._write(what) as cur:
            row = cur.execute(_RESERVE, (len(commits),)).fetchone()
            if row is None:  # pragma: no cover - the counter row always exists
                raise StoreError("sequence counter row is missing")
            first = int(row[0]) - len(commits) + 1
            final: dict[str, tuple[str, str | None, bytes | None]] = {}
            entries = []
            for i, c in enumerate(commits):
                items = [logged(w) for w in c.writes]
                for item in items:
                    final[item[0]] = item  # later writes to a key win, as applied in order
                entries.append((first + i, c.op, c.actor, encode_writes(items)))
            puts = [(k, prefix_of(k), h, v) for k, h, v in final.values() if h is not None and v is not None]
            deletes = [(k,) for k, h, _ in final.values() if h is None]
            if deletes:
                cur.executemany(_DELETE, deletes)
            if puts:
                cur.executemany(_UPSERT, puts)
            cur.executemany(_LOG_AT, entries)
        return [first + i for i in range(len(commits))]

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
            cur.execute(_STAGE)
            with cur.copy("COPY idr_stage (ord, key, prefix, handle, vals) FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(["int8", "text", "text", "text", "bytea"])
                for i, rec in enumerate(records):
                    key = normalize_key(rec.handle)
                    vals = encode_values(rec.values)
                    out.append((key, rec.handle, vals))
                    cp.write_row((i, key, prefix_of(key), rec.handle, vals))
            if out:
                cur.execute(_MERGE_STAGE)
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
    def _write(self, what: str) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor inside one transaction, committed when the block ends and rolled back
        when it raises. An engine error becomes ``StoreError`` naming ``what`` failed."""
        if self._closed:
            raise StoreError("store is closed")
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                yield cur
        except StoreError:
            raise
        except Exception as e:
            raise self._write_error(what, e) from e

    # -- replication -------------------------------------------------------------------

    def apply_entry(self, entry: LogEntry) -> bool:
        """The primary's entry with its own seq; the counter row lock orders it like a commit."""
        return self.apply_entries([entry]) == 1

    def apply_entries(self, entries: Sequence[LogEntry]) -> int:
        """Consecutive primary entries in one transaction; those already held are skipped."""
        self._writable()
        if not entries:
            return 0
        applied = 0
        with self._write(f"applying entries {entries[0].seq}…") as cur:
            row = cur.execute("SELECT seq FROM txseq WHERE id = 1 FOR UPDATE").fetchone()
            last = int(row[0]) if row else 0
            for entry in entries:
                if entry.seq <= last:
                    continue
                if entry.seq != last + 1:
                    raise StoreError(f"log gap: entry {entry.seq} does not follow {last}")
                logged_items = _apply_writes(cur, entry.writes)
                cur.execute(
                    "INSERT INTO txlog (seq, ts, op, actor, payload) VALUES (%s, %s, %s, %s, %s)",
                    (entry.seq, entry.timestamp, entry.op, entry.actor, encode_writes(logged_items)),
                )
                last = entry.seq
                applied += 1
            if applied:
                cur.execute("UPDATE txseq SET seq = %s WHERE id = 1", (last,))
        return applied

    def snapshot(self) -> tuple[int, Iterator[tuple[str, HandleRecord]]]:
        """A pooled connection holds one REPEATABLE READ transaction while the rows stream
        through a server-side cursor (memory stays flat however many records)."""
        if self._closed:
            raise StoreError("store is closed")
        try:
            conn = self._pool.getconn()
        except psycopg.Error as e:
            raise StoreError(f"PostgreSQL at {self._where}: {e}") from e
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
            cur.execute("UPDATE txseq SET seq = %s WHERE id = 1", (seq,))
            if seq > 0:
                cur.execute(
                    "INSERT INTO txlog (seq, ts, op, actor, payload) "
                    "VALUES (%s, extract(epoch FROM clock_timestamp()), %s, '', %s)",
                    (seq, REPLICA_COPY_OP, encode_writes([])),
                )

    def _write_error(self, what: str, e: Exception) -> StoreError:
        if self._closed:
            return StoreError("store is closed")
        return StoreError(f"{what} of {self._where} failed, nothing written: {e!r}")

    def close(self) -> None:
        """Close the pool; waits for connections in use to come back. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._pool.close()


def _apply_writes(cur: psycopg.Cursor[Any], writes: Iterable[Write]) -> Logged:
    return apply_writes(cur.execute, _UPSERT, _DELETE, writes)


def _redact(dsn: str) -> str:
    """The DSN for messages, without a password."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "<unparsable dsn>"
    info.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in info.items())
