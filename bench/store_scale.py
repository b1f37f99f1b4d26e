"""How each store engine scales: load rate, resolution rate at 1M and at N, bytes and memory.

    python bench/store_scale.py                 # N = 10,000,000 on both engines (long)
    python bench/store_scale.py --n 200000      # a quick run

Each engine runs in its own child process so the loader's peak RSS is its own. SQLite
uses a file in a temp directory; PostgreSQL a throwaway cluster started here
(``tests/store/pgcluster.py``, the code the tests use) and deleted at the end. Identifiers are
``88.100/bench-<i>`` with the three values of /work/shared/vectors/handle (URL, EMAIL,
HS_ADMIN). Loading goes through ``Store.bulk_load`` in batches, exactly as ``idr import``
writes: each batch is one transaction with one log entry, so the log holds every record
too and the bytes per identifier include it (shown separately).
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from idr.codec.values import encode_admin
from idr.model.value import AdminRecord, HandleRecord, HandleValue
from idr.store.base import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test helpers (not in the wheel)
from tests.store.pgcluster import PgCluster

PREFIX = "88.100"
TS = 1_700_000_000
MILLION = 1_000_000


def record(i: int) -> HandleRecord:
    admin = encode_admin(AdminRecord(f"0.NA/{PREFIX}", 300, 0x0FFF))
    return HandleRecord(
        f"{PREFIX}/bench-{i}",
        (
            HandleValue(1, "URL", f"https://example.org/objects/{i}".encode(), 86400, timestamp=TS),
            HandleValue(2, "EMAIL", f"owner-{i}@example.org".encode(), 86400, timestamp=TS),
            HandleValue(100, "HS_ADMIN", admin, 86400, timestamp=TS),
        ),
    )


def records(start: int, stop: int) -> Iterator[HandleRecord]:
    return (record(i) for i in range(start, stop))


def get_rate(store: Store, loaded: int, seconds: float, rng: random.Random) -> float:
    """Random single gets over the loaded range, one thread, for ``seconds``."""
    n = 0
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    while True:
        for _ in range(200):
            key = f"{PREFIX}/BENCH-{rng.randrange(loaded)}"
            if store.get(key) is None:
                raise SystemExit(f"missing {key}")
        n += 200
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def get_rate_threads(store: Store, loaded: int, seconds: float, threads: int) -> float:
    """The same with ``threads`` client threads: what the engine serves, not one round trip."""
    counts = [0] * threads

    def run(t: int) -> None:
        rng = random.Random(1000 + t)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            for _ in range(100):
                if store.get(f"{PREFIX}/BENCH-{rng.randrange(loaded)}") is None:
                    raise SystemExit("missing record")
            counts[t] += 100

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - start)


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Sampler:
    """Samples a memory figure once a second in the background and keeps the peak."""

    def __init__(self, fn: Callable[[], int]) -> None:
        self.fn = fn
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.peak = max(self.peak, self.fn())

    def stop(self) -> int:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.fn())
        return self.peak


def run_engine(engine: str, n: int, batch: int, seconds: float, partitions: int, search: str) -> None:
    workdir = Path(tempfile.mkdtemp(prefix=f"idr-bench-{engine}-"))
    cluster: PgCluster | None = None
    sampler: Sampler | None = None
    try:
        if engine == "sqlite":
            from idr.store.sqlite import SqliteStore

            store: Store = SqliteStore(workdir / "node.db", search_mode=search)
        else:
            from tests.store.pgcluster import start_cluster

            from idr.store.postgres import PostgresStore

            # A modest server: 2 GB of shared buffers on a 24 GB machine, fewer checkpoints
            # during the load; durability settings stay at their safe defaults.
            cluster = start_cluster(shared_buffers="2GB", max_wal_size="8GB", checkpoint_timeout="15min")
            sampler = Sampler(cluster.server_pss_bytes)
            store = PostgresStore(cluster.dsn(), partitions=partitions, pool_size=4, search_mode=search)
        rng = random.Random(42)
        marks = sorted({min(MILLION, n), n})
        done = 0
        load_s = 0.0
        for mark in marks:
            t0 = time.perf_counter()
            while done < mark:
                stop = min(done + batch, mark)
                store.bulk_load(records(done, stop))
                done = stop
                if done % MILLION == 0:
                    rate = done / (load_s + time.perf_counter() - t0)
                    print(f"  {engine}: {done:>12,} loaded  ({rate:,.0f} ids/s so far)", flush=True)
            load_s += time.perf_counter() - t0
            if cluster is not None:
                store_analyze(cluster)
            # Warm-up (discarded): right after a load part of the table is not in any cache
            # yet, and the first seconds would measure the disk rather than the engine.
            get_rate_threads(store, done, seconds, 4)
            rate = get_rate(store, done, seconds, rng)
            print(f"{engine}: get/s at {done:,}: {rate:,.0f}", flush=True)
            rate = get_rate_threads(store, done, seconds, 4)
            print(f"{engine}: get/s at {done:,} with 4 client threads: {rate:,.0f}", flush=True)
        print(f"{engine}: load: {n:,} ids in {load_s:,.1f} s = {n / load_s:,.0f} ids/s", flush=True)
        store.close()
        if engine == "sqlite":
            conn_checkpoint(workdir / "node.db")
            total = sum(p.stat().st_size for p in workdir.iterdir())
            table, log = sqlite_split(workdir / "node.db")
        else:
            assert cluster is not None
            total, table, log = pg_sizes(cluster)
        print(
            f"{engine}: disk: {total:,} B = {total / n:,.0f} B/id "
            f"(handles+indexes {table / n:,.0f} B/id, log {log / n:,.0f} B/id)",
            flush=True,
        )
        print(f"{engine}: peak RSS of the loader: {peak_rss_bytes() / 2**20:,.0f} MiB", flush=True)
        if sampler is not None:
            print(
                f"{engine}: peak PSS of the server processes: {sampler.stop() / 2**20:,.0f} MiB", flush=True
            )
            sampler = None
    finally:
        if sampler is not None:
            sampler.stop()
        if cluster is not None:
            cluster.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


def store_analyze(cluster: PgCluster) -> None:
    """Fresh statistics and visibility map after a load, as autovacuum would soon do, and a
    checkpoint, so the gets are not measured against gigabytes of dirty buffers being flushed."""
    import psycopg

    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) handles")
        conn.execute("CHECKPOINT")


def conn_checkpoint(path: Path) -> None:
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def sqlite_split(path: Path) -> tuple[int, int]:
    """Bytes of handles + its index, and of the log, from the dbstat virtual table."""
    import sqlite3

    with sqlite3.connect(path) as conn:
        try:
            rows = dict(conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall())
        except sqlite3.Error:
            return 0, 0
    table = int(rows.get("handles", 0)) + int(rows.get("handles_prefix", 0))
    return table, int(rows.get("txlog", 0))


def pg_sizes(cluster: PgCluster) -> tuple[int, int, int]:
    import psycopg

    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        row = conn.execute(
            "SELECT pg_database_size(current_database()),"
            " (SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits"
            "  WHERE inhparent = 'handles'::regclass),"
            " pg_total_relation_size('txlog')"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10 * MILLION, help="identifiers to load per engine")
    ap.add_argument("--engines", default="sqlite,postgres", help="comma-separated: sqlite,postgres")
    ap.add_argument("--batch", type=int, default=10_000, help="records per bulk_load transaction")
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of each get-rate run")
    ap.add_argument("--partitions", type=int, default=16, help="PostgreSQL hash partitions")
    ap.add_argument(
        "--search-index", default="full", choices=("full", "exact", "off"), help="reverse-lookup index mode"
    )
    ap.add_argument("--engine", help=argparse.SUPPRESS)  # internal: run one engine in this process
    args = ap.parse_args()
    if args.engine:
        run_engine(args.engine, args.n, args.batch, args.seconds, args.partitions, args.search_index)
        return
    print(
        f"store_scale: N={args.n:,}, batch={args.batch:,}, 3 values per identifier, "
        f"search index {args.search_index}",
        flush=True,
    )
    for engine in args.engines.split(","):
        subprocess.run(
            [sys.executable, __file__, "--engine", engine, "--n", str(args.n), "--batch", str(args.batch),
             "--seconds", str(args.seconds), "--partitions", str(args.partitions),
             "--search-index", args.search_index],
            check=True,
        )  # fmt: skip


if __name__ == "__main__":
    main()
