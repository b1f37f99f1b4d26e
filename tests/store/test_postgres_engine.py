"""What only the PostgreSQL engine promises: its schema, concurrent writers, refusals,
read-only mode, and a mirror reading a streaming-replication hot standby."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from idr.model.handle import normalize_key
from idr.model.value import HandleRecord, HandleValue
from idr.store import StoreError, Write
from idr.store.base import StoreUnavailable
from idr.store.postgres import PostgresStore
from tests.store.pgcluster import (
    PgCluster,
    PgClusterError,
    find_bindir,
    free_port,
    primary_and_standby,
    start_cluster,
)

from . import pg


def rec(handle: str, tag: str = "v1") -> HandleRecord:
    return HandleRecord(handle, (HandleValue(1, "URL", f"https://example.cn/{tag}".encode()),))


def put(handle: str, tag: str = "v1") -> Write:
    return Write(normalize_key(handle), rec(handle, tag))


def test_missing_binaries_fail_with_the_install_hint(tmp_path: Path) -> None:
    (tmp_path / "15" / "bin").mkdir(parents=True)  # a version directory without initdb
    with pytest.raises(PgClusterError, match=r"apt-get install -y postgresql"):
        find_bindir(str(tmp_path / "*" / "bin" / "initdb"), path=str(tmp_path))
    assert find_bindir().joinpath("pg_ctl").exists()  # and on this machine they are there


@pytest.fixture
def dsn() -> str:
    return pg.new_database()


def test_schema_is_hash_partitioned_and_a_get_reads_one_partition(dsn: str) -> None:
    with PostgresStore(dsn, partitions=8) as s:
        s.bulk_load(rec(f"88.100/p-{i}") for i in range(2000))
        assert s.partitions == 8
    with psycopg.connect(dsn) as conn:
        parts = conn.execute(
            "SELECT count(*), sum(c) FROM (SELECT (SELECT count(*) FROM handles h"
            " WHERE h.tableoid = i.inhrelid) c FROM pg_inherits i WHERE inhparent = 'handles'::regclass) x"
        ).fetchone()
        assert parts is not None and parts[0] == 8 and parts[1] == 2000
        conn.execute("ANALYZE handles")
        conn.execute("SET enable_seqscan = off")  # 250 rows a partition: a seq scan would win
        plan = "\n".join(
            r[0] for r in conn.execute("EXPLAIN SELECT handle, vals FROM handles WHERE key = '88.100/P-7'")
        )
        assert len(set(re.findall(r" on (handles_p\d+)", plan))) == 1 and "Index Scan" in plan, plan
        listing = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN SELECT handle FROM handles WHERE prefix = '88.100' AND key > '88.100/P-1' "
                "ORDER BY key LIMIT 10"
            )
        )
        # Index ranges merged in key order, stopping at LIMIT: no scan of a partition, no sort.
        nodes = [line.strip().removeprefix("->  ").split("  (")[0] for line in listing.splitlines()]
        assert "Merge Append" in nodes, listing
        assert not any(n == "Sort" or n.startswith("Seq Scan") for n in nodes), listing
    # Re-opened with another partition count, the store keeps the one it was created with.
    with PostgresStore(dsn, partitions=32) as again:
        assert again.partitions == 8 and again.count() == 2000


def test_every_session_commits_synchronously(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        db = conn.execute("SELECT current_database()").fetchone()
        assert db is not None
        conn.execute(f"ALTER DATABASE {db[0]} SET synchronous_commit = off")
    with PostgresStore(dsn) as s, s._pool.connection() as conn:
        row = conn.execute("SHOW synchronous_commit").fetchone()
        assert row is not None and row[0] == "on"


def test_concurrent_writers_get_gap_free_ordered_seqs(dsn: str) -> None:
    """Two stores (as two writer processes) × 4 threads each, writing the same keys."""
    stores = [PostgresStore(dsn), PostgresStore(dsn)]
    per_thread = 40
    errors: list[BaseException] = []

    def writer(s: PostgresStore, t: int) -> None:
        try:
            for i in range(per_thread):
                writes = [put(f"88.100/shared-{i % 5}", f"t{t}-{i}"), put(f"88.100/own-{t}-{i}")]
                s.commit("w", f"t{t}", writes)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(stores[t % 2], t)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert not errors, errors[:3]
        log = stores[0].log_since(0, limit=10_000)
        assert [e.seq for e in log] == list(range(1, 8 * per_thread + 1))
        # Replaying the log in seq order gives exactly what is stored: seq order is commit order.
        last: dict[str, HandleRecord | None] = {}
        for e in log:
            for w in e.writes:
                last[w.key] = w.record
        assert stores[1].get_many(list(last)) == {k: v for k, v in last.items() if v is not None}
        assert [e.timestamp for e in log] == sorted(e.timestamp for e in log)
    finally:
        for s in stores:
            s.close()


def test_refusals_are_clear(dsn: str) -> None:
    with pytest.raises(StoreError, match="cannot connect"):
        PostgresStore(f"host=127.0.0.1 port={free_port()} user=postgres dbname=x", timeout=2)
    with pytest.raises(StoreError, match="partitions"):
        PostgresStore(dsn, partitions=0)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE handles (x int)")
    with pytest.raises(StoreError, match="not an idr store"):
        PostgresStore(dsn)
    other = pg.new_database()
    PostgresStore(other).close()
    with psycopg.connect(other, autocommit=True) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE name = 'schema_version'")
    with pytest.raises(StoreError, match="schema version '99'"):
        PostgresStore(other)
    with pytest.raises(StoreError, match="holds no idr store"):
        PostgresStore(pg.new_database(), read_only=True)


def test_read_only_store_reads_and_refuses_writes(dsn: str) -> None:
    with PostgresStore(dsn) as rw:
        rw.commit("create", "a", [put("88.100/x")])
    with PostgresStore(dsn, read_only=True) as ro:
        assert ro.get("88.100/X") == rec("88.100/x") and ro.last_seq() == 1
        for write in (
            lambda: ro.commit("create", "a", [put("88.100/y")]),
            lambda: ro.bulk_load([rec("88.100/y")]),
            lambda: ro.replace_all(iter(()), 5),
        ):
            with pytest.raises(StoreError, match="read-only"):
                write()
        assert ro.get("88.100/Y") is None
        # Text columns cannot hold NUL: such a key is simply absent, as on SQLite.
        assert ro.get("88.100/X\x00") is None and ro.get_many(["88.100/X\x00", "88.100/X"]) == {
            "88.100/X": rec("88.100/x")
        }


@pytest.fixture
def replicated() -> Iterator[tuple[PgCluster, PgCluster]]:
    with primary_and_standby() as pair:
        yield pair


def _wait_for(cond: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_mirror_reads_a_streaming_standby(replicated: tuple[PgCluster, PgCluster]) -> None:
    primary, standby = replicated
    with pytest.raises(StoreError, match="standby"):
        PostgresStore(standby.dsn())
    with PostgresStore(primary.dsn()) as rw, PostgresStore(standby.dsn(), read_only=True) as ro:
        seq = rw.commit("create", "300:0.NA/88.100", [put("88.100/battery-pack-1")])
        assert _wait_for(lambda: ro.get("88.100/BATTERY-PACK-1") == rec("88.100/battery-pack-1"))
        assert ro.last_seq() == seq and ro.log_since(0)[-1].writes == (put("88.100/battery-pack-1"),)

        seq = rw.bulk_load(rec(f"88.100/cell-{i}") for i in range(500))
        rw.commit("delete", "300:0.NA/88.100", [Write("88.100/BATTERY-PACK-1", None)])
        assert _wait_for(lambda: ro.last_seq() == seq + 1)
        assert ro.count("88.100") == 500 and ro.get("88.100/BATTERY-PACK-1") is None
        assert ro.list_handles("88.100", after="88.100/CELL-98") == ["88.100/cell-99"]
        with pytest.raises(StoreError, match="read-only"):
            ro.commit("create", "x", [put("88.100/on-the-standby")])


def test_a_lost_server_is_unavailable_then_served_again() -> None:
    """A server restart leaves the pool's idle connections dead: the next read still answers
    (retried once on a fresh connection). While the server is down, reads and writes fail with
    ``StoreUnavailable`` (503 to clients) — after the whole timeout once, then within 0.5 s
    each, never hanging; once it is back the same store serves again."""
    cluster = start_cluster()
    try:
        s = PostgresStore(cluster.dsn(), pool_size=4, timeout=2.0)
        s.commit("create", "t", [put("88.100/a")])
        _fill_pool(s)
        cluster.stop("immediate")
        cluster.start()
        assert s.get(normalize_key("88.100/a")) == rec("88.100/a")  # on a dead pooled connection: retried
        _fill_pool(s)
        cluster.stop("immediate")
        waits = []
        for attempt in range(4):
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable):
                if attempt % 2:
                    s.commit("create", "t", [put("88.100/b")])
                else:
                    s.get(normalize_key("88.100/a"))
            waits.append(time.monotonic() - t0)
        # One of them (the first that found no dead connection to fail on) waited the timeout.
        assert max(waits) < 2.0 + 1.0 and sorted(waits)[-2] < 1.0, waits
        cluster.start()
        assert _wait_for(lambda: _answers(s), 10)
        assert s.get(normalize_key("88.100/a")) == rec("88.100/a")
        s.commit("create", "t", [put("88.100/b")])
        s.close()
    finally:
        cluster.destroy()


def _fill_pool(s: PostgresStore) -> None:
    """Every pooled connection opened and idle (reads in parallel take one each)."""
    barrier = threading.Barrier(4)

    def read() -> None:
        with s._conn() as conn:
            barrier.wait(5)
            conn.execute("SELECT 1")

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)


def test_acknowledged_commits_survive_a_server_crash() -> None:
    """Writers commit until the server is stopped with ``-m immediate`` (no checkpoint, as a
    power cut to PostgreSQL): after recovery every acknowledged commit is there, the log is
    gap-free, and the same store instance works again once the server is back."""
    cluster = start_cluster()
    try:
        s = PostgresStore(cluster.dsn(), pool_size=4)
        acked: dict[int, str] = {}
        failures: list[BaseException] = []
        stop = threading.Event()

        def writer(t: int) -> None:
            i = 0
            while not stop.is_set():
                key = f"88.100/W{t}-{i}"
                try:
                    acked[s.commit("create", "w", [Write(key, rec(key))])] = key
                except StoreError as e:
                    failures.append(e)
                    return
                i += 1

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(3)]
        for t in threads:
            t.start()
        assert _wait_for(lambda: len(acked) >= 300, 30)
        cluster.stop("immediate")
        stop.set()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
        assert failures, "writers saw the server die"
        cluster.start()

        assert _wait_for(lambda: _answers(s), 10)  # the pool replaces its dead connections
        with PostgresStore(cluster.dsn()) as again:
            log = again.log_since(0, limit=100_000)
            assert [e.seq for e in log] == list(range(1, len(log) + 1))
            assert set(acked) <= {e.seq for e in log}
            got = again.get_many(list(acked.values()))
            assert all(got[key] == rec(key) for key in acked.values())
        s.close()
    finally:
        cluster.destroy()


def _answers(s: PostgresStore) -> bool:
    try:
        s.last_seq()
        return True
    except StoreError:
        return False
