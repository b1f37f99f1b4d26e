"""Reports at a parent (idr.core.reports, idr.runtime.reporting.StatsHub.receive): each entry
counted once whatever is resent or arrives late, a new store's figures added to the old
one's, days and months, and reports refused when they speak for nodes they may not."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from idr.core.federation import FederatedService, delegation_values, loopback_site
from idr.core.reports import Entry, day_of, federation_stats
from idr.core.request import Op, Request
from idr.model.errors import HandleError, ResponseCode
from idr.model.value import ValueReference
from idr.runtime.reporting import HubConfig, StatsHub
from idr.store.sqlite import SqliteStore
from tests.core.conftest import admin_values

TOP_ADMIN = ValueReference("0.NA/0.NA", 300)
SEC = ValueReference("0.NA/88.168", 300)
T0 = 1_780_000_000.0  # 2026-05-28 CST


@pytest.fixture
def top(tmp_path: Path) -> Iterator[FederatedService]:
    svc = FederatedService(SqliteStore(tmp_path / "top.sqlite3"), role="top", admins=[str(TOP_ADMIN)])
    svc.bootstrap("0.NA", admin_values("0.NA/0.NA"))
    r = svc.handle(
        Request(
            Op.CREATE_HANDLE,
            "0.NA/88.168",
            values=tuple(admin_values("0.NA/88.168", secret=b"sec-secret")),
            identity=TOP_ADMIN,
        )
    )
    assert r.ok, r.message
    yield svc
    svc.close()


def hub(svc: FederatedService, now: list[float]) -> StatsHub:
    return StatsHub(svc, HubConfig(node="0.NA", role="top"), lambda: {}, clock=lambda: now[0])


def entry(
    node: str, role: str, seq: int, registered: int, udp: int, *, instance: str = "I1", at: float = T0
) -> Any:
    return Entry(
        node=node,
        role=role,
        instance=instance,
        seq=seq,
        time=at,
        counters={"registered": registered, "deleted": 0},
        resolutions={"udp": {"1": udp}},
        industry="C",
        region="510000",
    ).to_json()


def report(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"report": 1, "node": entries[0]["node"], "entries": list(entries)}


def totals(svc: FederatedService) -> tuple[int, int]:
    doc = federation_stats(svc, self_node="0.NA")
    return doc["registered"], doc["resolutions"]


async def test_resent_late_and_new_instance_reports_add_up(top: FederatedService) -> None:
    now = [T0]
    h = hub(top, now)
    first = report(entry("88.168", "secondary", 1, 10, 100), entry("88.168.6", "enterprise", 1, 5, 50))
    ack = await h.receive(SEC, first)
    assert (ack["applied"], ack["duplicates"]) == (2, 0)
    assert totals(top) == (15, 150)
    again = await h.receive(SEC, copy.deepcopy(first))  # resent: counted once
    assert (again["applied"], again["duplicates"]) == (0, 2)
    assert totals(top) == (15, 150)
    # the next report: cumulative figures, the enterprise entry unchanged (same seq)
    now[0] += 86400
    second = report(
        entry("88.168", "secondary", 2, 12, 130, at=now[0]), entry("88.168.6", "enterprise", 1, 5, 50)
    )
    await h.receive(SEC, second)
    assert totals(top) == (17, 180)
    await h.receive(SEC, first)  # arrives late: older than what is held
    assert totals(top) == (17, 180)
    # the secondary's store was made anew: a new instance starts from zero, the old figures stay
    third = report(entry("88.168", "secondary", 1, 3, 7, instance="I2", at=now[0]))
    await h.receive(SEC, third)
    assert totals(top) == (20, 187)
    doc = federation_stats(top, self_node="0.NA")
    days = {d["day"]: d for d in doc["days"]}
    assert days[day_of(T0)]["registered"] == 15 and days[day_of(T0)]["resolutions"] == 150
    assert days[day_of(now[0])]["registered"] == 5 and days[day_of(now[0])]["resolutions"] == 37
    assert doc["by_secondary"] == {"88.168": {"registered": 20, "deleted": 0, "prefixes_allocated": 0,
                                              "prefixes_filed": 0, "resolutions": 187}}  # fmt: skip
    assert doc["secondary_nodes"] == 1 and doc["enterprise_nodes"] == 1
    assert doc["months"][-1]["registered"] == 20


async def test_reports_that_speak_for_others_are_refused(top: FederatedService) -> None:
    h = hub(top, [T0])
    stranger = ValueReference("0.NA/88.999", 300)
    with pytest.raises(HandleError) as e:
        await h.receive(stranger, report(entry("88.168", "secondary", 1, 1, 1)))
    assert e.value.code == ResponseCode.INSUFFICIENT_PERMISSIONS
    with pytest.raises(HandleError) as e:  # not a child of this node
        await h.receive(SEC, report(entry("88.777", "secondary", 1, 1, 1)))
    assert e.value.code == ResponseCode.HANDLE_NOT_FOUND
    with pytest.raises(HandleError) as e:  # forwarding a node outside its subtree
        await h.receive(
            SEC, report(entry("88.168", "secondary", 1, 1, 1), entry("88.1680", "enterprise", 1, 1, 1))
        )
    assert e.value.code == ResponseCode.INSUFFICIENT_PERMISSIONS
    with pytest.raises(HandleError) as e:  # claiming to be the top
        await h.receive(TOP_ADMIN, report(entry("0.NA", "top", 1, 1, 1)))
    assert e.value.code == ResponseCode.INVALID_VALUE
    bad = entry("88.168", "secondary", 1, 1, 1)
    bad["counters"]["registered"] = -5
    with pytest.raises(HandleError) as e:
        await h.receive(SEC, report(bad))
    assert e.value.code == ResponseCode.INVALID_VALUE and "counters" in e.value.message
    assert totals(top) == (0, 0)  # nothing of a refused report was kept


async def test_a_recursive_node_reports_as_its_own_identity(top: FederatedService) -> None:
    """A node without a prefix is known by the identity the top's admin made for it."""
    r = top.handle(
        Request(
            Op.CREATE_HANDLE,
            "0.NA/RECURSIVE-1",
            values=tuple(admin_values("0.NA/RECURSIVE-1", secret=b"rec-secret")),
            identity=TOP_ADMIN,
        )
    )
    assert r.ok, r.message
    h = hub(top, [T0])
    me = ValueReference("0.NA/RECURSIVE-1", 300)
    await h.receive(me, report(entry("0.NA/RECURSIVE-1", "recursive", 1, 0, 40)))
    with pytest.raises(HandleError) as e:  # …and only as itself
        await h.receive(me, report(entry("0.NA/RECURSIVE-2", "recursive", 1, 0, 40)))
    assert e.value.code == ResponseCode.INSUFFICIENT_PERMISSIONS
    doc = federation_stats(top, self_node="0.NA")
    assert (doc["recursive_nodes"], doc["resolutions"]) == (1, 40)


async def test_a_delegated_child_that_never_reported_is_listed_silent(top: FederatedService) -> None:
    site = loopback_site("Guangdong secondary", native=26990)
    values = (*admin_values("0.NA/88.200", secret=b"gd-secret"), *delegation_values([site]))
    assert top.handle(Request(Op.CREATE_HANDLE, "0.NA/88.200", values=values, identity=TOP_ADMIN)).ok
    h = hub(top, [T0])
    doc = await h.stats()
    silent = [n for n in doc["nodes"] if n["status"] == "silent"]
    assert [(n["node"], n["name"]) for n in silent] == [("88.200", "Guangdong secondary")]
    assert doc["secondary_nodes"] == 0  # known, not counted until it reports
    await h.receive(ValueReference("0.NA/88.200", 300), report(entry("88.200", "secondary", 1, 2, 3)))
    doc = await h.stats()
    assert [n["status"] for n in doc["nodes"] if n["node"] == "88.200"] == ["ok"]
    assert doc["secondary_nodes"] == 1
