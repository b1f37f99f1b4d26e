"""A record's total size is capped (``[limits] max_record_bytes``) on every write path.

Without a cap, a writer with ADD_VALUE could grow one handle value by value (each under the
1 MiB a value may hold) until its answer no longer fits a Handle message (256 KiB) and every
cache and resolution of it costs megabytes. Each path — REST create and add, native create and
add, SNMS create, SNMS batch, ``idr import`` — is refused with INVALID_VALUE (REST 400, SNMS -2)
and nothing is stored; a record near the default cap still resolves over TCP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from idr.codec.bodies import DIGEST_SHA256, RequestDigest, ResolutionResponse
from idr.codec.envelope import OpCode
from idr.codec.message import Message, encode_message
from idr.codec.values import MAX_RECORD_BYTES, encode_values, values_size
from idr.core.config import ConfigError, NodeConfig
from idr.core.importer import import_lines
from idr.core.request import Op, Request
from idr.model.errors import ResponseCode
from idr.model.handle import MAX_HANDLE_LENGTH
from idr.model.value import HandleRecord, HandleValue, ValueReference
from idr.resolver.client import HandleClient, ResponseError, SecretKeyAuth
from tests.security.conftest import ADMIN, ADMIN_REF, SECRET, Live, basic, start_live

CAP = 4096


@pytest.fixture
async def small(tmp_path: Path) -> AsyncIterator[Live]:
    async with start_live(tmp_path / "node", limits={"max_record_bytes": CAP}) as node:
        yield node


def _url(index: int, size: int) -> dict[str, Any]:
    return {"index": index, "type": "DESC", "data": "x" * size}


async def _token(live: Live) -> str:
    login = {"username": ADMIN, "password": SECRET}
    async with live.client.post(f"{live.https}/identity/token", json=login) as r:
        token: str = (await r.json())["data"]["token"]
    return token


def test_values_size_is_the_encoded_size() -> None:
    values = [
        HandleValue(1, "URL", b"https://example.org/"),
        HandleValue(2, "描述", "中文".encode(), references=(ValueReference("88.100/é", 3),)),
    ]
    assert values_size(values) == len(encode_values(values))


def test_a_record_at_the_default_cap_fits_one_handle_message() -> None:
    """The longest handle, values of exactly MAX_RECORD_BYTES, a request digest: still encodable."""
    handle = "88.100/" + "h" * (MAX_HANDLE_LENGTH - 7)
    overhead = values_size([HandleValue(1, "DESC", b"")])
    values = (HandleValue(1, "DESC", b"x" * (MAX_RECORD_BYTES - overhead)),)
    assert values_size(values) == MAX_RECORD_BYTES
    msg = Message(
        OpCode.RESOLUTION,
        ResolutionResponse(handle, values),
        ResponseCode.SUCCESS,
        request_digest=RequestDigest(DIGEST_SHA256, b"d" * 32),
    )
    assert len(encode_message(msg)) <= 262144 + 20
    too_big = (HandleValue(1, "DESC", b"x" * (262144 - overhead)),)
    with pytest.raises(ValueError):
        encode_message(Message(OpCode.RESOLUTION, ResolutionResponse(handle, too_big), ResponseCode.SUCCESS))


def test_the_cap_cannot_be_raised_past_what_an_answer_can_carry(tmp_path: Path) -> None:
    from idr.cli.node import init_node

    data = tmp_path / "n"
    init_node(data, "88.100", secret=SECRET, https="127.0.0.1:0")
    cfg = NodeConfig.load(data)
    cfg.limits.max_record_bytes = MAX_RECORD_BYTES + 1
    cfg.save()
    with pytest.raises(ConfigError, match="max_record_bytes"):
        NodeConfig.load(data)


async def test_rest_create_and_add_are_capped(small: Live) -> None:
    before = small.snapshot()
    status, body = await small.put("88.100/big", {"values": [_url(1, 3000), _url(2, 3000)]})
    assert (status, body["responseCode"]) == (400, ResponseCode.INVALID_VALUE), body
    assert "max_record_bytes" in body["message"]
    assert small.snapshot() == before
    status, body = await small.put("88.100/grow", {"values": [_url(1, 3000)]})
    assert status in (200, 201), body
    before = small.snapshot()
    # one value at a time, each small: the record may not grow past the cap
    status, body = await small.put("88.100/grow", [_url(2, 1500)], query="?index=2")
    assert (status, body["responseCode"]) == (400, ResponseCode.INVALID_VALUE), body
    assert small.snapshot() == before
    status, body = await small.put("88.100/grow", [_url(2, 500)], query="?index=2")
    assert status in (200, 201), body  # within the cap: fine


async def test_native_create_and_add_are_capped(small: Live) -> None:
    assert small.node.listeners.native
    host, port = small.node.listeners.native
    before = small.snapshot()
    async with HandleClient(host, port, auth=SecretKeyAuth(ADMIN_REF, SECRET.encode())) as c:
        with pytest.raises(ResponseError) as e:
            await c.create("88.100/nbig", [HandleValue(1, "DESC", b"x" * 5000)])
        assert e.value.code == ResponseCode.INVALID_VALUE
        assert small.snapshot() == before
        await c.create("88.100/ngrow", [HandleValue(1, "DESC", b"x" * 3000)])
        before = small.snapshot()
        for change in (c.add_values, c.modify_values):
            index = 2 if change == c.add_values else 1
            with pytest.raises(ResponseError) as e:
                await change("88.100/ngrow", [HandleValue(index, "DESC", b"y" * 4100)])
            assert e.value.code == ResponseCode.INVALID_VALUE
    assert small.snapshot() == before


async def test_snms_create_and_batch_are_capped(small: Live) -> None:
    headers = {"Authorization": f"Bearer {await _token(small)}"}
    before = small.snapshot()

    def item(handle: str) -> dict[str, Any]:
        fields = {
            "manufacturer": "Yibin Cells",
            "model": "LFP-280",
            "chemistry": "LFP",
            "capacity_ah": "280",
            "production_date": "2024-07-18",
            "batch": "B-1",
        }
        values = [
            {"index": 2 + i, "type": k, "data": {"format": "string", "value": v}}
            for i, (k, v) in enumerate(fields.items())
        ]
        values.append({"index": 50, "type": "NOTE", "data": {"format": "string", "value": "n" * 5000}})
        return {"handle": handle, "templateVersion": "battery-cell@1", "value": values}

    url = f"{small.https}/identityv2/data"
    async with small.client.post(url, json=item("88.100/s1"), headers=headers) as r:
        body = await r.json()
    assert body["status"] == -2 and "max_record_bytes" in body["message"], body
    url = f"{small.https}/identityv2/data/batchCreate"
    async with small.client.post(url, json=[item("88.100/s2"), item("88.100/s3")], headers=headers) as r:
        body = await r.json()
    assert [(i["code"], "max_record_bytes" in i["msg"]) for i in body["data"]] == [(-2, True)] * 2, body
    assert small.snapshot() == before


async def test_import_lines_over_the_cap_are_rejected_one_by_one(small: Live) -> None:
    import orjson

    service = small.node.service
    lines = [
        orjson.dumps({"handle": "88.100/i1", "values": [_url(1, 100)]}),
        orjson.dumps({"handle": "88.100/i2", "values": [_url(1, 3000), _url(2, 3000)]}),
    ]
    report = await import_lines(service, lines)  # type: ignore[arg-type]
    assert report.loaded == 1
    assert [(n, "max_record_bytes" in why) for n, why in report.errors] == [(2, True)]
    assert small.record("88.100/i2") is None and small.record("88.100/i1") is not None


async def test_internal_writes_are_capped_too(small: Live) -> None:
    """The core's own staging refuses an oversized record whoever writes it (one write path)."""
    svc = small.node.service
    big = (HandleValue(1, "DESC", b"x" * 5000),)
    resp = await svc.submit(Request(Op.CREATE_HANDLE, "88.100/core", values=big, identity=ADMIN_REF))
    assert resp.code == ResponseCode.INVALID_VALUE


