"""The one write path in the core: jobs planned in a group over an overlay, committed together,
each with its own seq and its own error."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from idr.core.request import Op, Request, Response
from idr.core.service import NodeService
from idr.core.writes import WriteJob
from idr.model.errors import HandleError, ResponseCode
from idr.model.value import HandleValue
from idr.store.base import Commit, StoreError
from idr.store.sqlite import SqliteStore
from tests.core.conftest import ADMIN, admin_values

URL = HandleValue(1, "URL", b"https://example.org/")


def create(handle: str, *, overwrite: bool = False) -> Request:
    return Request(Op.CREATE_HANDLE, handle, values=(URL,), identity=ADMIN, overwrite=overwrite)


def job(svc: NodeService, req: Request) -> WriteJob:
    return WriteJob(lambda: svc._execute(req))


def test_a_group_commits_once_with_a_seq_per_write_and_sees_its_own_earlier_writes(
    service: NodeService,
) -> None:
    before = service.store.last_seq()
    add = Request(Op.ADD_VALUE, "88.100/g1", values=(HandleValue(7, "EMAIL", b"a@b"),), identity=ADMIN)
    jobs = [
        job(service, create("88.100/g1")),
        job(service, add),  # planned against g1 as staged just before, not yet committed
        job(service, create("88.100/g1")),  # exists now (staged): refused, alone
        job(service, create("88.100/g2")),
    ]
    keys = service.run_group(jobs)
    results: list[Response] = [j.result for j in jobs]
    assert [r.code for r in results] == [
        ResponseCode.SUCCESS,
        ResponseCode.SUCCESS,
        ResponseCode.HANDLE_ALREADY_EXISTS,
        ResponseCode.SUCCESS,
    ]
    assert [j.seq for j in jobs] == [before + 1, before + 2, 0, before + 3]
    assert [r.seq for r in results] == [before + 1, before + 2, 0, before + 3]
    assert keys == ["88.100/G1", "88.100/G2"]
    entries = service.store.log_since(before)
    assert [(e.seq, e.op) for e in entries] == [
        (before + 1, "create"),
        (before + 2, "add"),
        (before + 3, "create"),
    ]
    got = service.handle(Request(Op.RESOLUTION, "88.100/g1"))
    assert {v.index for v in got.values} == {1, 7, 100}


class PickyStore(SqliteStore):
    """A real SQLite store whose engine refuses any transaction writing one poisoned key."""

    poisoned = "88.100/POISON"

    def commit_many(self, commits: Sequence[Commit]) -> list[int]:
        if any(w.key == self.poisoned for c in commits for w in c.writes):
            raise StoreError("the engine refuses this record")
        return super().commit_many(commits)


def test_an_engine_refusal_fails_only_the_write_it_refuses(tmp_path: Path) -> None:
    svc = NodeService(PickyStore(tmp_path / "idr.sqlite3"), admins=[str(ADMIN)])
    svc.bootstrap("88.100", admin_values())
    try:
        jobs = [job(svc, create(h)) for h in ("88.100/ok-1", "88.100/poison", "88.100/ok-2")]
        svc.run_group(jobs)
        assert [j.result.code for j in (jobs[0], jobs[2])] == [ResponseCode.SUCCESS, ResponseCode.SUCCESS]
        assert isinstance(jobs[1].error, HandleError) and jobs[1].error.code == ResponseCode.ERROR
        assert "storage failure" in jobs[1].error.message
        assert jobs[0].seq and jobs[2].seq and not jobs[1].seq
        assert svc.handle(Request(Op.RESOLUTION, "88.100/ok-2")).ok
        assert svc.handle(Request(Op.RESOLUTION, "88.100/poison")).code == ResponseCode.HANDLE_NOT_FOUND
    finally:
        svc.close()


def test_a_write_outside_the_write_path_is_refused(service: NodeService) -> None:
    with pytest.raises(RuntimeError, match="write path"):
        service.create(create("88.100/raw"))


def test_homing_ends_a_group_so_later_writes_see_the_new_prefix(service: NodeService) -> None:
    jobs = [
        job(service, Request(Op.HOME_NA, "88.200", identity=ADMIN)),
        job(service, create("88.200/x")),
    ]
    service.run_group(jobs)
    assert [j.result.code for j in jobs] == [ResponseCode.SUCCESS, ResponseCode.SUCCESS]
    assert jobs[1].seq == jobs[0].seq + 1
