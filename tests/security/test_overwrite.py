"""Issue 12, item 3: an admin holding only MODIFY_VALUE cannot take a handle over by replacing it.

Create with overwrite replaces the whole record; it needs the rights each change needs, as
the Handle System checks them (``HandleServer.getPermsAndSetTimestampsForCreationWithOverwrite``):
add/remove/modify value, and the *_ADMIN rights for HS_ADMIN values — over REST, the native
protocol and SNMS alike. The same admin may still replace what its rights cover.
"""

from __future__ import annotations

import pytest

from idr.codec.values import decode_admin, encode_admin
from idr.model.errors import ResponseCode
from idr.model.value import PERM_SECRET, AdminPermission, AdminRecord, HandleValue, ValueReference
from idr.resolver.client import HandleClient, ResponseError, SecretKeyAuth
from tests.security.conftest import Live, basic

TARGET = "88.100/target"
LIMITED = "88.100/limited"
LIMITED_SECRET = "limited-secret-1"


async def _setup(live: Live) -> str:
    status, _ = await live.put(TARGET, [{"index": 1, "type": "URL", "data": "https://example.org/a"}])
    assert status == 200
    return await live.identity(LIMITED, LIMITED_SECRET, AdminPermission.MODIFY_VALUE, on=TARGET)


def _admins(live: Live) -> list[AdminRecord]:
    rec = live.record(TARGET)
    assert rec is not None
    return [decode_admin(v.data) for v in rec.values if v.type == "HS_ADMIN"]


def _takeover_values(me: str) -> list[dict[str, object]]:
    index, _, handle = me.partition(":")
    own = {"handle": handle, "index": int(index), "permissions": "111111111111"}
    return [
        {"index": 1, "type": "URL", "data": "https://evil.example/"},
        {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": own}},
    ]


async def test_rest_put_overwrite_with_only_modify_value_cannot_replace_the_admins(live: Live) -> None:
    me = await _setup(live)
    admins = _admins(live)
    before = live.snapshot()
    status, body = await live.put(TARGET, {"values": _takeover_values(me)}, basic(me, LIMITED_SECRET))
    assert status == 403, body
    assert body["responseCode"] == ResponseCode.INSUFFICIENT_PERMISSIONS
    assert "modify_admin" in body["message"] and "remove_admin" in body["message"]
    assert live.snapshot() == before and _admins(live) == admins


async def test_rest_put_overwrite_within_its_rights_still_works(live: Live) -> None:
    """Changing only the URL (every HS_ADMIN sent back as it is) needs MODIFY_VALUE alone."""
    me = await _setup(live)
    rec = live.record(TARGET)
    assert rec is not None
    from idr.codec import rest

    values = rest.values_to_json(rec.values)
    for v in values:
        if v["index"] == 1:
            v["data"] = "https://example.org/b"
    status, body = await live.put(TARGET, {"values": values}, basic(me, LIMITED_SECRET))
    assert status == 200, body
    after = live.record(TARGET)
    assert after is not None and after.value(1) is not None
    assert after.value(1).data == b"https://example.org/b"  # type: ignore[union-attr]
    # the admins were sent back unchanged, so they keep their timestamps
    assert [v for v in after.values if v.type == "HS_ADMIN"] == [
        v for v in rec.values if v.type == "HS_ADMIN"
    ]
    # but adding a value needs ADD_VALUE, which it does not hold
    values.append({"index": 2, "type": "DESC", "data": "more"})
    status, body = await live.put(TARGET, {"values": values}, basic(me, LIMITED_SECRET))
    assert status == 403 and "add_value" in body["message"], body


async def test_native_create_with_overwrite_is_checked_the_same_way(live: Live) -> None:
    me = await _setup(live)
    assert live.node.listeners.native
    host, port = live.node.listeners.native
    before = live.snapshot()
    mine = AdminRecord(LIMITED, 300, int(AdminPermission.ALL))
    values = [
        HandleValue(1, "URL", b"https://evil.example/"),
        HandleValue(100, "HS_ADMIN", encode_admin(mine)),
    ]
    auth = SecretKeyAuth(ValueReference.parse(me), LIMITED_SECRET.encode())
    async with HandleClient(host, port, auth=auth) as c:
        with pytest.raises(ResponseError) as e:
            await c.create(TARGET, values, overwrite=True)
    assert e.value.code == ResponseCode.INSUFFICIENT_PERMISSIONS
    assert live.snapshot() == before


async def test_snms_update_cannot_add_an_admin_or_replace_the_record(live: Live) -> None:
    me = await _setup(live)
    admins = _admins(live)
    async with live.client.post(
        f"{live.https}/identity/token", json={"username": me, "password": LIMITED_SECRET}
    ) as r:
        token = (await r.json())["data"]["token"]
    headers = {"Authorization": f"Bearer {token}"}
    # an HS_ADMIN whose bytes survive as a JSON string: perms 0x0F7F, handle, index 300
    crafted = encode_admin(AdminRecord(LIMITED, 300, 0x0F7F)).decode("utf-8")
    item = {
        "handle": TARGET,
        "templateVersion": "v1",
        "value": [
            {"index": 1, "type": "URL", "data": "https://evil.example/"},
            {"index": 5, "type": "HS_ADMIN", "data": crafted},
        ],
    }
    before = live.snapshot()
    async with live.client.put(f"{live.https}/identityv2/data", json=item, headers=headers) as r:
        body = await r.json()
    assert body["status"] in (-2, -3), body
    assert live.snapshot() == before and _admins(live) == admins
    # its right to modify values is still good for what SNMS is for
    item["value"] = [{"index": 1, "type": "URL", "data": "https://example.org/c"}]
    async with live.client.put(f"{live.https}/identityv2/data", json=item, headers=headers) as r:
        body = await r.json()
    # replacing all non-HS values adds the template value 1001: that needs ADD_VALUE it lacks
    assert body["status"] == -3, body
    assert live.snapshot() == before


async def test_a_limited_admin_key_value_is_not_enough_to_drop_a_secret(live: Live) -> None:
    """Replacing a record without its HS_SECKEY removes a value: REMOVE_VALUE is needed."""
    me = await _setup(live)
    svc = live.node.service
    key = HandleValue(300, "HS_SECKEY", b"target-own-secret", permissions=PERM_SECRET)
    rec = live.record(TARGET)
    assert rec is not None
    from idr.core.request import Op, Request
    from tests.security.conftest import ADMIN_REF

    r = await svc.submit(Request(Op.ADD_VALUE, TARGET, values=(key,), identity=ADMIN_REF))
    assert r.ok
    before = live.snapshot()
    kept = [v for v in rec.values if v.type == "HS_ADMIN"]
    r = await svc.submit(
        Request(
            Op.CREATE_HANDLE,
            TARGET,
            values=(*kept, HandleValue(1, "URL", b"https://example.org/a")),
            identity=ValueReference.parse(me),
            overwrite=True,
        )
    )
    assert r.code == ResponseCode.INSUFFICIENT_PERMISSIONS, r
    assert live.snapshot() == before
