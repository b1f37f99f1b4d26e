"""Federation in the core: referrals from delegation records, templates, USCC/VIN, lifecycle."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from idr.codec.site import encode_site
from idr.core.federation import (
    FederatedService,
    delegation_values,
    loopback_site,
    site_value,
    with_own_site,
)
from idr.core.prefixes import Filing, FilingRegister, PrefixRegistry, audit_trail, uscc_check_char, uscc_error
from idr.core.request import Op, Request
from idr.core.templates import TEMPLATE_INDEX, TEMPLATE_TYPE, vin_check_digit, vin_error
from idr.model.errors import HandleError, ResponseCode
from idr.model.value import HandleValue, ValueReference
from idr.store.sqlite import SqliteStore
from tests.core.conftest import admin_values

TOP_ADMIN = ValueReference("0.NA/0.NA", 300)
SERVER_KEY = b"\x00\x00\x00\x0aHS_DSAPUBKEY..."  # the site's server key: what names the node
SEC_ADMIN = ValueReference("0.NA/88.168", 300)


@pytest.fixture
def top(tmp_path: Path) -> Iterator[FederatedService]:
    svc = FederatedService(SqliteStore(tmp_path / "top.sqlite3"), role="top", admins=[str(TOP_ADMIN)])
    svc.bootstrap("0.NA", admin_values("0.NA/0.NA"))
    site = loopback_site("Sichuan secondary", native=26430)
    values = (*admin_values("0.NA/88.168", secret=b"sec-secret"), *delegation_values([site], derived=True))
    r = svc.handle(Request(Op.CREATE_HANDLE, "0.NA/88.168", values=tuple(values), identity=TOP_ADMIN))
    assert r.ok, r.message
    yield svc
    svc.close()


@pytest.fixture
def secondary(tmp_path: Path) -> Iterator[FederatedService]:
    svc = FederatedService(SqliteStore(tmp_path / "sec.sqlite3"), role="secondary", admins=[str(SEC_ADMIN)])
    svc.bootstrap("88.168", admin_values("0.NA/88.168", secret=b"sec-secret"))
    yield svc
    svc.close()


def resolve(svc: FederatedService, handle: str) -> tuple[ResponseCode, tuple[HandleValue, ...]]:
    r = svc.handle(Request(Op.RESOLUTION, handle))
    return r.code, r.values


def test_top_refers_derived_prefix_handles_with_prefix_referral(top: FederatedService) -> None:
    code, values = resolve(top, "0.NA/88.168.6")
    assert code == ResponseCode.PREFIX_REFERRAL
    assert {v.type for v in values} == {"HS_SITE.PREFIX"}


def test_top_refers_handles_of_a_delegated_prefix_with_service_referral(top: FederatedService) -> None:
    code, values = resolve(top, "88.168/anything")
    assert code == ResponseCode.SERVICE_REFERRAL
    assert {v.type for v in values} == {"HS_SITE"}
    code, _ = resolve(top, "0.NA/88.168")
    assert code == ResponseCode.SUCCESS  # the top answers the prefix handle it holds
    code, _ = resolve(top, "0.NA/99.1")
    assert code == ResponseCode.HANDLE_NOT_FOUND
    code, _ = resolve(top, "99.1/x")
    assert code == ResponseCode.SERVER_NOT_RESPONSIBLE


def test_secondary_answers_its_derived_prefix_handles(secondary: FederatedService) -> None:
    code, _ = resolve(secondary, "0.NA/88.168.9")
    assert code == ResponseCode.HANDLE_NOT_FOUND  # responsible for it, none allocated


def test_uscc_and_vin_validation() -> None:
    code = "91511500MA62XB4P3" + uscc_check_char("91511500MA62XB4P3")
    assert uscc_error(code) is None
    assert "check character" in (uscc_error(code[:17] + ("0" if code[17] != "0" else "1")) or "")
    assert "18 characters" in (uscc_error("9151") or "")
    assert "not allowed" in (uscc_error("91511500MA62XB4PIO") or "")
    assert vin_error("LS5A3DKE0RA000001") is None
    assert vin_check_digit("1M8GDM9AXKP042788") == "X"
    assert "check digit" in (vin_error("LS5A3DKE1RA000001") or "")
    assert "17 characters" in (vin_error("ABC") or "")
    assert "not allowed" in (vin_error("LS5A3DKE0RA00000I") or "")


def test_template_claims_are_validated_field_by_field(secondary: FederatedService) -> None:
    values = (
        HandleValue(2, "manufacturer", b"Yibin"),
        HandleValue(3, "chemistry", b"plutonium"),
        HandleValue(4, "capacity_ah", b"-3"),
        HandleValue(5, "production_date", b"2024-13-01"),
        HandleValue(TEMPLATE_INDEX, TEMPLATE_TYPE, b"battery-cell@1"),
    )
    r = secondary.handle(Request(Op.CREATE_HANDLE, "88.168/C1", values=values, identity=SEC_ADMIN))
    assert r.code == ResponseCode.INVALID_VALUE
    detail = json.loads(r.message)
    fields = {e["field"]: e["reason"] for e in detail["errors"]}
    assert set(fields) == {"model", "chemistry", "capacity_ah", "production_date", "batch"}
    assert "required" in fields["model"] and "not one of" in fields["chemistry"]
    good = (
        *values[:1],
        HandleValue(3, "chemistry", b"LFP"),
        HandleValue(4, "capacity_ah", b"280"),
        HandleValue(5, "production_date", b"2024-07-01"),
        HandleValue(6, "model", b"X"),
        HandleValue(7, "batch", b"B1"),
        values[-1],
    )
    assert secondary.handle(Request(Op.CREATE_HANDLE, "88.168/C1", values=good, identity=SEC_ADMIN)).ok
    bad_vin = (
        HandleValue(TEMPLATE_INDEX, TEMPLATE_TYPE, b"vehicle@1"),
        HandleValue(2, "vin", b"LS5A3DKE1RA000001"),
    )
    r = secondary.handle(Request(Op.CREATE_HANDLE, "88.168/V1", values=bad_vin, identity=SEC_ADMIN))
    assert r.code == ResponseCode.INVALID_VALUE and "check digit" in r.message
    # Modifying a field of a registration that claims a template is checked against the merged record.
    r = secondary.handle(
        Request(
            Op.MODIFY_VALUE, "88.168/C1", values=(HandleValue(4, "capacity_ah", b"lots"),), identity=SEC_ADMIN
        )
    )
    assert r.code == ResponseCode.INVALID_VALUE


async def test_application_review_allocation_and_audit(secondary: FederatedService) -> None:
    reg = PrefixRegistry(secondary, "88.168")
    uscc = "91511500MA62XB4P3" + uscc_check_char("91511500MA62XB4P3")
    with pytest.raises(HandleError) as bad:
        await reg.apply(enterprise="X", uscc="91511500MA62XB4P30", contact="c", secret="long-secret")
    assert bad.value.code == ResponseCode.INVALID_VALUE and "credit code" in bad.value.message
    a = await reg.apply(enterprise="Yibin cells", uscc=uscc, contact="q@example.org", secret="yibin-secret")
    b = await reg.apply(enterprise="Shell Co", uscc=uscc, contact="x@example.org", secret="shell-secret")
    assert {x.id for x in reg.applications("pending")} == {a.id, b.id}
    stranger = ValueReference("0.NA/88.999", 300)
    with pytest.raises(HandleError) as denied:
        await reg.approve(a.id, stranger)
    assert denied.value.code == ResponseCode.INSUFFICIENT_PERMISSIONS
    approved = await reg.approve(a.id, SEC_ADMIN)
    assert approved.prefix == "88.168.1" and approved.status == "approved"
    assert reg.next_free() == "88.168.2"
    rejected = await reg.reject(b.id, SEC_ADMIN, "business licence does not match the name")
    assert rejected.status == "rejected" and "licence" in rejected.reason
    with pytest.raises(HandleError):
        await reg.approve(b.id, SEC_ADMIN)
    # The new prefix is home here and its admin is the applicant's key.
    new_admin = ValueReference("0.NA/88.168.1", 300)
    assert secondary.authenticate_secret(new_admin, b"yibin-secret")
    r = secondary.handle(
        Request(
            Op.CREATE_HANDLE, "88.168.1/CELL-1", values=(HandleValue(1, "DESC", b"cell"),), identity=new_admin
        )
    )
    assert r.ok, r.message
    ops = [e["op"] for e in audit_trail(secondary, match="0.PREFIXAPP")]
    assert ops == ["prefix-apply", "prefix-apply", "prefix-approve", "prefix-reject"]


async def test_top_accepts_filings_only_from_the_parent_admin(top: FederatedService) -> None:
    reg = FilingRegister(top)
    uscc = "91511500MA62XB4P3" + uscc_check_char("91511500MA62XB4P3")
    f = Filing("88.168.6", "88.168", "Yibin cells", uscc, "q@example.org")
    with pytest.raises(HandleError) as denied:
        await reg.file(ValueReference("0.NA/88.118", 300), f)
    assert denied.value.code == ResponseCode.INSUFFICIENT_PERMISSIONS
    filed = await reg.file(SEC_ADMIN, f)
    assert filed.filed_by == str(SEC_ADMIN)
    got = reg.get("88.168.6")
    assert got is not None and got.enterprise == "Yibin cells"
    assert [x.prefix for x in reg.filings()] == ["88.168.6"]


# ------------------------------------------------------------- a node's site in its prefix handles


async def test_a_node_names_its_own_site_in_its_prefix_handle(secondary: FederatedService) -> None:
    """As the reference server's prefix handles: 0.NA/<P> for a P homed here carries the site
    that serves it (the national SDK resolves ``88.168`` for HS_SITE), replaced when the node's
    listeners change, the other values untouched; nothing to write when it is current."""
    site = loopback_site("Sichuan secondary", native=26430, https=26443, public_key=SERVER_KEY)
    assert await secondary.publish_site(site) == ["0.NA/88.168"]
    code, values = resolve(secondary, "0.NA/88.168")
    assert code == ResponseCode.SUCCESS
    [hs_site] = [v for v in values if v.type == "HS_SITE"]
    assert hs_site.index == 1 and hs_site.data == encode_site(site)
    stored = secondary.load("0.NA/88.168")
    assert stored is not None and {v.index for v in stored.values} == {1, 100, 300}  # the admin's stay
    assert await secondary.publish_site(site) == []  # current: no write
    moved = loopback_site("Sichuan secondary", native=26431, https=26443, public_key=SERVER_KEY)
    assert await secondary.publish_site(moved) == ["0.NA/88.168"]
    _, values = resolve(secondary, "0.NA/88.168")
    assert [v.data for v in values if v.type == "HS_SITE"] == [encode_site(moved)]
    # A new key on the same ports (server_key.pem replaced), and a new name: still this node's.
    rekeyed = loopback_site("renamed", native=26431, https=26443, public_key=SERVER_KEY + b"x")
    assert await secondary.publish_site(rekeyed) == ["0.NA/88.168"]
    _, values = resolve(secondary, "0.NA/88.168")
    assert [v.data for v in values if v.type == "HS_SITE"] == [encode_site(rekeyed)]


async def test_an_operators_sites_and_the_tops_delegations_are_left_alone(
    top: FederatedService, secondary: FederatedService
) -> None:
    # The top is home to 0.NA: its own 0.NA/0.NA gets its site; 0.NA/88.168 is a delegation
    # (88.168 is not homed at the top) and keeps naming the secondary.
    before = resolve(top, "0.NA/88.168")
    top_site = loopback_site("Chongqing top", native=2641)
    assert await top.publish_site(top_site) == ["0.NA/0.NA"]
    assert resolve(top, "0.NA/88.168") == before
    assert resolve(top, "88.168/anything")[0] == ResponseCode.SERVICE_REFERRAL
    # An HS_SITE written for another site (a primary and its mirror, say) — on the same host and
    # under the same default name as this node: the operator's.
    other = site_value(7, loopback_site("idr node", native=2642, primary=False))
    r = secondary.handle(Request(Op.ADD_VALUE, "0.NA/88.168", values=(other,), identity=SEC_ADMIN))
    assert r.ok, r.message
    assert await secondary.publish_site(loopback_site("idr node", native=1)) == []
    _, values = resolve(secondary, "0.NA/88.168")
    assert [v.index for v in values if v.type == "HS_SITE"] == [7]


def test_own_site_goes_to_the_lowest_free_index() -> None:
    site = loopback_site("n", native=1)
    taken = tuple(HandleValue(i, "DESC", b"x") for i in (1, 2, 4))
    out = with_own_site(taken, site)
    assert out is not None and [v.index for v in out if v.type == "HS_SITE"] == [3]
    broken = (HandleValue(1, "HS_SITE", b"\x00"),)  # undecodable: not ours, an operator's
    assert with_own_site(broken, site) is None


async def test_home_and_unhome_keep_the_prefix_handle_naming_its_server(secondary: FederatedService) -> None:
    """Unhomed, a prefix handle that still named this node would refer the prefix's handles back
    to it (a referral loop); homed again, it names the node at once, not at the next start."""
    secondary.site_info = loopback_site("idr node", native=26430, public_key=SERVER_KEY)
    assert await secondary.publish_site(secondary.site_info) == ["0.NA/88.168"]
    r = secondary.handle(Request(Op.UNHOME_NA, "88.168", identity=SEC_ADMIN))
    assert r.ok, r.message
    stored = secondary.load("0.NA/88.168")
    assert stored is not None and not [v for v in stored.values if v.type == "HS_SITE"]
    assert resolve(secondary, "88.168/x")[0] == ResponseCode.SERVER_NOT_RESPONSIBLE  # not a 302 to itself
    r = secondary.handle(Request(Op.HOME_NA, "88.168", identity=SEC_ADMIN))
    assert r.ok, r.message
    _, values = resolve(secondary, "0.NA/88.168")
    assert [v.data for v in values if v.type == "HS_SITE"] == [encode_site(secondary.site_info)]
