"""Issue 12, items 6 and 9: what a write stores is decoded and checked first, on every path.

A value that cannot mean what its type says (an admin that names no handle, a group member
that is no handle, a key that is no key, an SM2 point off the curve, an index sent as a string)
is refused with INVALID_VALUE and nothing is stored — over REST, SNMS and the native protocol.
A secret key is never publicly readable, whatever permissions it was written with.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from idr.codec.sm2 import SM2PrivateKey
from idr.codec.values import encode_admin, encode_vlist
from idr.core.request import Op, Request
from idr.model.errors import ResponseCode
from idr.model.value import AdminRecord, HandleValue, ValueReference
from idr.resolver.client import HandleClient, ResponseError, SecretKeyAuth
from tests.security.conftest import ADMIN_REF, SECRET, Live


def _b64(data: bytes) -> dict[str, str]:
    return {"format": "base64", "value": base64.b64encode(data).decode()}


def _off_curve_sm2() -> bytes:
    """A well-formed SM2 SubjectPublicKeyInfo whose point is not on the curve."""
    good = SM2PrivateKey.generate().public_key().to_der()
    bad = good[:-1] + bytes([good[-1] ^ 1])
    return b"\x00\x0bSM2_PUB_KEY\x00\x00" + len(bad).to_bytes(4, "big") + bad


HOSTILE: dict[str, dict[str, Any]] = {
    "admin handle without a slash": {
        "index": 100,
        "type": "HS_ADMIN",
        "data": {"format": "admin", "value": {"handle": "noslash", "index": 300, "permissions": "*"}},
    },
    "admin index -5": {
        "index": 100,
        "type": "HS_ADMIN",
        "data": {"format": "admin", "value": {"handle": "0.NA/88.100", "index": -5, "permissions": "*"}},
    },
    "vlist member that is no handle": {
        "index": 200,
        "type": "HS_VLIST",
        "data": {"format": "vlist", "value": [{"handle": "bad", "index": 300}]},
    },
    "public key AAAA": {"index": 300, "type": "HS_PUBKEY", "data": _b64(b"\x00\x00\x00\x00")},
    "SM2 key off the curve": {"index": 300, "type": "HS_PUBKEY", "data": _b64(_off_curve_sm2())},
    "index as a string": {"index": "1", "type": "URL", "data": "https://example.org/"},
    "empty secret key": {"index": 300, "type": "HS_SECKEY", "data": ""},
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_rest_refuses_undecodable_values_and_stores_nothing(live: Live, case: str) -> None:
    before = live.snapshot()
    url_value = {"index": 1, "type": "URL", "data": "https://example.org/"}
    values = [HOSTILE[case]] if case == "index as a string" else [url_value, HOSTILE[case]]
    status, body = await live.put("88.100/hostile", {"values": values})
    assert status == 400, body
    assert body["responseCode"] == ResponseCode.INVALID_VALUE, body
    assert live.snapshot() == before
    assert live.record("88.100/hostile") is None


async def test_add_value_path_checks_too(live: Live) -> None:
    status, _ = await live.put("88.100/x", [{"index": 1, "type": "URL", "data": "https://example.org/"}])
    assert status == 200
    before = live.snapshot()
    status, body = await live.put("88.100/x", [HOSTILE["vlist member that is no handle"]], query="?index=200")
    assert (status, body["responseCode"]) == (400, ResponseCode.INVALID_VALUE), body
    assert live.snapshot() == before


async def test_native_create_refuses_them_too(live: Live) -> None:
    assert live.node.listeners.native
    host, port = live.node.listeners.native
    auth = SecretKeyAuth(ADMIN_REF, SECRET.encode())
    bad = HandleValue(100, "HS_ADMIN", encode_admin(AdminRecord("noslash", 300)))
    member = HandleValue(200, "HS_VLIST", encode_vlist([ValueReference("bad", 1)]))
    before = live.snapshot()
    async with HandleClient(host, port, auth=auth) as c:
        for v in (bad, member):
            with pytest.raises(ResponseError) as e:
                await c.create("88.100/native-hostile", [v])
            assert e.value.code == ResponseCode.INVALID_VALUE
    assert live.snapshot() == before


async def test_snms_path_refuses_a_key_that_is_no_key(live: Live) -> None:
    async with live.client.post(
        f"{live.https}/identity/token", json={"username": "300:0.NA/88.100", "password": SECRET}
    ) as r:
        token = (await r.json())["data"]["token"]
    before = live.snapshot()
    item = {
        "handle": "88.100/snms-hostile",
        "templateVersion": "v1",
        "value": [{"index": 5, "type": "HS_PUBKEY", "data": "AAAA"}],
    }
    headers = {"Authorization": f"Bearer {token}"}
    async with live.client.post(f"{live.https}/identityv2/data", json=item, headers=headers) as r:
        body = await r.json()
    assert body["status"] != 1, body
    assert live.snapshot() == before


# ----------------------------------------------------------------------------- item 6


async def test_secret_key_written_without_permissions_is_never_public(live: Live) -> None:
    """A REST value without ``permissions`` gets 1110; for a secret key that would publish it."""
    values = [
        {"index": 1, "type": "URL", "data": "https://example.org/"},
        {"index": 300, "type": "HS_SECKEY", "data": "the-secret-of-x"},
    ]
    status, _ = await live.put("88.100/x", {"values": values})
    assert status == 200
    async with live.client.get(f"{live.https}/api/handles/88.100/x") as r:
        text = await r.text()
    assert "the-secret-of-x" not in text and "HS_SECKEY" not in text
    async with live.client.get(f"{live.http}/88.100/x?noredirect") as r:
        assert "the-secret-of-x" not in await r.text()
    stored = live.record("88.100/x")
    assert stored is not None
    seckey = stored.value(300)
    assert seckey is not None and seckey.permissions == 0b1100
    # its owner still reads it
    resp = await live.node.service.submit(
        Request(Op.RESOLUTION, "88.100/x", identity=ADMIN_REF, public_only=False)
    )
    assert any(v.data == b"the-secret-of-x" for v in resp.values)


async def test_secret_key_stored_public_by_an_older_node_is_still_hidden(live: Live) -> None:
    """Data that reached the store another way (an import or replication from an older node)."""
    from idr.model.value import PERM_DEFAULT, HandleRecord
    from idr.store.base import Write

    rec = HandleRecord(
        "88.100/old",
        (
            HandleValue(1, "URL", b"https://example.org/"),
            HandleValue(300, "HS_SECKEY", b"old-secret", permissions=PERM_DEFAULT),
        ),
    )
    live.node.service.store.commit("test", "", [Write("88.100/OLD", rec)])
    live.node.service.on_external_commit(["88.100/OLD"])
    async with live.client.get(f"{live.https}/api/handles/88.100/old") as r:
        assert "old-secret" not in await r.text()
    resp = await live.node.service.submit(Request(Op.RESOLUTION, "88.100/old", types=("HS_SECKEY",)))
    assert resp.code == ResponseCode.VALUES_NOT_FOUND and not resp.values
    asked = Request(Op.RESOLUTION, "88.100/old", types=("HS_SECKEY",), public_only=False)
    assert (await live.node.service.submit(asked)).code == ResponseCode.AUTHENTICATION_NEEDED
