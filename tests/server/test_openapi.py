"""The OpenAPI description against live answers: a node assembled as ``idr serve`` does (REST,
SNMS, GS1, converged, reverse-lookup and federation routes on HTTPS and HTTP), and the demo
federation (a top, secondaries, a recursive node: the prefix lifecycle, walks and statistics),
driven through every described operation; each answer's status must be described for its
operation and its body must validate against the described schema (jsonschema, Draft 2020-12,
the dialect of OpenAPI 3.1). The document itself passes openapi-spec-validator, and every
operation it describes is exercised."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest
import requests
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from idr.cli.node import init_node
from idr.codec import rest
from idr.core.config import NodeConfig
from idr.core.prefixes import uscc_check_char
from idr.demo import CELL, Federation, RunningNode
from idr.node import Node
from idr.schemes import gs1_links as gl
from idr.server.openapi import openapi_document

ADMIN = "300:0.NA/88.100"
SECRET = "s3cret-key"
BASIC = {"Authorization": "Basic " + base64.b64encode(f"300%3A0.NA/88.100:{SECRET}".encode()).decode()}
GTIN = "09506000134352"
BASE = "urn:idr:openapi"


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


@dataclass
class Checker:
    """Checks each answer against the description and records which operations were seen."""

    doc: dict[str, Any]
    seen: set[tuple[str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        resource = Resource.from_contents(self.doc, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(BASE, resource)

    def check(self, method: str, template: str, status: int, ctype: str, body: bytes) -> Any:
        op = self.doc["paths"][template][method.lower()]
        responses = op["responses"]
        assert str(status) in responses, f"{method} {template} answered {status}, not described"
        where = ["paths", template, method.lower(), "responses", str(status)]
        answer = responses[str(status)]
        if "$ref" in answer:
            where = answer["$ref"].lstrip("#/").split("/")
            answer = self.doc["components"]["responses"][where[-1]]
        self.seen.add((template, method.lower()))
        content = answer.get("content")
        if not content:
            assert not body, f"{method} {template} {status}: body {body[:200]!r} not described"
            return None
        media = ctype.split(";")[0].strip()
        assert media in content, f"{method} {template} {status}: {media} not described ({list(content)})"
        if media == "application/javascript":
            return body.decode()
        doc = body.decode() if media.startswith("text/") else orjson.loads(body)
        pointer = _pointer(*where, "content", media, "schema")
        validator = Draft202012Validator(
            {"$ref": f"{BASE}#/{pointer}"},
            registry=self.registry,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )
        errors = sorted(validator.iter_errors(doc), key=str)
        assert not errors, f"{method} {template} {status}: {errors[0].message} in {doc!r}"[:3000]
        return doc


@dataclass
class Live:
    node: Node
    http: aiohttp.ClientSession
    https: str
    plain: str
    checker: Checker

    async def call(
        self,
        method: str,
        template: str,
        path: str,
        *,
        secure: bool = True,
        expect: int | None = None,
        **kwargs: Any,
    ) -> Any:
        base = self.https if secure else self.plain
        async with self.http.request(method, base + path, allow_redirects=False, **kwargs) as r:
            body = await r.read()
            if expect is not None:
                assert r.status == expect, f"{method} {path}: {r.status} {body[:300]!r}"
            return self.checker.check(method, template, r.status, r.headers.get("Content-Type", ""), body)


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    data = tmp_path / "node"
    init_node(data, "88.100", secret=SECRET, https="127.0.0.1:0", http="127.0.0.1:0")
    node = Node(NodeConfig.load(data))
    await node.start()
    assert node.listeners.https and node.listeners.http
    ctx = ssl.create_default_context(cafile=str(data / "tls" / "cert.pem"))
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))
    try:
        yield Live(
            node,
            session,
            f"https://127.0.0.1:{node.listeners.https[1]}",
            f"http://127.0.0.1:{node.listeners.http[1]}",
            Checker(openapi_document()),
        )
    finally:
        await session.close()
        await node.stop()
        node.close()


def test_document_is_valid_openapi_3_1() -> None:
    doc = openapi_document()
    assert doc["openapi"].startswith("3.1")
    validate_spec(doc)


def _value(index: int, type_: str, data: str) -> dict[str, Any]:
    return {"index": index, "type": type_, "data": {"format": "string", "value": data}}


async def test_rest_answers_match_the_description(live: Live) -> None:
    h = "/api/handles/{handle}"
    served = await live.call("GET", "/api/openapi.json", "/api/openapi.json", secure=False, expect=200)
    assert served == openapi_document()
    await live.call("GET", h, "/api/handles/0.NA/88.100", secure=False, expect=200)
    await live.call("GET", h, "/api/handles/0.NA/88.100?type=HS_ADMIN&pretty", expect=200)
    jsonp = await live.call("GET", h, "/api/handles/0.NA/88.100?callback=cb", expect=200)
    assert jsonp.startswith("/**/cb(")
    await live.call("GET", h, "/api/handles/88.100/missing", expect=404)
    await live.call("GET", h, "/api/handles/88.100/a?index=x", expect=400)
    body = {"values": [_value(1, "URL", "https://example.org/a"), _value(2, "EMAIL", "a@example.org")]}
    await live.call("PUT", h, "/api/handles/88.100/a", json=body, headers=BASIC, expect=200)
    await live.call("PUT", h, "/api/handles/88.100/b?overwrite=false", json=body, headers=BASIC, expect=201)
    await live.call("PUT", h, "/api/handles/88.100/b?overwrite=false", json=body, headers=BASIC, expect=409)
    await live.call("PUT", h, "/api/handles/88.100/c", json=body, expect=401)
    await live.call("PUT", h, "/api/handles/88.100/c", json=body, headers=BASIC, secure=False, expect=403)
    await live.call("PUT", h, "/api/handles/88.100/c", data=b"{",
                    headers={**BASIC, "Content-Type": "application/json"}, expect=400)  # fmt: skip
    await live.call("GET", h, "/api/handles/88.100/a?index=7", expect=200)  # VALUES_NOT_FOUND
    listing = await live.call("GET", "/api/handles", "/api/handles?prefix=88.100", headers=BASIC, expect=200)
    assert set(listing["handles"]) >= {"88.100/a", "88.100/b"}
    await live.call(
        "GET", "/api/handles", "/api/handles?prefix=88.100&page=0&pageSize=1", headers=BASIC, expect=200
    )
    await live.call("GET", "/api/handles", "/api/handles?prefix=88.100", expect=401)
    await live.call("DELETE", h, "/api/handles/88.100/a?index=2", headers=BASIC, expect=200)
    await live.call("DELETE", h, "/api/handles/88.100/b", headers=BASIC, expect=200)
    await live.call("DELETE", h, "/api/handles/88.100/b", headers=BASIC, expect=404)
    await live.call("GET", "/api/prefixes", "/api/prefixes", expect=200)
    await live.call("GET", "/api/prefixes", "/api/prefixes?page=0&pageSize=1", expect=200)
    p = "/api/prefixes/{prefix}"
    await live.call("POST", p, "/api/prefixes/99.7", headers=BASIC, expect=200)
    await live.call("DELETE", p, "/api/prefixes/99.7", headers=BASIC, expect=200)
    await live.call("POST", p, "/api/prefixes/99.7", expect=401)
    opened = await live.call("POST", "/api/sessions", "/api/sessions", expect=201)
    sid = {"Authorization": f'Handle sessionId="{opened["sessionId"]}"'}
    await live.call("GET", "/api/sessions/this", "/api/sessions/this", headers=sid, expect=200)
    await live.call("GET", "/api/sessions/this", "/api/sessions/this", expect=200)  # {authenticated: false}
    bad = {"Authorization": f'Handle sessionId="{opened["sessionId"]}", id="{ADMIN}", signature="AAAA"'}
    await live.call("PUT", "/api/sessions/this", "/api/sessions/this", headers=bad, expect=401)
    login = f"/api/sessions/this?sessionId={opened['sessionId']}"
    logged = await live.call("PUT", "/api/sessions/this", login, headers=BASIC, expect=200)
    sid = {"Authorization": f'Handle sessionId="{logged["sessionId"]}"'}  # a new id once logged in
    await live.call("DELETE", "/api/sessions/this", "/api/sessions/this", headers=sid, expect=204)
    await live.call("POST", "/api/sessions", "/api/sessions", secure=False, expect=403)
    r = "/api/resolve"
    await live.call("GET", r, "/api/resolve?id=88.100/a", expect=200)
    await live.call("GET", r, "/api/resolve?id=88.100/none", expect=404)
    await live.call("GET", r, "/api/resolve", expect=400)
    await live.call("GET", r, "/api/resolve?id=(01)12345", expect=400)


async def _gs1_records(live: Live) -> None:
    p = "/api/prefixes/{prefix}"
    await live.call("POST", p, "/api/prefixes/GS1.9506000", headers=BASIC, expect=200)
    values = [
        gl.default_type_value(1, "gs1:pip"),
        gl.link_value(
            2, gl.Link(gl.GS1_VOC + "pip", "https://example.com/pip", "Page", ("en",), "text/html")
        ),
        gl.link_value(3, gl.Link(gl.GS1_VOC + "certificationInfo", "https://cert.example/a", "A")),
        gl.link_value(4, gl.Link(gl.GS1_VOC + "certificationInfo", "https://cert.example/b", "B")),
    ]
    body = {"values": rest.values_to_json(values)}
    await live.call("PUT", "/api/handles/{handle}", f"/api/handles/GS1.9506000/01/{GTIN}", json=body,
                    headers=BASIC, expect=200)  # fmt: skip


async def test_gs1_answers_match_the_description(live: Live) -> None:
    await _gs1_records(live)
    t = "/01/{tail}"
    await live.call("GET", t, f"/01/{GTIN}", expect=307)
    await live.call("GET", t, f"/01/{GTIN}?linkType=linkset", expect=200)
    doc = await live.call("GET", t, f"/01/{GTIN}", headers={"Accept": gl.LINKSET_MEDIA}, expect=200)
    assert doc["linkset"][0]["anchor"].endswith(f"/01/{GTIN}")
    await live.call("GET", t, f"/01/{GTIN}?linkType=gs1:certificationInfo", expect=300)
    await live.call("GET", t, f"/01/{GTIN}?linkType=gs1:recallStatus", expect=404)
    await live.call("GET", t, "/01/09506000134345", expect=404)  # a valid GTIN with no record
    await live.call("GET", t, "/01/123", expect=400)
    await live.call("GET", "/.well-known/gs1resolver", "/.well-known/gs1resolver", secure=False, expect=200)
    conv = await live.call("GET", "/api/resolve", f"/api/resolve?id=(01){GTIN}", expect=200)
    assert conv["scheme"] == "gs1"


async def test_snms_answers_match_the_description(live: Live) -> None:
    tok = await live.call("POST", "/identity/token", "/identity/token",
                          json={"username": ADMIN, "password": SECRET})  # fmt: skip
    assert tok["status"] == 1
    bad = await live.call(
        "POST", "/identity/token", "/identity/token", json={"username": ADMIN, "password": "x"}
    )
    assert bad["status"] == -2 and bad["data"] is None
    day = datetime.now().astimezone().strftime("%Y-%m-%d")
    inner = hashlib.sha256(SECRET.encode()).hexdigest()
    cipher = hashlib.sha256((inner + day).encode()).hexdigest()
    v1 = await live.call("POST", "/identity/token/v1", "/identity/token/v1",
                         json={"username": ADMIN, "password": cipher})  # fmt: skip
    assert v1["status"] in (1, -2)  # -2 only when China's date differs from this machine's right now
    bearer = {"Authorization": f"Bearer {tok['data']['token']}"}
    # templateVersion names one of the node's templates, and the record satisfies it
    vehicle = {"vin": "LS5A3DKE0RA000001", "model": "x", "production_date": "2024-08-02",
               "battery_pack": "88.100/pack-1"}  # fmt: skip
    item: dict[str, Any] = {
        "handle": "88.100/snms-1",
        "templateVersion": "vehicle@1",
        "value": [_value(2 + i, k, v) for i, (k, v) in enumerate(vehicle.items())],
    }
    d = "/identityv2/data"
    made = await live.call("POST", d, d, json=item, headers=bearer)
    assert made == {"status": 1, "message": "success", "data": True}
    again = await live.call("POST", d, d, json=item, headers=bearer)
    assert again["status"] == -2
    got = await live.call("GET", d + "/detail", d + "/detail?handle=88.100/snms-1", headers=bearer)
    assert got["data"]["templateVersion"] == "vehicle@1"
    anon = await live.call("GET", d + "/detail", d + "/detail?handle=88.100/snms-1")
    assert anon["status"] == -1
    item["value"] = [*item["value"][:1], _value(3, "model", "y"), *item["value"][2:]]
    assert (await live.call("PUT", d, d, json=item, headers=bearer))["status"] == 1
    assert (await live.call("DELETE", d, d + "?handle=88.100/snms-1", headers=bearer))["status"] == 1
    items = [{**item, "handle": f"88.100/snms-b{i}"} for i in range(3)]
    made = await live.call("POST", d + "/batchCreate", d + "/batchCreate", json=items, headers=bearer)
    assert [r["code"] for r in made["data"]] == [1, 1, 1]
    upd = await live.call("PUT", d + "/batchUpdate", d + "/batchUpdate",
                          json=[*items, {**item, "handle": "88.100/none"}], headers=bearer)  # fmt: skip
    assert [r["code"] for r in upd["data"]] == [1, 1, 1, -2]
    names = [i["handle"] for i in items]
    gone = await live.call("DELETE", d + "/batchDelete", d + "/batchDelete", json=names, headers=bearer)
    assert [r["code"] for r in gone["data"]] == [1, 1, 1]


async def test_federation_and_hrls_answers_match_the_description(live: Live) -> None:
    await live.call("GET", "/api/federation/info", "/api/federation/info", secure=False, expect=200)
    listed = await live.call("GET", "/api/federation/templates", "/api/federation/templates", expect=200)
    assert {"vehicle@1", "battery-pack@1", "battery-cell@1"} <= {t["ref"] for t in listed["templates"]}
    one = "/api/federation/templates/{ref}"
    got = await live.call("GET", one, "/api/federation/templates/vehicle@1", expect=200)
    assert got["template"]["ref"] == "vehicle@1" and got["template"]["builtin"] is True
    await live.call("GET", one, "/api/federation/templates/vehicle", expect=200)  # its newest version
    await live.call("GET", one, "/api/federation/templates/nothing@9", expect=404)

    body = {"values": [_value(1, "URL", "https://hrls.example/a"), _value(2, "EMAIL", "hrls@example.org")]}
    await live.call("PUT", "/api/handles/{handle}", "/api/handles/88.100/hrls-a", json=body, headers=BASIC,
                    expect=200)  # fmt: skip
    h = "/hrls/handles"
    found = await live.call("GET", h, "/hrls/handles?URL=https://hrls.example/*", headers=BASIC, expect=200)
    assert found == ["88.100/hrls-a"]
    records = await live.call("GET", h, "/hrls/handles?URL=https://hrls.example/*&retrieverecords=true",
                              headers=BASIC, expect=200)  # fmt: skip
    assert {"type": "EMAIL", "value": "hrls@example.org"} in records["88.100/hrls-a"]
    jsonp = await live.call("GET", h, "/hrls/handles?EMAIL=hrls*&callback=cb", headers=BASIC, expect=200)
    assert jsonp.startswith("/**/cb(")
    await live.call("GET", h, "/hrls/handles?URL=*&limit=ten", headers=BASIC, expect=400)
    await live.call("GET", h, "/hrls/handles?URL=*", expect=401)  # [search] access: authenticated
    await live.call("GET", h, "/hrls/handles?URL=*", secure=False, expect=403)  # no credentials over HTTP
    assert await live.call("GET", "/hrls/ping", "/hrls/ping", secure=False, expect=200) == "OK\n"


# The federation's lifecycle and statistics: checked on the demo federation (below); on the
# lone node above they answer 501, which is checked too.
FEDERATION_LIFECYCLE = {
    ("/api/federation/applications", "get"),
    ("/api/federation/applications", "post"),
    ("/api/federation/applications/{id}/{action}", "post"),
    ("/api/federation/filings", "get"),
    ("/api/federation/filings", "post"),
    ("/api/federation/verify", "get"),
    ("/api/federation/audit", "get"),
    ("/api/federation/resolve", "get"),
    ("/api/federation/trace", "get"),
    ("/api/federation/stats", "get"),
    ("/api/federation/stats/report", "post"),
    ("/api/federation/stats/send", "post"),
}


async def test_a_lone_node_says_it_has_no_federation_lifecycle(live: Live) -> None:
    await live.call("GET", "/api/federation/verify", "/api/federation/verify?id=88.100", expect=501)
    await live.call("GET", "/api/federation/resolve", "/api/federation/resolve?handle=88.100/a", expect=501)
    await live.call("GET", "/api/federation/stats", "/api/federation/stats", expect=501)
    await live.call("GET", "/api/federation/audit", "/api/federation/audit", headers=BASIC, expect=501)


@dataclass
class FedLive:
    checker: Checker

    async def call(
        self, method: str, template: str, node: RunningNode, path: str, *, expect: int, secure: bool = True,
        admin: RunningNode | None = None, **kwargs: Any,
    ) -> Any:  # fmt: skip
        """``path`` at ``node`` (HTTPS, or HTTP), as ``admin``'s identity when given (Basic)."""
        url = (node.https_url if secure else node.http_url) + path
        if admin is not None:
            kwargs["auth"] = (quote(str(admin.admin), safe=""), admin.secret)
        r = await asyncio.to_thread(
            requests.request, method, url, timeout=20, allow_redirects=False, verify=str(node.cert), **kwargs
        )
        assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text[:300]}"
        return self.checker.check(
            method, template, r.status_code, r.headers.get("Content-Type", ""), r.content
        )


