"""Issue 12, item 4: the SNMS API takes passwords, hands out bearer tokens and takes writes over
HTTPS only — over plain HTTP every route is refused before anything is checked or stored."""

from __future__ import annotations

from tests.security.conftest import ADMIN, SECRET, Live

# templateVersion names one of the node's templates, and the record satisfies it (core.templates)
VEHICLE = {
    "vin": "LS5A3DKE0RA000001",
    "model": "x",
    "production_date": "2024-08-02",
    "battery_pack": "88.100/pack-1",
}
ITEM = {
    "handle": "88.100/plain",
    "templateVersion": "vehicle@1",
    "value": [{"index": 2 + i, "type": k, "data": v} for i, (k, v) in enumerate(VEHICLE.items())],
}


async def test_snms_over_plain_http_issues_no_token_and_takes_no_write(live: Live) -> None:
    login = {"username": ADMIN, "password": SECRET}
    for path in ("/identity/token", "/identity/token/v1"):
        async with live.client.post(f"{live.http}{path}", json=login) as r:
            body = await r.json()
            assert r.status == 403, body
        assert body["status"] == -1 and body["data"] is None and "HTTPS" in body["message"]
    # a token got over HTTPS is not accepted over plain HTTP either (it would travel in clear)
    async with live.client.post(f"{live.https}/identity/token", json=login) as r:
        token = (await r.json())["data"]["token"]
    headers = {"Authorization": f"Bearer {token}"}
    before = live.snapshot()
    for method, path, body_json in (
        ("POST", "/identityv2/data", ITEM),
        ("PUT", "/identityv2/data", ITEM),
        ("DELETE", "/identityv2/data?handle=0.NA/88.100", None),
        ("POST", "/identityv2/data/batchCreate", [ITEM]),
        ("GET", "/identityv2/data/detail?handle=0.NA/88.100", None),
    ):
        async with live.client.request(method, f"{live.http}{path}", json=body_json, headers=headers) as r:
            assert r.status == 403
            assert (await r.json())["status"] == -1
    assert live.snapshot() == before
    # the same over HTTPS works
    async with live.client.post(f"{live.https}/identityv2/data", json=ITEM, headers=headers) as r:
        assert (await r.json())["status"] == 1
    assert live.record("88.100/plain") is not None