async def test_a_record_at_the_default_cap_resolves_over_tcp_and_udp(live: Live) -> None:
    """Near the default cap (many values, each well under 1 MiB): one more value is refused,
    and the record is answered over TCP in one message, so the cap matches what the protocol
    carries."""
    chunk = 16 * 1024
    overhead = values_size([HandleValue(1, "DESC", b"")]) - 4
    n = (MAX_RECORD_BYTES - 4) // (chunk + overhead)
    values = tuple(HandleValue(i + 1, "DESC", b"z" * chunk) for i in range(n))
    assert MAX_RECORD_BYTES - values_size(values) < chunk + overhead
    svc = live.node.service
    resp = await svc.submit(Request(Op.CREATE_HANDLE, "88.100/near-cap", values=values, identity=ADMIN_REF))
    assert resp.ok, resp
    one_more = HandleValue(n + 1, "DESC", b"z" * chunk)
    resp = await svc.submit(Request(Op.ADD_VALUE, "88.100/near-cap", values=(one_more,), identity=ADMIN_REF))
    assert resp.code == ResponseCode.INVALID_VALUE
    assert live.node.listeners.native
    host, port = live.node.listeners.native
    async with HandleClient(host, port) as c:
        got = await c.resolve_values("88.100/near-cap", transport="tcp")
        assert sum(v.type == "DESC" for v in got) == n  # and the default HS_ADMIN


async def test_a_record_stored_larger_before_may_shrink_but_not_grow(small: Live) -> None:
    """A record over the cap (stored before it was lowered) can still lose values, not gain any."""
    from idr.store.base import Write

    svc = small.node.service
    big = HandleRecord(
        "88.100/legacy",
        (*(HandleValue(i, "DESC", b"x" * 2000) for i in range(1, 5)), _admin_value()),
    )
    svc.store.commit("legacy", "test", [Write("88.100/LEGACY", big)])
    svc.cache.invalidate(["88.100/LEGACY"])
    before = small.snapshot()
    status, body = await small.put("88.100/legacy", [_url(9, 10)], query="?index=9")
    assert (status, body["responseCode"]) == (400, ResponseCode.INVALID_VALUE), body
    assert small.snapshot() == before
    async with small.client.delete(f"{small.https}/api/handles/88.100/legacy?index=4", headers=basic()) as r:
        assert r.status == 200, await r.text()
    record = small.record("88.100/legacy")
    assert record is not None and sorted(v.index for v in record.values) == [1, 2, 3, 100]


def _admin_value() -> HandleValue:
    from idr.codec.values import encode_admin
    from idr.model.value import AdminRecord

    return HandleValue(100, "HS_ADMIN", encode_admin(AdminRecord("0.NA/88.100", 300, 0x0FFF)))
