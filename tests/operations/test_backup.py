"""``idr backup`` / ``idr restore``: online, consistent, with its log position, on both engines.

The main test keeps a writer running against ``idr serve`` while ``idr backup`` runs, then
checks the copy against the source's own transaction log: the copy's records are exactly the
log replayed up to the backup's position (nothing half-written, nothing from after it), every
write acknowledged before the backup started is in it, and writes acknowledged after it are
not. The restored node then serves the copy.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from idr.core.config import NodeConfig
from idr.model.value import HandleRecord
from idr.node import open_store
from idr.operations.backup import MANIFEST, BackupError, Manifest, backup, restore
from idr.store.base import Store
from tests.procs import ServeProc, serve_fresh

AUTH = ("300%3A0.NA/88.100", "s3cret-key")


def idr(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "idr", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def init(data: Path, *extra: str) -> None:
    r = idr("init", "--data", data, "--prefix", "88.100", "--admin-secret", "s3cret-key", *extra)
    assert r.returncode == 0, r.stderr


@dataclass
class Writer:
    """PUTs ``88.100/w-<i>`` one after another, recording when each was acknowledged."""

    served: ServeProc
    acked: list[tuple[str, float]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)

    def run(self) -> None:
        session = requests.Session()
        session.trust_env = False  # else REQUESTS_CA_BUNDLE overrides verify
        session.verify = str(self.served.data / "tls" / "cert.pem")
        url = f"https://127.0.0.1:{self.served.https}/api/handles/88.100/w-"
        i = 0
        while not self.stop.is_set() and i < 20_000:
            body = {"values": [{"index": 1, "type": "URL", "data": f"https://example.org/{i}"}]}
            r = session.put(f"{url}{i}", json=body, auth=AUTH, timeout=30)
            if r.status_code in (200, 201):
                self.acked.append((f"88.100/w-{i}", time.monotonic()))
            else:
                self.errors.append(r.text)
            i += 1


def replay(store: Store, upto: int) -> dict[str, HandleRecord]:
    """The records the log says exist after applying its entries up to seq ``upto``."""
    state: dict[str, HandleRecord] = {}
    seq = 0
    while seq < upto:
        page = store.log_since(seq, 1000)
        assert page, f"log ends at {seq}, before {upto}"
        for entry in page:
            if entry.seq > upto:
                return state
            for w in entry.writes:
                if w.record is None:
                    state.pop(w.key, None)
                else:
                    state[w.key] = w.record
            seq = entry.seq
    return state


def all_records(store: Store) -> dict[str, HandleRecord]:
    _, rows = store.snapshot()
    return dict(rows)


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """(store, init options); PostgreSQL databases come from the test cluster."""
    if request.param == "sqlite":
        yield "sqlite", []
        return
    from tests.store import pg

    yield "postgres", ["--store", "postgres", "--dsn", pg.new_database()]


def test_backup_while_writing_is_consistent_and_restores(
    engine: tuple[str, list[str]], tmp_path: Path
) -> None:
    kind, options = engine
    src, out, dst = tmp_path / "node", tmp_path / "backup", tmp_path / "restored"
    init(src, *options)
    served = serve_fresh(src)
    writer = Writer(served)
    thread = threading.Thread(target=writer.run)
    try:
        thread.start()
        deadline = time.monotonic() + 30
        while len(writer.acked) < 50:
            assert time.monotonic() < deadline and thread.is_alive(), writer.errors[:3]
            time.sleep(0.02)
        started = time.monotonic()
        r = idr("backup", "--data", src, out)
        finished = time.monotonic()
        assert r.returncode == 0, r.stderr
        acked_at_start = len([a for a in writer.acked if a[1] < started])
        deadline = time.monotonic() + 30
        while len([a for a in writer.acked if a[1] > finished]) < 20:  # writes go on after it
            assert time.monotonic() < deadline and thread.is_alive(), writer.errors[:3]
            time.sleep(0.02)
    finally:
        writer.stop.set()
        thread.join(60)
        served.stop()
    assert not writer.errors, writer.errors[:3]
    m = Manifest.load(out)
    assert m.store == kind and r.stdout.strip().endswith(f"seq={m.seq}")
    assert (out / "node" / "idr.toml").is_file() and (out / "node" / "tls" / "key.pem").is_file()

    source = open_store(NodeConfig.load(src))
    try:
        expected = replay(source, m.seq)
        assert source.last_seq() > m.seq  # writes committed after the backup's position
    finally:
        source.close()
    if kind == "sqlite":
        conn = sqlite3.connect(out / "idr.sqlite3")
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        conn.close()

    # Restore, check the copy against the log, then serve it.
    options_dst = []
    if kind == "postgres":
        from tests.store import pg

        options_dst = ["--dsn", pg.new_database()]
    r = idr("restore", out, "--data", dst, *options_dst)
    assert r.returncode == 0, r.stderr
    restored = open_store(NodeConfig.load(dst))
    try:
        assert restored.last_seq() == m.seq
        got = all_records(restored)
    finally:
        restored.close()
    assert got == expected  # exactly the log up to the position: nothing half-written, nothing later
    names = {rec.handle for rec in got.values()}
    before = [h for h, _ in writer.acked[:acked_at_start]]
    assert before and set(before) <= names  # acknowledged before the backup began: all there
    after = [h for h, t in writer.acked if t > finished]
    assert after and not set(after) & names  # acknowledged after it ended: none there

    served = serve_fresh(dst)
    try:
        url = f"http://127.0.0.1:{served.http}/api/handles/"
        assert requests.get(url + before[-1], timeout=10).status_code == 200
        assert requests.get(url + after[-1], timeout=10).status_code == 404
    finally:
        served.stop()


def test_restore_refuses_a_node_directory_and_a_damaged_backup(tmp_path: Path) -> None:
    src = tmp_path / "node"
    init(src)
    m = backup(src, tmp_path / "b")
    assert m.seq >= 1 and set(m.files) >= {"idr.sqlite3", "node/idr.toml"}
    with pytest.raises(BackupError, match="already holds a node"):
        restore(tmp_path / "b", src)
    with pytest.raises(BackupError, match="already exists"):
        backup(src, tmp_path / "b")
    damaged = tmp_path / "damaged"
    shutil.copytree(tmp_path / "b", damaged)
    db = damaged / "idr.sqlite3"
    raw = bytearray(db.read_bytes())
    raw[-100] ^= 0xFF
    db.write_bytes(bytes(raw))
    with pytest.raises(BackupError, match="checksum"):
        restore(damaged, tmp_path / "r1")
    assert not (tmp_path / "r1" / "idr.toml").exists()  # nothing half-restored
    (damaged / MANIFEST).write_text("{}")
    with pytest.raises(BackupError, match="not an idr backup"):
        restore(damaged, tmp_path / "r2")
    r = idr("restore", tmp_path / "nothing", "--data", tmp_path / "r3")
    assert r.returncode == 1 and "not an idr backup" in r.stderr and "Traceback" not in r.stderr


def test_cli_backup_of_a_missing_node_is_a_clear_error(tmp_path: Path) -> None:
    r = idr("backup", "--data", tmp_path / "none", tmp_path / "b")
    assert r.returncode == 1 and "idr.toml" in r.stderr and "Traceback" not in r.stderr
    assert not re.search(r"\.partial", " ".join(os.listdir(tmp_path)))
