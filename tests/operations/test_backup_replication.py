"""A restored primary and its mirrors: the restored site starts a new epoch after the backup's
log position, so a mirror behind the backup catches up from the log, and a mirror holding
entries written after the backup (which the restored primary does not have) is re-copied
rather than left with a log that silently differs."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from idr.core.config import NodeConfig
from idr.operations.backup import backup, restore
from idr.replication.state import ReplState
from idr.store.base import REPLICA_COPY_OP
from tests.replication.conftest import Site, until


@pytest.fixture
async def sites(tmp_path: Path) -> AsyncIterator[list[Site]]:
    made: list[Site] = []
    yield made
    for s in made:
        await s.stop()


def pair(tmp_path: Path, sites: list[Site], mode: str) -> tuple[Site, Site]:
    a = Site(tmp_path, "a", "primary", mode, 2.0)
    b = Site(tmp_path, "b", "mirror", mode, 2.0)
    a.peers, b.peers = [b], [a]
    sites.extend((a, b))
    NodeConfig(data_dir=a.dir, admins=["300:0.NA/88.100"]).save()  # what idr backup reads
    return a, b


async def restore_in_place(a: Site, out: Path) -> None:
    """The primary's disk is lost: its directory is emptied and the backup restored there."""
    await a.stop()
    shutil.rmtree(a.dir)
    r = restore(out, a.dir)
    assert r.role == "primary" and r.epoch == 2


def copies(site: Site) -> int:
    return sum(1 for e in site.svc.store.log_since(0, 100_000) if e.op == REPLICA_COPY_OP)


async def test_mirror_ahead_of_the_backup_is_recopied(tmp_path: Path, sites: list[Site]) -> None:
    a, b = pair(tmp_path, sites, "sync")
    await a.start()
    await b.start()
    for i in range(5):
        assert (await a.write(f"x{i}")).ok
    m = backup(a.dir, tmp_path / "backup")
    for i in range(3):
        assert (await a.write(f"late{i}")).ok  # the mirror holds these; the backup does not
    await until(lambda: b.svc.store.last_seq() == a.svc.store.last_seq())
    assert b.svc.store.last_seq() > m.seq
    await restore_in_place(a, tmp_path / "backup")
    await a.start()
    assert a.svc.store.last_seq() == m.seq and a.r.writable
    assert (await a.write("after")).ok  # sync: acknowledged only once the mirror holds it
    assert b.has("after") and b.has("x4") and not b.has("late0")
    assert b.svc.store.last_seq() == a.svc.store.last_seq() == m.seq + 1
    assert copies(b) == 1  # it was re-copied, its later entries dropped with the old primary
    mirror_state = ReplState.load(b.dir)
    assert mirror_state is not None and mirror_state.history == a.r.state.history


async def test_mirror_behind_the_backup_catches_up_from_the_log(tmp_path: Path, sites: list[Site]) -> None:
    a, b = pair(tmp_path, sites, "async")
    await a.start()
    await b.start()
    assert (await a.write("x0")).ok
    await until(lambda: b.has("x0"))
    await b.stop()  # the mirror falls behind
    for i in range(1, 6):
        assert (await a.write(f"x{i}")).ok
    m = backup(a.dir, tmp_path / "backup")
    await restore_in_place(a, tmp_path / "backup")
    await a.start()
    await b.start()
    await until(lambda: b.svc.store.last_seq() == m.seq)
    assert all(b.has(f"x{i}") for i in range(6))
    assert copies(b) == 0  # caught up entry by entry, no snapshot needed
    assert (await a.write("after")).ok
    await until(lambda: b.has("after"))
