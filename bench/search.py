"""Reverse lookup (``Store.search``, ``/hrls/handles``) at N identifiers: query time and plan of
each pattern shape, indexed and — in the same run, on the same data — forced to scan.

    python bench/search.py                # N = 100,000 on both engines
    python bench/search.py --n 20000 --engines sqlite

Each identifier ``88.100/bench-<i>`` has URL ``https://repo.example/objects/<i>``, EMAIL
``owner-<i % 1000>@example.org`` and CHECKSUM ``<sha1(i)[:12]>``. Loaded through
``Store.bulk_load`` (batches of 10,000) three times, into stores with the index ``off``,
``exact`` and ``full`` (the default): load rate and bytes on disk of each, side by side, are
what the index costs. Then, on the ``full`` store, for each
query: matches, median milliseconds over ``--repeat`` runs (limit 1000), the engine's plan,
and the same query with the index unusable (SQLite ``NOT INDEXED``/no trigram table,
PostgreSQL ``enable_indexscan/bitmapscan = off``) as the baseline; the ratio is
baseline / indexed.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from idr.model.value import HandleRecord, HandleValue
from idr.store.base import Store
from idr.store.search import make_terms

PREFIX = "88.100"


def record(i: int) -> HandleRecord:
    return HandleRecord(
        f"{PREFIX}/bench-{i}",
        (
            HandleValue(1, "URL", f"https://repo.example/objects/{i}".encode()),
            HandleValue(2, "EMAIL", f"owner-{i % 1000}@example.org".encode()),
            HandleValue(3, "CHECKSUM", hashlib.sha1(str(i).encode()).hexdigest()[:12].encode()),
        ),
    )


def records(start: int, stop: int) -> Iterator[HandleRecord]:
    return (record(i) for i in range(start, stop))


def queries(n: int) -> list[tuple[str, list[tuple[str, str]]]]:
    k = n // 2 + 7
    return [
        ("exact", [("URL", f"https://repo.example/objects/{k}")]),
        ("prefix", [("URL", f"https://repo.example/objects/{k // 10}*")]),
        ("substring", [("URL", f"*objects/{k // 10}*")]),
        ("suffix", [("URL", f"*/{k}")]),
        ("checksum substring", [("CHECKSUM", f"*{hashlib.sha1(str(k).encode()).hexdigest()[3:9]}*")]),
        ("two terms", [("EMAIL", "owner-7@example.org"), ("URL", "*/objects/1*")]),
    ]


def timed(fn: Callable[[], list[str]], repeat: int) -> tuple[float, int]:
    times = []
    found = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        found = len(fn())
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), found


def sqlite_scan(store: Any, pairs: list[tuple[str, str]]) -> Callable[[], list[str]]:
    """The same query with no index usable: every value_index row read and matched."""
    from idr.store.search import glob_pattern

    parts, params = [], []
    for t in make_terms(pairs):
        parts.append("SELECT key FROM value_index NOT INDEXED WHERE type = ? AND data GLOB ?")
        params += [t.type, glob_pattern(t.pattern)]
    sql = (
        f"SELECT h.handle FROM ({' INTERSECT '.join(parts)}) m JOIN handles h ON h.key = m.key "
        "ORDER BY m.key LIMIT 1000"
    )
    conn = store._reader()
    return lambda: [r[0] for r in conn.execute(sql, params).fetchall()]


def pg_scan(store: Any, pairs: list[tuple[str, str]]) -> Callable[[], list[str]]:
    terms = make_terms(pairs)
    query, params = store._search_sql(terms, 1000, 0)

    def run() -> list[str]:
        with store._conn() as conn, conn.transaction():
            conn.execute("SET LOCAL enable_indexscan = off")
            conn.execute("SET LOCAL enable_bitmapscan = off")
            conn.execute("SET LOCAL enable_indexonlyscan = off")
            return [r[0] for r in conn.execute(query, params).fetchall()]

    return run


def open_store(engine: str, workdir: Path, cluster: Any, mode: str) -> tuple[Store, Callable[[], int]]:
    """A fresh store with the index ``mode``, and a function giving its bytes on disk."""
    if engine == "sqlite":
        import sqlite3

        from idr.store.sqlite import SqliteStore

        path = workdir / f"{mode}.db"

        def sqlite_size() -> int:
            with sqlite3.connect(path) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return sum(p.stat().st_size for p in workdir.glob(f"{mode}.db*"))

        return SqliteStore(path, search_mode=mode), sqlite_size
    import psycopg

    from idr.store.postgres import PostgresStore

    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE search_{mode}")

    def pg_size() -> int:
        with psycopg.connect(cluster.dsn(f"search_{mode}"), autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE)")
            conn.execute("CHECKPOINT")
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        return int(row[0]) if row else 0

    return PostgresStore(cluster.dsn(f"search_{mode}"), partitions=16, pool_size=4, search_mode=mode), pg_size


def run_engine(engine: str, n: int, repeat: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix=f"idr-bench-search-{engine}-"))
    cluster = None
    try:
        if engine != "sqlite":
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # test helpers (not in the wheel)
            from tests.store.pgcluster import start_cluster

            cluster = start_cluster(shared_buffers="512MB")
        # What the index costs: the same load into a store without it, with B-tree only, and full.
        store: Store | None = None
        for mode in ("off", "exact", "full"):
            s, size = open_store(engine, workdir, cluster, mode)
            t0 = time.perf_counter()
            for start in range(0, n, 10_000):
                s.bulk_load(records(start, min(n, start + 10_000)))
            load = time.perf_counter() - t0
            print(
                f"{engine}: index {mode:<5}: loaded {n:,} ids in {load:,.1f} s ({n / load:,.0f} ids/s), "
                f"{size() / n:,.0f} B/id on disk"
            )
            if mode == "full":
                store = s
            else:
                s.close()
        assert store is not None
        scan = sqlite_scan if engine == "sqlite" else pg_scan
        for name, pairs in queries(n):
            terms = make_terms(pairs)
            indexed_ms, found = timed(lambda terms=terms: store.search(terms, 1000), repeat)  # type: ignore[misc]
            scan_ms, scan_found = timed(scan(store, pairs), max(1, repeat // 3))
            assert found == scan_found, (name, found, scan_found)
            query = "&".join(f"{t}={p}" for t, p in pairs)
            print(
                f"{engine}: {name:<19} {query}: {found} found, {indexed_ms:.2f} ms indexed, "
                f"{scan_ms:.2f} ms scanning (×{scan_ms / max(indexed_ms, 1e-6):,.0f})"
            )
            plan = store.search_plan(terms, 1000)  # type: ignore[attr-defined]
            for line in plan.splitlines():
                # PostgreSQL: the value_index steps (the join to the handle's one partition
                # is a primary-key probe per match, pruned at run time).
                probe = (
                    "= value_index.key" in line
                    or "= m.key" in line
                    or "= f.key" in line
                    or "handles_p" in line
                )
                if engine == "sqlite" or not probe:
                    print(f"      {line.strip()}")
        store.close()
    finally:
        if cluster is not None:
            cluster.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="identifiers per engine")
    ap.add_argument("--engines", default="sqlite,postgres")
    ap.add_argument("--repeat", type=int, default=9, help="runs per query (median)")
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.engine:
        run_engine(args.engine, args.n, args.repeat)
        return
    print(f"search: N={args.n:,}, 3 values per identifier, limit 1000, median of {args.repeat}")
    for engine in args.engines.split(","):
        subprocess.run(
            [sys.executable, __file__, "--engine", engine, "--n", str(args.n), "--repeat", str(args.repeat)],
            check=True,
        )


if __name__ == "__main__":
    main()
