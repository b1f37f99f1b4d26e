"""A store's group commit in isolation: CPU and wall time per write, before and after a change.

    python bench/group_commit.py [--engines sqlite,postgres] [--group 32] [--writes 6400]
        [--rounds 3] [--busy] [--before SRC]

Each measurement is a child process that opens a new store (SQLite in a temp directory;
PostgreSQL: a new database in a throwaway local cluster) and commits ``--writes`` new handles
(a URL value and an HS_ADMIN value each, as ``PUT /api/handles`` stores them; the reverse-lookup
index in its default mode) through ``Store.commit_many`` in groups of ``--group``, one log
entry per write — what the node's writer thread does at 64 concurrent clients (~32 writes per
commit). Printed per run: µs of the child's CPU and of wall time per write, after a warm-up of
10 groups.

``--busy``: a second Python thread spins while the groups commit, standing in for the node's
event loop, which holds the GIL whenever it parses requests: every statement the store runs
releases the GIL and must wait to take it back (up to ``sys.getswitchinterval()``, 5 ms), so
the number of statements per group — not only their cost — shows in the wall time.

``--before SRC``: the same runs with idr from another source tree (e.g. ``/work/main/src``),
alternating with this tree's, round by round; the ratios are of medians from this one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WARM_GROUPS = 10


def child(engine: str, dsn: str | None, group: int, writes: int, busy: bool) -> dict[str, float]:
    from idr.codec.values import encode_admin
    from idr.model.handle import normalize_key
    from idr.model.value import AdminRecord, HandleRecord, HandleValue
    from idr.store.base import Commit, Store, Write

    admin = HandleValue(100, "HS_ADMIN", encode_admin(AdminRecord("0.NA/88.100", 300)))

    def commit(i: int) -> Commit:
        h = f"88.100/bench-{i}"
        url = HandleValue(1, "URL", f"https://example.org/{h}".encode())
        return Commit("create", "300:0.NA/88.100", (Write(normalize_key(h), HandleRecord(h, (url, admin))),))

    with tempfile.TemporaryDirectory(prefix="idr-bench-group-") as tmp:
        store: Store
        if engine == "sqlite":
            from idr.store.sqlite import SqliteStore

            store = SqliteStore(Path(tmp) / "idr.sqlite3")
        else:
            from idr.store.postgres import PostgresStore

            assert dsn is not None
            store = PostgresStore(dsn)
        n = 0
        for _ in range(WARM_GROUPS):
            store.commit_many([commit(n + i) for i in range(group)])
            n += group
        batches = [[commit(n + g * group + i) for i in range(group)] for g in range(writes // group)]
        stop = threading.Event()

        def spin() -> None:
            x = 0
            while not stop.is_set():
                x += 1

        spinner = threading.Thread(target=spin, daemon=True)
        if busy:
            spinner.start()
        c0, t0 = time.thread_time(), time.perf_counter()
        for batch in batches:
            store.commit_many(batch)
        cpu, wall = time.thread_time() - c0, time.perf_counter() - t0
        stop.set()
        if busy:
            spinner.join()
        store.close()
    done = len(batches) * group
    return {"cpu_us": cpu / done * 1e6, "wall_us": wall / done * 1e6}


def run(src: Path | None, engine: str, dsn: str | None, args: argparse.Namespace) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(src if src is not None else ROOT / "src")}
    cmd = [sys.executable, __file__, "--child", engine, "--dsn", dsn or "", "--group", str(args.group),
           "--writes", str(args.writes)] + (["--busy"] if args.busy else [])  # fmt: skip
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", default="sqlite,postgres")
    ap.add_argument("--group", type=int, default=32)
    ap.add_argument("--writes", type=int, default=6400)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--busy", action="store_true")
    ap.add_argument("--before", type=Path)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--dsn", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.dsn or None, args.group, args.writes, args.busy)))
        return
    cluster = None
    if "postgres" in args.engines:
        sys.path.insert(0, str(ROOT))  # the test helpers (not in the wheel)
        from tests.store.pgcluster import start_cluster

        cluster = start_cluster()
    try:
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        n = 0
        for r in range(args.rounds):
            for engine in args.engines.split(","):
                for label, src in (("before", args.before), ("after", None)):
                    if label == "before" and src is None:
                        continue
                    dsn = None
                    if engine == "postgres":
                        import psycopg

                        assert cluster is not None
                        n += 1
                        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
                            conn.execute(f"CREATE DATABASE bench_{n}")
                        dsn = str(cluster.dsn(f"bench_{n}"))
                    got = run(src, engine, dsn, args)
                    results.setdefault((engine, label), []).append(got)
                    busy = " busy" if args.busy else ""
                    print(
                        f"round {r + 1} {engine:8} {label:6} group {args.group}{busy}: "
                        f"{got['cpu_us']:7.1f} µs CPU/write  {got['wall_us']:7.1f} µs wall/write",
                        flush=True,
                    )
    finally:
        if cluster is not None:
            cluster.destroy()
    print()
    for engine in args.engines.split(","):
        med = {
            label: {k: statistics.median(x[k] for x in runs) for k in ("cpu_us", "wall_us")}
            for label in ("before", "after")
            if (runs := results.get((engine, label)))
        }
        a = med["after"]
        line = f"{engine:8} median: {a['cpu_us']:.1f} µs CPU, {a['wall_us']:.1f} µs wall per write"
        if "before" in med:
            b = med["before"]
            line += (
                f"; before {b['cpu_us']:.1f} / {b['wall_us']:.1f} µs: after/before CPU "
                f"{a['cpu_us'] / b['cpu_us']:.2f}×, wall {a['wall_us'] / b['wall_us']:.2f}×"
            )
        print(line)
    print(f"1-min load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
