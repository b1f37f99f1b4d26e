"""SNMS v5-compatible API on a real node: tokens, CRUD, batches, the {status,message,data} envelope."""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from idr.codec.values import encode_admin
from idr.core.request import Op, Request
from idr.core.service import NodeService
from idr.core.templates import Template, TemplateRegistry, parse_template
from idr.model.value import PERM_SECRET, AdminPermission, AdminRecord, HandleValue, ValueReference
from idr.server import snms
from idr.server.tls import server_context
from idr.store.sqlite import SqliteStore

ADMIN = ValueReference("0.NA/88.100", 300)
SECRET = "123456"
APP = "88.100/app"  # an application identity with its own key and no rights of its own
APP_SECRET = "app-secret"
T0 = 1_565_827_200.0  # 2019-08-15 00:00 UTC = 08:00 in China


@dataclass
class SnmsNode:
    base: str
    session: aiohttp.ClientSession
    service: NodeService
    now: list[float]

    async def call(self, method: str, path: str, token: str | None = None, **kw: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(method, self.base + path, headers=headers, **kw) as r:
            assert r.status == 200
            assert r.content_type == "application/json"
            body: dict[str, Any] = await r.json()
        assert set(body) == {"status", "message", "data"}
        return body

    async def login(self, username: str = str(ADMIN), password: str = SECRET) -> str:
        body = await self.call("POST", "/identity/token", json={"username": username, "password": password})
        assert body["status"] == 1, body
        token: str = body["data"]["token"]
        return token


def _machine(version: int, snms_version: str) -> Template:
    """A node's own template, as SNMS prefixes have theirs: a 'name' of at most 32 characters."""
    doc = {
        "id": "small-machine",
        "version": version,
        "snms_version": snms_version,
        "fields": [{"name": "name", "max_length": 32}],
    }
    return parse_template(doc, f"test:small-machine@{version}")


@pytest.fixture
async def snms_node(tmp_path: Path) -> AsyncIterator[SnmsNode]:
    templates = TemplateRegistry.builtin()
    for t in (_machine(1, "1.0"), _machine(2, "2.0")):
        templates.add(t)
    service = NodeService(SqliteStore(tmp_path / "idr.sqlite3"), admins=[str(ADMIN)], templates=templates)
    service.bootstrap(
        "88.100",
        [
            HandleValue(100, "HS_ADMIN", encode_admin(AdminRecord(ADMIN.handle, 300, AdminPermission.ALL))),
            HandleValue(300, "HS_SECKEY", SECRET.encode(), permissions=PERM_SECRET),
        ],
    )
    resp = service.handle(
        Request(
            Op.CREATE_HANDLE,
            APP,
            values=(HandleValue(300, "HS_SECKEY", APP_SECRET.encode(), permissions=PERM_SECRET),),
            identity=ADMIN,
        )
    )
    assert resp.ok
    now = [T0]
    app = web.Application()
    snms.add_snms_routes(app, service, clock=lambda: now[0])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(tmp_path))  # HTTPS only
    await site.start()
    trust = ssl.create_default_context(cafile=str(tmp_path / "tls" / "cert.pem"))
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust))
    try:
        yield SnmsNode(f"https://127.0.0.1:{runner.addresses[0][1]}", session, service, now)
    finally:
        await session.close()
        await runner.cleanup()
        service.close()


def _item(handle: str, name: str = "小型机械01", template: str = "1.0") -> dict[str, Any]:
    return {
        "handle": handle,
        "templateVersion": template,
        "value": [{"index": 2000, "type": "name", "auth": "", "data": {"format": "string", "value": name}}],
    }


async def test_token_plain_and_bad_password(snms_node: SnmsNode) -> None:
    assert await snms_node.login()
    assert await snms_node.login("0.NA/88.100", SECRET)  # bare handle: any of its keys
    bad = await snms_node.call("POST", "/identity/token", json={"username": str(ADMIN), "password": "nope"})
    assert (bad["status"], bad["message"], bad["data"]) == (-2, snms.MSG_BAD_LOGIN, None)
    missing = await snms_node.call("POST", "/identity/token", json={"username": str(ADMIN)})
    assert missing["status"] == -2 and "password" in missing["message"]


def test_cipher_password_matches_the_documented_example() -> None:
    # id-guide identity-auth.md: sha256(sha256(pw) + '2019-08-15') for the example password.
    want = "58e2c92c46485fdbc35fdcd0814d6c0f000cad5aa156848ca5edaf29406b7661"
    assert snms.cipher_password(b"123456", "2019-08-15") == want


