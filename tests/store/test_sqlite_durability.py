"""A commit that returned survives ``kill -9`` of the process, at any moment (SQLite engine)."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from idr.store import SqliteStore

from ._crash_writer import last, record

HELPER = Path(__file__).with_name("_crash_writer.py")
CYCLES = 4
MIN_ACKS = 200


def _run_and_kill(db: Path, start: int, rng: random.Random) -> list[tuple[int, int]]:
    """Run the writer from ``start``, SIGKILL it at a random moment after ≥MIN_ACKS acks,
    and return every (seq, i) it acknowledged."""
    proc = subprocess.Popen(
        [sys.executable, str(HELPER), str(db), str(start)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(10, proc.kill)  # bounds the test if the child stalls
    watchdog.start()
    try:
        assert proc.stdout is not None
        acks: list[tuple[int, int]] = []
        target = MIN_ACKS + rng.randrange(600)
        while len(acks) < target:
            line = proc.stdout.readline()
            assert line.endswith("\n"), f"writer stopped early: {proc.communicate()[1]}"
            seq, i = line.split()
            acks.append((int(seq), int(i)))
        time.sleep(rng.random() * 0.02)  # land the kill anywhere in a commit or checkpoint
        os.kill(proc.pid, signal.SIGKILL)
        # stdout.read(), not communicate(): communicate reads the pipe's descriptor and would drop
        # the lines readline() had already buffered (acknowledgements the test never counted)
        out = proc.stdout.read()
        proc.wait(timeout=10)
    finally:
        watchdog.cancel()
    assert proc.returncode == -signal.SIGKILL
    # Lines the child finished writing before it died were acknowledgements too.
    for line in out.splitlines(keepends=True):
        if line.endswith("\n"):
            seq, i = line.split()
            acks.append((int(seq), int(i)))
    return acks


def test_acknowledged_commits_survive_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    SqliteStore(db).close()
    rng = random.Random()
    start = 0
    all_acked: list[tuple[int, int]] = []
    for _ in range(CYCLES):
        acked = _run_and_kill(db, start, rng)
        assert len(acked) >= MIN_ACKS
        all_acked += acked

        with sqlite3.connect(db) as raw:  # also runs WAL recovery as any opener would
            assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        store = SqliteStore(db)
        try:
            for _seq, i in all_acked:
                assert store.get(f"88.100/CRASH-{i}") == record(i), f"acknowledged record {i} lost"
            # At most the one commit that was in flight when the kill came is there unannounced.
            present = store.count("88.100")
            newest = all_acked[-1][1]
            assert present in (newest + 1, newest + 2)
            last_i = present - 1
            assert store.get("88.999/LAST") == last(last_i)  # both writes of a commit, or neither
            assert store.get(f"88.100/CRASH-{last_i + 1}") is None
            # The log agrees: one entry per commit, seqs as acknowledged.
            log = store.log_since(0, limit=10**6)
            assert [e.seq for e in log] == list(range(1, present + 1))
            by_seq = {e.seq: e for e in log}
            for seq, i in acked:
                assert by_seq[seq].writes[0].record == record(i)
            start = present
        finally:
            store.close()
