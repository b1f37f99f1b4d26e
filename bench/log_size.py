"""The transaction log's size after 1,000,000 writes, without and with compaction, in one run.

    python bench/log_size.py [--writes 1000000] [--retain 100000] [--group 1000]

Two SQLite stores in a temp directory get the same writes — ``88.100/w-<i>``, one URL value
each, one log entry per write, committed in groups of ``--group`` as the node's group commit
does (``Store.commit_many``). The second store is compacted as a node compacts it
(``idr.operations.compaction``: ``keep_from`` then ``truncate_log`` in batches) after every
``--every`` groups, keeping the newest ``--retain`` entries (no age window, no mirror
connected: the bound an operator sets with ``[log] retain_entries``, ``retain_days = 0``).
Printed per store: log entries, the log table's bytes on disk (SQLite's ``dbstat``), the
whole file, and the write rate; then the ratios.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from idr.core.config import LogRetention
from idr.model.handle import normalize_key
from idr.model.value import HandleRecord, HandleValue
from idr.operations.compaction import keep_from
from idr.store.base import Commit, Write
from idr.store.sqlite import SqliteStore


def write(i: int) -> Write:
    h = f"88.100/w-{i}"
    return Write(
        normalize_key(h), HandleRecord(h, (HandleValue(1, "URL", f"https://example.org/{i}".encode()),))
    )


def sizes(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows = dict(conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall())
        entries = conn.execute("SELECT count(*) FROM txlog").fetchone()[0]
        payload = conn.execute("SELECT coalesce(sum(length(payload)), 0) FROM txlog").fetchone()[0]
    finally:
        conn.close()
    return {
        "entries": int(entries),
        "log_bytes": int(rows.get("txlog", 0)),
        "payload_bytes": int(payload),
        "file_bytes": path.stat().st_size,
    }


def run(path: Path, writes: int, group: int, retention: LogRetention | None, every: int) -> dict[str, float]:
    store = SqliteStore(path)
    t0 = time.monotonic()
    compact_s = 0.0
    deleted = 0
    try:
        for batches, lo in enumerate(range(0, writes, group), start=1):
            ids = range(lo, min(writes, lo + group))
            store.commit_many([Commit("create", "300:0.NA/88.100", (write(i),)) for i in ids])
            if retention is not None and batches % every == 0:
                c0 = time.monotonic()
                floor = keep_from(store, retention, None)
                while (n := store.truncate_log(floor, retention.batch)) > 0:
                    deleted += n
                compact_s += time.monotonic() - c0
        seconds = time.monotonic() - t0
        assert store.count() == writes
    finally:
        store.close()
    out: dict[str, float] = dict(sizes(path))
    out.update(seconds=seconds, rate=writes / seconds, compact_s=compact_s, deleted=deleted)
    return out


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--writes", type=int, default=1_000_000)
    ap.add_argument("--retain", type=int, default=100_000, help="[log] retain_entries")
    ap.add_argument("--group", type=int, default=1000, help="writes per group commit")
    ap.add_argument("--every", type=int, default=50, help="compact after this many group commits")
    a = ap.parse_args()
    retention = LogRetention(retain_entries=a.retain, retain_days=0)
    with tempfile.TemporaryDirectory(prefix="idr-bench-logsize-") as tmp:
        (Path(tmp) / "off").mkdir()
        (Path(tmp) / "on").mkdir()
        results = {}
        for mode in ("off", "on"):
            r = run(
                Path(tmp) / mode / "idr.sqlite3",
                a.writes,
                a.group,
                retention if mode == "on" else None,
                a.every,
            )
            results[mode] = r
            print(
                f"compaction={mode:3} writes={a.writes} log_entries={int(r['entries'])} "
                f"log_table={mib(r['log_bytes'])} log_payload={mib(r['payload_bytes'])} "
                f"file={mib(r['file_bytes'])} writes/s={r['rate']:.0f} "
                f"compaction_s={r['compact_s']:.1f} deleted={int(r['deleted'])}",
                flush=True,
            )
    off, on = results["off"], results["on"]
    print(
        f"ratio     log table on/off = {on['log_bytes'] / off['log_bytes']:.3f}, "
        f"file on/off = {on['file_bytes'] / off['file_bytes']:.3f}, "
        f"write rate on/off = {on['rate'] / off['rate']:.3f} (retain_entries={a.retain})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