async def test_token_ciphertext_variant(snms_node: SnmsNode) -> None:
    day = datetime.fromtimestamp(T0, snms.CHINA_TIME).strftime("%Y-%m-%d")
    assert day == "2019-08-15"
    pw = hashlib.sha256((hashlib.sha256(b"123456").hexdigest() + day).encode()).hexdigest()
    ok = await snms_node.call("POST", "/identity/token/v1", json={"username": str(ADMIN), "password": pw})
    assert ok["status"] == 1 and ok["data"]["token"]
    snms_node.now[0] = T0 + 2 * 86400  # two days later the same ciphertext is refused
    stale = await snms_node.call("POST", "/identity/token/v1", json={"username": str(ADMIN), "password": pw})
    assert stale["status"] == -2
    plain = await snms_node.call(
        "POST", "/identity/token/v1", json={"username": str(ADMIN), "password": SECRET}
    )
    assert plain["status"] == -2


async def test_crud_roundtrip(snms_node: SnmsNode) -> None:
    token = await snms_node.login()
    created = await snms_node.call("POST", "/identityv2/data", token, json=_item("88.100/xx002"))
    assert created == {"status": 1, "message": "success", "data": True}
    again = await snms_node.call("POST", "/identityv2/data", token, json=_item("88.100/xx002"))
    assert (again["status"], again["message"]) == (-2, snms.MSG_EXISTS)

    detail = await snms_node.call("GET", "/identityv2/data/detail", token, params={"handle": "88.100/xx002"})
    data = detail["data"]
    assert detail["status"] == 1
    assert (data["prefix"], data["handle"], data["templateVersion"]) == ("88.100", "88.100/xx002", "1.0")
    by_index = {v["index"]: v for v in data["value"]}
    assert by_index[2000]["data"] == {"format": "string", "value": "小型机械01"}
    assert by_index[1001]["type"] == "TEMPLATE"
    assert all(not v["type"].startswith("HS_") for v in data["value"])

    updated = await snms_node.call(
        "PUT", "/identityv2/data", token, json=_item("88.100/xx002", "新名字", "2.0")
    )
    assert updated["status"] == 1
    detail = await snms_node.call("GET", "/identityv2/data/detail", token, params={"handle": "88.100/xx002"})
    assert detail["data"]["templateVersion"] == "2.0"
    assert {v["index"]: v["data"]["value"] for v in detail["data"]["value"]}[2000] == "新名字"
    record = snms_node.service.store.get("88.100/XX002")
    assert record is not None and any(v.type == "HS_ADMIN" for v in record.values)  # admin kept

    deleted = await snms_node.call("DELETE", "/identityv2/data", token, json={"handle": "88.100/xx002"})
    assert deleted["status"] == 1
    gone = await snms_node.call("DELETE", "/identityv2/data", token, params={"handle": "88.100/xx002"})
    assert (gone["status"], gone["message"]) == (-2, snms.MSG_NOT_FOUND)
    missing = await snms_node.call("GET", "/identityv2/data/detail", token, params={"handle": "88.100/xx002"})
    assert missing["status"] == -2
    no_param = await snms_node.call("GET", "/identityv2/data/detail", token)
    assert no_param["status"] == -2 and "handle" in no_param["message"]


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (
            lambda i: i["value"].append(
                {"index": 1001, "type": "x", "data": {"format": "string", "value": "v"}}
            ),
            "1001",
        ),
        (lambda i: i["value"][0]["data"].update(format="base64"), "string"),
        (lambda i: i.pop("templateVersion"), "templateVersion"),
        (lambda i: i.update(handle="88.100/" + "x" * 300), "handle"),
        (lambda i: i["value"][0].update(index="2000"), "index"),
    ],
)
async def test_register_validation(snms_node: SnmsNode, mutate: Any, needle: str) -> None:
    token = await snms_node.login()
    item = _item("88.100/bad")
    mutate(item)
    body = await snms_node.call("POST", "/identityv2/data", token, json=item)
    assert body["status"] == -2 and needle in body["message"]


