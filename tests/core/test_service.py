"""The core's rules, exercised on a real SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest

from idr.codec.values import decode_admin, encode_admin, encode_vlist
from idr.core.request import Op, Request
from idr.core.service import NodeService
from idr.model.errors import ResponseCode
from idr.model.value import (
    PERM_ADMIN_READ,
    PERM_ADMIN_WRITE,
    PERM_SECRET,
    AdminPermission,
    AdminRecord,
    HandleValue,
    ValueReference,
)
from idr.store.sqlite import SqliteStore
from tests.core.conftest import ADMIN, SECRET

URL = HandleValue(1, "URL", b"https://example.org/a")


def create(
    svc: NodeService,
    handle: str,
    *values: HandleValue,
    who: ValueReference | None = ADMIN,
    overwrite: bool = False,
) -> ResponseCode:
    return svc.handle(
        Request(Op.CREATE_HANDLE, handle, values=values, identity=who, overwrite=overwrite)
    ).code


def resolve(svc: NodeService, handle: str, **kw: object) -> tuple[ResponseCode, tuple[HandleValue, ...]]:
    r = svc.handle(Request(Op.RESOLUTION, handle, **kw))  # type: ignore[arg-type]
    return r.code, r.values


def test_create_then_resolve_with_server_stamped_timestamp(service: NodeService) -> None:
    service.clock = lambda: 1_700_000_000.0
    assert create(service, "88.100/a", URL) == ResponseCode.SUCCESS
    code, values = resolve(service, "88.100/A")  # prefix and suffix fold ASCII case
    assert code == ResponseCode.SUCCESS
    assert values[0].data == URL.data and values[0].timestamp == 1_700_000_000
    admin = decode_admin(values[1].data)  # creator became the admin
    assert (values[1].type, admin.handle, admin.index) == ("HS_ADMIN", "0.NA/88.100", 300)


def test_create_existing_is_refused_unless_overwrite(service: NodeService) -> None:
    assert create(service, "88.100/a", URL) == ResponseCode.SUCCESS
    other = HandleValue(1, "URL", b"https://example.org/b")
    assert create(service, "88.100/a", other) == ResponseCode.HANDLE_ALREADY_EXISTS
    assert resolve(service, "88.100/a")[1][0].data == URL.data
    assert create(service, "88.100/a", other, overwrite=True) == ResponseCode.SUCCESS
    assert resolve(service, "88.100/a")[1][0].data == other.data


def test_unhomed_prefix_is_not_served(service: NodeService) -> None:
    r = service.handle(Request(Op.RESOLUTION, "99.999/foo"))
    assert (r.code, r.message) == (ResponseCode.SERVER_NOT_RESPONSIBLE, "That prefix doesn't live here")
    assert create(service, "99.999/foo", URL) == ResponseCode.SERVER_NOT_RESPONSIBLE


def test_not_found_and_values_not_found(service: NodeService) -> None:
    assert resolve(service, "88.100/nope")[0] == ResponseCode.HANDLE_NOT_FOUND
    create(service, "88.100/a", URL)
    assert resolve(service, "88.100/a", types=("EMAIL",))[0] == ResponseCode.VALUES_NOT_FOUND
    code, values = resolve(service, "88.100/a", types=("URL",))
    assert code == ResponseCode.SUCCESS and [v.index for v in values] == [1]
    assert [v.index for v in resolve(service, "88.100/a", indexes=(100,))[1]] == [100]


def test_subtype_filter(service: NodeService) -> None:
    create(service, "88.100/a", URL, HandleValue(2, "URL.mirror", b"x"), HandleValue(3, "EMAIL", b"e"))
    assert [v.index for v in resolve(service, "88.100/a", types=("URL.",))[1]] == [1, 2]
    assert [v.index for v in resolve(service, "88.100/a", types=("URL",))[1]] == [1]


def test_writes_need_authentication_and_rights(service: NodeService) -> None:
    assert create(service, "88.100/a", URL, who=None) == ResponseCode.AUTHENTICATION_NEEDED
    stranger = ValueReference("88.100/stranger", 300)
    assert create(service, "88.100/a", URL, who=stranger) == ResponseCode.INSUFFICIENT_PERMISSIONS
    assert resolve(service, "88.100/a")[0] == ResponseCode.HANDLE_NOT_FOUND


def test_handle_admin_rights_come_from_hs_admin(service: NodeService) -> None:
    owner = ValueReference("88.100/owner", 300)
    create(service, "88.100/owner", HandleValue(300, "HS_SECKEY", b"pw", permissions=PERM_SECRET))
    limited = AdminRecord(owner.handle, owner.index, AdminPermission.ADD_VALUE | AdminPermission.MODIFY_VALUE)
    create(service, "88.100/item", URL, HandleValue(100, "HS_ADMIN", encode_admin(limited)))
    add = Request(Op.ADD_VALUE, "88.100/item", values=(HandleValue(2, "EMAIL", b"a@b"),), identity=owner)
    assert service.handle(add).code == ResponseCode.SUCCESS
    rm = Request(Op.REMOVE_VALUE, "88.100/item", indexes=(2,), identity=owner)
    assert service.handle(rm).code == ResponseCode.INSUFFICIENT_PERMISSIONS
    delete = Request(Op.DELETE_HANDLE, "88.100/item", identity=owner)
    assert service.handle(delete).code == ResponseCode.INSUFFICIENT_PERMISSIONS
    # Changing the admin value itself needs MODIFY_ADMIN, which the owner lacks.
    grab = HandleValue(100, "HS_ADMIN", encode_admin(AdminRecord(owner.handle, 300, AdminPermission.ALL)))
    mod = Request(Op.MODIFY_VALUE, "88.100/item", values=(grab,), identity=owner)
    assert service.handle(mod).code == ResponseCode.INSUFFICIENT_PERMISSIONS
    assert [v.index for v in resolve(service, "88.100/item")[1]] == [1, 2, 100]


def test_group_membership_through_hs_vlist(service: NodeService) -> None:
    member = ValueReference("88.100/alice", 300)
    create(service, "88.100/alice", HandleValue(300, "HS_SECKEY", b"pw", permissions=PERM_SECRET))
    create(service, "88.100/group", HandleValue(200, "HS_VLIST", encode_vlist([member])))
    group_admin = AdminRecord("88.100/group", 200, AdminPermission.ALL)
    create(service, "88.100/doc", URL, HandleValue(100, "HS_ADMIN", encode_admin(group_admin)))
    delete = Request(Op.DELETE_HANDLE, "88.100/doc", identity=member)
    assert service.handle(delete).code == ResponseCode.SUCCESS


def test_vlist_cycle_does_not_loop(service: NodeService) -> None:
    a = ValueReference("88.100/ga", 200)
    b = ValueReference("88.100/gb", 200)
    create(service, "88.100/ga", HandleValue(200, "HS_VLIST", encode_vlist([b])))
    create(service, "88.100/gb", HandleValue(200, "HS_VLIST", encode_vlist([a])))
    create(service, "88.100/doc", URL, HandleValue(100, "HS_ADMIN", encode_admin(AdminRecord(a.handle, 200))))
    outsider = ValueReference("88.100/eve", 300)
    assert service.handle(Request(Op.DELETE_HANDLE, "88.100/doc", identity=outsider)).code == (
        ResponseCode.INSUFFICIENT_PERMISSIONS
    )


def test_private_values(service: NodeService) -> None:
    secret = HandleValue(5, "NOTE", b"internal", permissions=PERM_ADMIN_READ | PERM_ADMIN_WRITE)
    create(service, "88.100/a", URL, secret)
    assert [v.index for v in resolve(service, "88.100/a")[1]] == [1, 100]
    assert resolve(service, "88.100/a", public_only=False)[0] == ResponseCode.AUTHENTICATION_NEEDED
    code, values = resolve(service, "88.100/a", public_only=False, identity=ADMIN)
    assert code == ResponseCode.SUCCESS and 5 in [v.index for v in values]


def test_add_modify_remove(service: NodeService) -> None:
    create(service, "88.100/a", URL)
    dup = Request(Op.ADD_VALUE, "88.100/a", values=(URL,), identity=ADMIN)
    assert service.handle(dup).code == ResponseCode.VALUE_ALREADY_EXISTS
    new_url = HandleValue(1, "URL", b"https://new")
    assert service.handle(Request(Op.MODIFY_VALUE, "88.100/a", values=(new_url,), identity=ADMIN)).ok
    missing = HandleValue(9, "URL", b"x")
    r = service.handle(Request(Op.MODIFY_VALUE, "88.100/a", values=(missing,), identity=ADMIN))
    assert r.code == ResponseCode.VALUES_NOT_FOUND
    assert service.handle(Request(Op.REMOVE_VALUE, "88.100/a", indexes=(9,), identity=ADMIN)).code == (
        ResponseCode.VALUES_NOT_FOUND
    )
    assert service.handle(Request(Op.REMOVE_VALUE, "88.100/a", indexes=(1,), identity=ADMIN)).ok
    assert [v.index for v in resolve(service, "88.100/a")[1]] == [100]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (HandleValue(0, "URL", b"x"), "index 0"),
        (HandleValue(1, "", b"x"), "empty"),
        (HandleValue(1, "HS_BOGUS", b"x"), "unknown reserved type"),
        (HandleValue(1, "HS_ADMIN", b"\x00"), "HS_ADMIN"),
        (HandleValue(1, "HS_VLIST", b"\x00\x00\x00\x05"), "HS_VLIST"),
        (HandleValue(1, "HS_ALIAS", b"no-slash"), "HS_ALIAS"),
        (HandleValue(1, "URL", b"x", ttl=-5), "negative"),
    ],
)
def test_invalid_values_are_never_stored(service: NodeService, value: HandleValue, fragment: str) -> None:
    seq = service.store.last_seq()
    r = service.handle(Request(Op.CREATE_HANDLE, "88.100/bad", values=(value,), identity=ADMIN))
    assert r.code == ResponseCode.INVALID_VALUE and fragment in r.message
    assert service.store.last_seq() == seq
    assert resolve(service, "88.100/bad")[0] == ResponseCode.HANDLE_NOT_FOUND


def test_duplicate_index_rejected(service: NodeService) -> None:
    r = service.handle(Request(Op.CREATE_HANDLE, "88.100/d", values=(URL, URL), identity=ADMIN))
    assert r.code == ResponseCode.INVALID_VALUE and "twice" in r.message


@pytest.mark.parametrize("bad", ["", "noslash", "/suffix", "88.100/", "88..100/x", "88.100/a\x00b"])
def test_invalid_handles(service: NodeService, bad: str) -> None:
    assert resolve(service, bad)[0] == ResponseCode.INVALID_HANDLE
    assert create(service, bad, URL) == ResponseCode.INVALID_HANDLE


def test_mint_new_suffix(service: NodeService) -> None:
    r = service.handle(Request(Op.CREATE_HANDLE, "88.100/", values=(URL,), identity=ADMIN, mint=True))
    assert r.ok and r.handle.startswith("88.100/") and len(r.handle) > len("88.100/")
    assert resolve(service, r.handle)[0] == ResponseCode.SUCCESS
    r2 = service.handle(Request(Op.CREATE_HANDLE, "88.100/", values=(URL,), identity=ADMIN, mint=True))
    assert r2.handle != r.handle


def test_list_handles_paged_by_key(service: NodeService) -> None:
    for i in range(25):
        create(service, f"88.100/item-{i:02d}", URL)
    anon = service.handle(Request(Op.LIST_HANDLES, "88.100"))
    assert anon.code == ResponseCode.AUTHENTICATION_NEEDED
    everything = service.handle(Request(Op.LIST_HANDLES, "0.NA/88.100", identity=ADMIN))
    assert everything.total == 25 and len(everything.handles) == 25
    pages = [
        service.handle(Request(Op.LIST_HANDLES, "88.100", identity=ADMIN, page=p, page_size=10)).handles
        for p in range(3)
    ]
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [h for p in pages for h in p] == sorted(everything.handles)
    counted = service.handle(Request(Op.LIST_HANDLES, "88.100", identity=ADMIN, page=0, page_size=0))
    assert counted.total == 25 and counted.handles == ()


def test_secret_authentication(service: NodeService) -> None:
    assert service.authenticate_secret(ADMIN, SECRET)
    assert not service.authenticate_secret(ADMIN, b"wrong")
    assert not service.authenticate_secret(ValueReference("0.NA/88.100", 301), SECRET)
    assert service.authenticate_secret(ValueReference("0.NA/88.100", 0), SECRET)
    assert not service.authenticate_secret(ValueReference("88.100/nobody", 300), SECRET)


def test_home_and_unhome(service: NodeService) -> None:
    assert service.handle(Request(Op.HOME_NA, "88.200")).code == ResponseCode.AUTHENTICATION_NEEDED
    assert service.handle(Request(Op.HOME_NA, "88.200", identity=ADMIN)).ok
    assert create(service, "88.200/x", URL) == ResponseCode.SUCCESS
    homed = service.handle(Request(Op.LIST_HOMED_NAS)).handles
    assert set(homed) == {"88.100", "88.200"}
    assert service.handle(Request(Op.UNHOME_NA, "0.NA/88.200", identity=ADMIN)).ok
    assert resolve(service, "88.200/x")[0] == ResponseCode.SERVER_NOT_RESPONSIBLE


def test_state_survives_reopen(tmp_path: Path, service: NodeService) -> None:
    create(service, "88.100/keep", URL)
    path = tmp_path / "idr.sqlite3"
    service.close()
    again = NodeService(SqliteStore(path), admins=[str(ADMIN)])
    try:
        assert resolve(again, "88.100/keep")[0] == ResponseCode.SUCCESS
    finally:
        again.close()
    service.store = SqliteStore(path)  # let the fixture close something open


def test_cache_is_invalidated_by_writes_and_listeners_hear_of_them(service: NodeService) -> None:
    heard: list[str] = []
    service.add_listener(heard.extend)
    create(service, "88.100/c", URL)
    assert resolve(service, "88.100/c")[0] == ResponseCode.SUCCESS  # now cached
    service.handle(Request(Op.DELETE_HANDLE, "88.100/c", identity=ADMIN))
    assert resolve(service, "88.100/c")[0] == ResponseCode.HANDLE_NOT_FOUND
    assert heard == ["88.100/C", "88.100/C"]


async def test_submit_without_a_runtime_runs_the_write_path_inline(service: NodeService) -> None:
    r = await service.submit(Request(Op.CREATE_HANDLE, "88.100/async", values=(URL,), identity=ADMIN))
    assert r.ok and r.seq == service.store.last_seq()
    assert (await service.submit(Request(Op.RESOLUTION, "88.100/async"))).ok
