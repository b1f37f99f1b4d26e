"""Durable counters kept by the write path (idr.core.stats): exact, committed with the writes
they count, per writer process, surviving a restart."""

from __future__ import annotations

from pathlib import Path

from idr.core.federation import FederatedService
from idr.core.prefixes import PrefixRegistry, uscc_check_char
from idr.core.request import Op, Request
from idr.core.service import NodeService
from idr.core.stats import DELETED, PREFIXES_ALLOCATED, PREFIXES_FILED, REGISTERED, STATS_PREFIX
from idr.core.writes import WriteJob
from idr.model.errors import ResponseCode
from idr.model.value import HandleRecord, HandleValue, ValueReference
from idr.store.sqlite import SqliteStore
from tests.core.conftest import ADMIN, admin_values

URL = HandleValue(1, "URL", b"https://example.org/")


def create(svc: NodeService, handle: str, *, overwrite: bool = False) -> ResponseCode:
    r = svc.handle(Request(Op.CREATE_HANDLE, handle, values=(URL,), identity=ADMIN, overwrite=overwrite))
    return r.code


def test_registrations_and_deletions_are_counted_once_each(service: NodeService) -> None:
    assert create(service, "88.100/a") == ResponseCode.SUCCESS
    assert create(service, "88.100/b") == ResponseCode.SUCCESS
    assert create(service, "88.100/a") == ResponseCode.HANDLE_ALREADY_EXISTS  # refused: not counted
    assert create(service, "88.100/a", overwrite=True) == ResponseCode.SUCCESS  # replaced: not new
    r = service.handle(Request(Op.DELETE_HANDLE, "88.100/b", identity=ADMIN))
    assert r.ok
    stranger = ValueReference("0.NA/88.999", 300)
    denied = service.handle(Request(Op.CREATE_HANDLE, "88.100/c", values=(URL,), identity=stranger))
    assert denied.code == ResponseCode.INSUFFICIENT_PERMISSIONS
    got = service.durable_counts()
    assert got[REGISTERED] == 2 and got[DELETED] == 1
    # prefix handles are prefixes, not identifiers
    ph = Request(Op.CREATE_HANDLE, "0.NA/88.100.1", values=(URL,), identity=ADMIN)
    service.handle(Request(Op.HOME_NA, "0.NA", identity=ADMIN))
    service.handle(ph)
    assert service.durable_counts()[REGISTERED] == 2


def test_a_group_counts_only_its_jobs_that_commit(service: NodeService) -> None:
    def job(handle: str) -> WriteJob:
        return WriteJob(
            lambda: service._execute(Request(Op.CREATE_HANDLE, handle, values=(URL,), identity=ADMIN))
        )

    jobs = [job("88.100/g1"), job("88.100/g1"), job("88.100/g2"), job("77.1/elsewhere")]
    service.run_group(jobs)
    assert [j.result.code for j in jobs] == [
        ResponseCode.SUCCESS,
        ResponseCode.HANDLE_ALREADY_EXISTS,
        ResponseCode.SUCCESS,
        ResponseCode.SERVER_NOT_RESPONSIBLE,
    ]
    assert service.durable_counts()[REGISTERED] == 2
    # one counter write for the group, in the group's last committed entry, never a listener's key
    entries = service.store.log_since(0)
    counter_writes = [w.key for e in entries for w in e.writes if w.key.startswith(STATS_PREFIX)]
    assert len(counter_writes) == 1


def test_counts_survive_a_restart_and_each_writer_keeps_its_own(tmp_path: Path) -> None:
    path = tmp_path / "idr.sqlite3"
    first = NodeService(SqliteStore(path), admins=[str(ADMIN)])
    first.bootstrap("88.100", admin_values())
    for i in range(3):
        create(first, f"88.100/x{i}")
    first.close()
    second = NodeService(SqliteStore(path), admins=[str(ADMIN)])
    try:
        assert second.durable_counts()[REGISTERED] == 3
        create(second, "88.100/y")
        second.handle(Request(Op.DELETE_HANDLE, "88.100/x0", identity=ADMIN))
        # a second process writing the same store meanwhile (idr import into a running node)
        other = NodeService(SqliteStore(path), admins=[str(ADMIN)])
        other.import_now([HandleRecord("88.100/imp1", (URL,)), HandleRecord("88.100/y", (URL,))])
        other.close()
        got = second.durable_counts()
        # the import's 88.100/y replaced an existing identifier: only imp1 is a registration
        assert got[REGISTERED] == 5 and got[DELETED] == 1
        writers = second.store.list_handles(STATS_PREFIX.upper(), None, 100)
        assert len(writers) == 3
    finally:
        second.close()


async def test_prefix_allocation_and_filing_are_counted(tmp_path: Path) -> None:
    admin = ValueReference("0.NA/88.168", 300)
    svc = FederatedService(SqliteStore(tmp_path / "sec.sqlite3"), role="secondary", admins=[str(admin)])
    try:
        svc.bootstrap("88.168", admin_values("0.NA/88.168", secret=b"sec-secret"))
        reg = PrefixRegistry(svc, "88.168")
        uscc = "91511500MA62XB4P3" + uscc_check_char("91511500MA62XB4P3")
        a = await reg.apply(
            enterprise="Yibin cells", uscc=uscc, contact="q@example.org", secret="yibin-secret"
        )
        await reg.approve(a.id, admin)
        await reg.record_filing(a.id, False, "top down")
        assert svc.durable_counts()[PREFIXES_FILED] == 0
        await reg.record_filing(a.id, True)
        await reg.record_filing(a.id, True)  # filed again (idr prefix file): still one prefix
        got = svc.durable_counts()
        assert got[PREFIXES_ALLOCATED] == 1 and got[PREFIXES_FILED] == 1
    finally:
        svc.close()


def test_a_statistics_table_is_read_whole_across_pages_and_nothing_beside_it(tmp_path: Path) -> None:
    from idr.core.jsonvalues import json_value
    from idr.core.stats import records_under
    from idr.model.handle import normalize_key
    from idr.store.base import Write

    store = SqliteStore(tmp_path / "s.sqlite3")
    try:

        def rec(name: str) -> Write:
            handle = f"{STATS_PREFIX}/{name}"
            return Write(normalize_key(handle), HandleRecord(handle, (json_value(1, "IDR.X", {"n": name}),)))

        # the table "T." between neighbours on both sides of it, in key order
        names = ["S.9", *(f"T.{i:03d}" for i in range(7)), "TA.1", "U.1"]
        store.commit("test", "", [rec(n) for n in names])
        head = normalize_key(f"{STATS_PREFIX}/T.")
        for page in (1, 2, 3, 7, 1000):
            got = [k[len(head) :] for k, _ in records_under(store, head, page)]
            assert got == [f"{i:03d}" for i in range(7)], page
    finally:
        store.close()