async def test_batches(snms_node: SnmsNode) -> None:
    token = await snms_node.login()
    items = [_item("88.100/b1"), _item("88.100/b2"), _item("88.100/b1")]
    body = await snms_node.call("POST", "/identityv2/data/batchCreate", token, json=items)
    assert body["status"] == 1
    assert [(r["handle"], r["msg"]) for r in body["data"]] == [
        ("88.100/b1", "success"),
        ("88.100/b2", "success"),
        ("88.100/b1", snms.MSG_EXISTS),
    ]
    body = await snms_node.call("PUT", "/identityv2/data/batchUpdate", token, json=[_item("88.100/b2", "n2")])
    assert body["data"][0]["msg"] == "success"
    body = await snms_node.call(
        "DELETE", "/identityv2/data/batchDelete", token, json=["88.100/b1", "88.100/zz"]
    )
    assert [(r["handle"], r["code"]) for r in body["data"]] == [("88.100/b1", 1), ("88.100/zz", -2)]
    too_many = await snms_node.call(
        "POST", "/identityv2/data/batchCreate", token, json=[_item(f"88.100/m{i}") for i in range(2001)]
    )
    assert too_many["status"] == -2


async def test_bad_missing_and_expired_tokens(snms_node: SnmsNode) -> None:
    for token in (None, "not-a-token"):
        body = await snms_node.call("GET", "/identityv2/data/detail", token, params={"handle": "88.100/x"})
        assert (body["status"], body["data"]) == (-1, None)
    token = await snms_node.login()
    snms_node.now[0] += snms.TOKEN_TTL + 1
    body = await snms_node.call("POST", "/identityv2/data", token, json=_item("88.100/late"))
    assert body["status"] == -1 and "expired" in body["message"]


async def test_identity_without_rights_gets_no_permission(snms_node: SnmsNode) -> None:
    token = await snms_node.login(f"300:{APP}", APP_SECRET)
    body = await snms_node.call("POST", "/identityv2/data", token, json=_item("88.100/not-mine"))
    assert body["status"] == -3


async def test_malformed_json(snms_node: SnmsNode) -> None:
    token = await snms_node.login()
    body = await snms_node.call("POST", "/identityv2/data", token, data=b"{nope")
    assert body["status"] == -2 and "JSON" in body["message"]


def test_token_store_is_bounded() -> None:
    now = [0.0]
    store = snms.TokenStore(ttl=10, clock=lambda: now[0], capacity=3)
    tokens = [store.issue(ADMIN) for _ in range(5)]
    assert store.identity(tokens[0]) is None and store.identity(tokens[-1]) == ADMIN
    now[0] = 11
    assert store.identity(tokens[-1]) is None


async def test_templates_are_enforced_through_snms(snms_node: SnmsNode) -> None:
    """The SNMS API writes through the same template check: a cell of an unknown chemistry, a
    name longer than the template allows, an unknown templateVersion — all refused, nothing stored."""
    token = await snms_node.login()

    def cell(chemistry: str) -> dict[str, Any]:
        fields = {
            "manufacturer": "Yibin Cells",
            "model": "LFP-280",
            "chemistry": chemistry,
            "capacity_ah": "280",
            "production_date": "2024-07-18",
            "batch": "B-1",
        }
        return {
            "handle": "88.100/cell-1",
            "templateVersion": "battery-cell@1",
            "value": [
                {"index": 2 + i, "type": k, "data": {"format": "string", "value": v}}
                for i, (k, v) in enumerate(fields.items())
            ],
        }

    bad = await snms_node.call("POST", "/identityv2/data", token, json=cell("Plutonium"))
    assert bad["status"] == -2 and "chemistry" in bad["message"] and "Plutonium" in bad["message"]
    assert snms_node.service.store.get("88.100/CELL-1") is None
    ok = await snms_node.call("POST", "/identityv2/data", token, json=cell("LFP"))
    assert ok["status"] == 1, ok
    worse = await snms_node.call("PUT", "/identityv2/data", token, json=cell("Plutonium"))
    assert worse["status"] == -2 and "chemistry" in worse["message"]
    long_name = await snms_node.call("POST", "/identityv2/data", token, json=_item("88.100/m-1", "x" * 33))
    assert long_name["status"] == -2 and "longer than 32" in long_name["message"]
    unknown = await snms_node.call(
        "POST", "/identityv2/data", token, json=_item("88.100/m-2", template="9.9")
    )
    assert unknown["status"] == -2 and "unknown template" in unknown["message"]
    # An update cannot escape the template by naming another that does not exist either.
    escape = await snms_node.call(
        "PUT", "/identityv2/data", token, json={**cell("Plutonium"), "templateVersion": "x"}
    )
    assert escape["status"] == -2
    record = snms_node.service.store.get("88.100/CELL-1")
    assert record is not None and any(v.data == b"LFP" for v in record.values)