async def test_federation_lifecycle_and_stats_answers_match_the_description(fed: Federation) -> None:
    live = FedLive(Checker(openapi_document()))
    sec, top, rec = fed["sec-sc"], fed["top-cq"], fed["recursive"]
    apps, one = "/api/federation/applications", "/api/federation/applications/{id}/{action}"
    uscc = "91510100MA61R8XB2" + uscc_check_char("91510100MA61R8XB2")
    body = {
        "enterprise": "Chengdu sensors",
        "uscc": uscc,
        "contact": "c@example.org",
        "secret": "sensor-s3cret-77",
    }
    made = await live.call("POST", apps, sec, apps, json=body, expect=201)
    app_id = made["application"]["id"]
    await live.call("POST", apps, sec, apps, json={**body, "uscc": uscc[:17] + "0"}, expect=400)
    await live.call("POST", apps, sec, apps, json=body, secure=False, expect=403)
    queue = await live.call("GET", apps, sec, f"{apps}?status=pending", admin=sec, expect=200)
    assert [a["id"] for a in queue["applications"]] == [app_id]
    await live.call("GET", apps, sec, apps, expect=401)
    await live.call("POST", one, sec, f"{apps}/{app_id}/approve", json={}, expect=401)
    approved = await live.call("POST", one, sec, f"{apps}/{app_id}/approve", json={}, admin=sec, expect=200)
    assert approved["application"]["filed"], approved
    prefix = approved["application"]["prefix"]
    await live.call("POST", one, sec, f"{apps}/{app_id}/file", admin=sec, expect=200)
    await live.call("POST", one, sec, f"{apps}/{app_id}/approve", json={}, admin=sec, expect=400)  # decided
    await live.call("POST", one, sec, f"{apps}/APP-NONE/reject", json={"reason": "x"}, admin=sec, expect=404)
    other = (await live.call("POST", apps, sec, apps, json=body, expect=201))["application"]["id"]
    rejected = await live.call(
        "POST", one, sec, f"{apps}/{other}/reject", json={"reason": "duplicate"}, admin=sec, expect=200
    )
    assert rejected["application"]["status"] == "rejected"

    f = "/api/federation/filings"
    filings = await live.call("GET", f, top, f, admin=top, expect=200)
    assert prefix in {x["prefix"] for x in filings["filings"]}
    await live.call("GET", f, top, f, expect=401)
    filing = {"prefix": prefix, "parent": sec.prefix, "enterprise": "Chengdu sensors", "uscc": uscc}
    await live.call("POST", f, top, f, json=filing, admin=sec, expect=201)  # filed again: the latest
    await live.call(
        "POST", f, top, f, json={**filing, "prefix": "88.118.77", "parent": "88.118"}, admin=sec, expect=403
    )
    v = "/api/federation/verify"
    got = await live.call("GET", v, top, f"{v}?id={prefix}", secure=False, expect=200)
    assert got["verification"]["filed"] is True
    got = await live.call("GET", v, top, f"{v}?id={CELL}", secure=False, expect=200)
    assert got["verification"]["identifier"]["exists"] is True
    await live.call("GET", v, top, f"{v}?id=88.168.9999", secure=False, expect=200)  # not filed
    await live.call("GET", v, top, v, secure=False, expect=400)
    await live.call("GET", v, sec, f"{v}?id={prefix}", secure=False, expect=501)  # the top's

    a = "/api/federation/audit"
    trail = await live.call("GET", a, sec, f"{a}?match=0.PREFIXAPP&limit=50", admin=sec, expect=200)
    assert {"prefix-approve", "prefix-reject"} <= {e["op"] for e in trail["entries"]}
    await live.call("GET", a, sec, a, expect=401)
    await live.call("GET", a, sec, f"{a}?since=x", admin=sec, expect=400)

    r, t = "/api/federation/resolve", "/api/federation/trace"
    walked = await live.call("GET", r, rec, f"{r}?handle={CELL}", secure=False, expect=200)
    assert walked["code"] == 1 and walked["hops"], walked
    missing = await live.call("GET", r, rec, f"{r}?handle=88.168/none", secure=False, expect=200)
    assert missing["code"] == 100, missing
    tree = await live.call("GET", t, rec, f"{t}?handle={CELL}&depth=2", secure=False, expect=200)
    assert tree["tree"]["handle"] == CELL
    await live.call("GET", t, rec, f"{t}?handle={CELL}&depth=x", secure=False, expect=400)
    await live.call("GET", r, sec, f"{r}?handle={CELL}", secure=False, expect=501)

    st = "/api/federation/stats"
    figures = await live.call("GET", st, top, st, secure=False, expect=200)
    assert figures["secondary_nodes"] >= 2, figures
    await live.call("GET", st, sec, st, expect=200)
    sent = await live.call("POST", st + "/send", sec, st + "/send", admin=sec, expect=200)
    assert sent["sent"] is True and sent["ack"]["node"] == figures["node"], sent
    await live.call("POST", st + "/send", sec, st + "/send", expect=403)
    hub = sec.node.stats_hub
    assert hub is not None
    report = await hub.report_body()
    ack = await live.call("POST", st + "/report", top, st + "/report", json=report, admin=sec, expect=200)
    assert ack["node"] == figures["node"], ack
    await live.call("POST", st + "/report", top, st + "/report", json={"report": 1}, admin=sec, expect=400)
    await live.call("POST", st + "/report", top, st + "/report", json=report, expect=401)
    assert not FEDERATION_LIFECYCLE - live.checker.seen, FEDERATION_LIFECYCLE - live.checker.seen


async def test_every_described_operation_is_exercised(live: Live) -> None:
    """Run the three flows on one node and compare with the description's operations (one GS1
    primary key stands for all: they share one handler)."""
    await test_rest_answers_match_the_description(live)
    await test_gs1_answers_match_the_description(live)
    await test_snms_answers_match_the_description(live)
    await test_federation_and_hrls_answers_match_the_description(live)
    described = {
        (path, method)
        for path, item in live.checker.doc["paths"].items()
        for method in item
        if method in ("get", "put", "post", "delete")
    }
    gs1_others = {
        (p, "get") for p in live.checker.doc["paths"] if p.endswith("/{tail}") and p != "/01/{tail}"
    }
    assert described - gs1_others - FEDERATION_LIFECYCLE - live.checker.seen == set()
