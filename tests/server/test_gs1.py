"""GS1 resolver and converged entry point on a real node: SQLite store, aiohttp on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from idr.codec.values import encode_admin
from idr.core.request import Op, Request
from idr.core.service import NodeService
from idr.model.value import PERM_SECRET, AdminPermission, AdminRecord, HandleValue, ValueReference
from idr.schemes import gs1
from idr.schemes import gs1_links as gl
from idr.server.converged import add_converged_routes
from idr.server.gs1 import add_gs1_routes
from idr.store.sqlite import SqliteStore

ADMIN = ValueReference("0.NA/88.100", 300)
GTIN = "09506000134352"
PIP = gl.GS1_VOC + "pip"
CD = gs1.with_check_digit
OTHER_KEYS = {
    "00": CD("0" + "9506000" + "123456789"),
    "253": CD("9506000" + "12345") + "DOC1",
    "255": CD("9506000" + "12345") + "123",
    "401": "9506000" + "CONS-1",
    "402": CD("9506000" + "123456789"),
    "414": CD("9506000" + "13437"),
    "417": CD("9506000" + "13437"),
    "8003": CD("0" + "9506000" + "12345") + "S1",
    "8004": "9506000" + "ASSET1",
    "8006": CD("0" + "9506000" + "13435") + "0102",
    "8010": "9506000" + "COMP-1",
    "8017": CD("9506000" + "1234567890"),
    "8018": CD("9506000" + "1234567890"),
}


def _admin_values() -> list[HandleValue]:
    return [
        HandleValue(
            100, "HS_ADMIN", encode_admin(AdminRecord(ADMIN.handle, ADMIN.index, AdminPermission.ALL))
        ),
        HandleValue(300, "HS_SECKEY", b"secret", permissions=PERM_SECRET),
    ]


def _create(service: NodeService, handle: str, values: list[HandleValue]) -> None:
    resp = service.handle(Request(Op.CREATE_HANDLE, handle, values=tuple(values), identity=ADMIN))
    assert resp.ok, resp.message


@dataclass
class Gs1Node:
    base: str
    session: aiohttp.ClientSession
    service: NodeService


@pytest.fixture
async def gs1_node(tmp_path: Path) -> AsyncIterator[Gs1Node]:
    service = NodeService(SqliteStore(tmp_path / "idr.sqlite3"), admins=[str(ADMIN)])
    service.bootstrap("88.100", _admin_values())
    for prefix in ("GS1.9506000", "OID.1.2.156.20009", "ECODE.1.0001"):
        service.bootstrap(prefix, _admin_values()[:1])
    product = f"GS1.9506000/01/{GTIN}"
    _create(
        service,
        product,
        [
            gl.default_type_value(1, "gs1:pip"),
            gl.link_value(
                2, gl.Link(PIP, "https://example.com/en/pip", "Product page", ("en",), "text/html")
            ),
            gl.link_value(3, gl.Link(PIP, "https://example.com/zh/pip", "产品页", ("zh",), "text/html")),
            gl.link_value(
                4,
                gl.Link(
                    gl.GS1_VOC + "epil",
                    "https://example.com/leaflet.pdf",
                    "Leaflet",
                    ("en",),
                    "application/pdf",
                ),
            ),
            gl.link_value(
                5, gl.Link(gl.GS1_VOC + "traceability", "https://trace.example/{01}/{10}", "Trace")
            ),
            gl.link_value(6, gl.Link(gl.GS1_VOC + "certificationInfo", "https://cert.example/a", "Cert A")),
            gl.link_value(7, gl.Link(gl.GS1_VOC + "certificationInfo", "https://cert.example/b", "Cert B")),
        ],
    )
    _create(
        service,
        f"{product}/10/LOT1",
        [gl.link_value(1, gl.Link(gl.GS1_VOC + "recallStatus", "https://recall.example/lot1?x=1", "Recall"))],
    )
    _create(service, f"{product}/10/LOT1/21/EMPTY", [HandleValue(1, "DESC", b"a serial with data only")])
    for ai, value in OTHER_KEYS.items():
        _create(
            service,
            f"GS1.9506000/{ai}/{value}",
            [HandleValue(1, "URL", f"https://keys.example/{ai}".encode())],
        )
    _create(service, "OID.1.2.156.20009/1.2.156.20009.5", [HandleValue(1, "URL", b"https://oid.example/5")])
    _create(service, "ECODE.1.0001/100011234567", [HandleValue(1, "URL", b"https://ecode.example/1")])
    _create(service, "88.100/plain", [HandleValue(1, "URL", b"https://plain.example/")])

    app = web.Application()
    add_gs1_routes(app, service, resolver_root="https://id.example.cn")
    add_converged_routes(app, service)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    session = aiohttp.ClientSession()
    try:
        yield Gs1Node(f"http://127.0.0.1:{port}", session, service)
    finally:
        await session.close()
        await runner.cleanup()
        service.close()


async def _get(n: Gs1Node, path: str, method: str = "GET", **headers: str) -> aiohttp.ClientResponse:
    async with n.session.request(method, n.base + path, headers=headers, allow_redirects=False) as r:
        await r.read()
        return r


async def test_single_link_redirects_307_with_query_and_link_header(gs1_node: Gs1Node) -> None:
    r = await _get(gs1_node, f"/01/{GTIN}?17=290101", **{"Accept-Language": "zh-CN,zh;q=0.9"})
    assert r.status == 307
    assert r.headers["Location"] == "https://example.com/zh/pip?17=290101"
    link = r.headers["Link"]
    assert f"<https://id.example.cn/01/{GTIN}?linkType=linkset>" in link
    assert gl.LINKSET_CONTEXT in link and "https://example.com/en/pip" in link


async def test_accept_language_picks_the_variant(gs1_node: Gs1Node) -> None:
    r = await _get(gs1_node, f"/01/{GTIN}", **{"Accept-Language": "fr;q=0.9, en-GB;q=0.8"})
    assert (r.status, r.headers["Location"]) == (307, "https://example.com/en/pip")


async def test_gtin13_and_bare_and_curie_link_types(gs1_node: Gs1Node) -> None:
    for lt in ("epil", "gs1:epil", "https://gs1.org/voc/epil"):
        r = await _get(gs1_node, f"/01/9506000134352?linkType={lt}")
        assert (r.status, r.headers["Location"]) == (307, f"https://example.com/leaflet.pdf?linkType={lt}")


async def test_several_matches_300(gs1_node: Gs1Node) -> None:
    r = await _get(gs1_node, f"/01/{GTIN}?linkType=gs1:certificationInfo")
    assert r.status == 300
    body = await r.json()
    hrefs = [t["href"] for t in body["linkset"][0][gl.GS1_VOC + "certificationInfo"]]
    assert hrefs == ["https://cert.example/a", "https://cert.example/b"]
    assert "Link" in r.headers
    r = await _get(gs1_node, f"/01/{GTIN}")  # default type, no language: both variants
    assert r.status == 300


async def test_unknown_link_type_and_unknown_key_404(gs1_node: Gs1Node) -> None:
    r = await _get(gs1_node, f"/01/{GTIN}?linkType=gs1:nutritionalInfo")
    assert r.status == 404 and "gs1:pip" in (await r.json())["linkTypes"]
    assert "Link" in r.headers
    r = await _get(gs1_node, "/01/" + CD("0950600099999"))
    assert r.status == 404 and "Link" in r.headers
    r = await _get(gs1_node, "/01/" + CD("0690123400001"))  # company prefix not held here
    assert r.status == 404


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("/01/09506000134353", "expected 2"),
        (f"/01/{GTIN}/21/S/10/L", "out of order"),
        ("/414/950600013437", "wrong length"),
        ("/8010/9506000comp", "character set 39"),
    ],
)
async def test_bad_syntax_400(gs1_node: Gs1Node, path: str, needle: str) -> None:
    r = await _get(gs1_node, path)
    assert r.status == 400
    assert needle in (await r.json())["error"]
    assert gl.LINKSET_CONTEXT in r.headers["Link"]


@pytest.mark.parametrize("ai", sorted(OTHER_KEYS))
async def test_every_primary_key_resolves(gs1_node: Gs1Node, ai: str) -> None:
    r = await _get(gs1_node, f"/{ai}/{OTHER_KEYS[ai]}")
    assert (r.status, r.headers["Location"]) == (307, f"https://keys.example/{ai}")


async def test_qualifier_fallback_and_templates(gs1_node: Gs1Node) -> None:
    r = await _get(gs1_node, f"/01/{GTIN}/10/LOT1/21/S99?linkType=recallStatus")
    assert (r.status, r.headers["Location"]) == (307, "https://recall.example/lot1?x=1&linkType=recallStatus")
    # the serial with a data-only record falls back to the lot's links
    r = await _get(gs1_node, f"/01/{GTIN}/10/LOT1/21/EMPTY?linkType=recallStatus")
    assert r.status == 307
    # the lot has no traceability link: the product's, its template filled from the path
    r = await _get(gs1_node, f"/01/{GTIN}/10/LOT2?linkType=traceability")
    assert (r.status, r.headers["Location"]) == (
        307,
        f"https://trace.example/{GTIN}/LOT2?linkType=traceability",
    )


def _check_linkset(doc: dict[str, Any], anchor: str) -> dict[str, Any]:
    """RFC 9264 §4.2 + GS1 linkset schema: linkset array of context objects with an anchor and
    one array of target objects (href required; title string; hreflang array of strings) per relation."""
    assert set(doc) == {"linkset"}
    sets = doc["linkset"]
    assert isinstance(sets, list) and len(sets) == 1
    entry = sets[0]
    assert isinstance(entry, dict) and entry["anchor"] == anchor
    for rel, targets in entry.items():
        if rel == "anchor":
            continue
        assert rel.startswith("https://")
        assert isinstance(targets, list) and targets
        for t in targets:
            assert isinstance(t["href"], str) and t["href"]
            assert isinstance(t.get("title", ""), str)
            assert all(isinstance(h, str) for h in t.get("hreflang", []))
            assert isinstance(t.get("type", ""), str)
    return entry


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("?linkType=linkset", {}),
        ("?linkType=all", {}),
        ("", {"Accept": "application/linkset+json"}),
        ("?linkType=gs1:pip", {"Accept": "application/linkset+json"}),
    ],
)
async def test_linkset_200_never_redirects(gs1_node: Gs1Node, query: str, headers: dict[str, str]) -> None:
    r = await _get(gs1_node, f"/01/9506000134352{query}", **headers)
    assert r.status == 200 and "Location" not in r.headers
    assert r.content_type == gl.LINKSET_MEDIA
    entry = _check_linkset(await r.json(), f"https://id.example.cn/01/{GTIN}")
    assert {t["href"] for t in entry[PIP]} == {"https://example.com/en/pip", "https://example.com/zh/pip"}
    assert entry[gl.DEFAULT_LINK] == [entry[PIP][0]]
    assert "Link" in r.headers


async def test_head_carries_link_header(gs1_node: Gs1Node) -> None:
    r = await _get(gs1_node, f"/01/{GTIN}?linkType=epil", "HEAD")
    assert r.status == 307 and "linkType=linkset" in r.headers["Link"]
    r = await _get(gs1_node, "/01/09506000134353", "HEAD")
    assert r.status == 400 and "Link" in r.headers


async def test_options_and_well_known(gs1_node: Gs1Node) -> None:
    r = await _get(gs1_node, f"/01/{GTIN}", "OPTIONS")
    assert r.status == 204 and "GET" in r.headers["Allow"] and r.headers["Access-Control-Allow-Origin"] == "*"
    r = await _get(gs1_node, "/.well-known/gs1resolver")
    assert r.status == 200
    doc = await r.json()
    assert doc["resolverRoot"] == "https://id.example.cn"
    assert set(doc["supportedPrimaryKeys"]) == set(gs1.PRIMARY_KEYS)
    assert doc["supportedLinkType"][0]["prefix"] == "gs1:"
    r = await _get(gs1_node, f"/01/{GTIN}", "DELETE")
    assert r.status == 405


# --------------------------------------------------------------------------- converged entry


@pytest.mark.parametrize(
    ("ident", "scheme", "handle", "url"),
    [
        ("88.100/plain", "handle", "88.100/plain", "https://plain.example/"),
        (f"https://id.gs1.org/01/{GTIN}", "gs1", f"GS1.9506000/01/{GTIN}", None),
        (f"(01){GTIN}(10)LOT1(21)X", "gs1", f"GS1.9506000/01/{GTIN}/10/LOT1", None),
        (
            "(414)" + OTHER_KEYS["414"],
            "gs1",
            f"GS1.9506000/414/{OTHER_KEYS['414']}",
            "https://keys.example/414",
        ),
        ("urn:oid:1.2.156.20009.5", "oid", "OID.1.2.156.20009/1.2.156.20009.5", "https://oid.example/5"),
        ("1.2.156.20009.5", "oid", "OID.1.2.156.20009/1.2.156.20009.5", "https://oid.example/5"),
        ("ecode:100011234567", "ecode", "ECODE.1.0001/100011234567", "https://ecode.example/1"),
        (f"0(01){GTIN}", "ecode", f"GS1.9506000/01/{GTIN}", None),
    ],
)
async def test_converged_resolve(
    gs1_node: Gs1Node, ident: str, scheme: str, handle: str, url: str | None
) -> None:
    async with gs1_node.session.get(gs1_node.base + "/api/resolve", params={"id": ident}) as r:
        assert r.status == 200
        body = await r.json()
    assert body["responseCode"] == 1 and body["scheme"] == scheme and body["handle"] == handle
    assert isinstance(body["values"], list) and body["values"]
    if url is not None:
        assert {"format": "string", "value": url} in [v["data"] for v in body["values"]]


@pytest.mark.parametrize(
    ("ident", "status"),
    [("what is this", 400), ("1.2.156.020009", 400), ("/01/09506000134353", 400), ("88.100/missing", 404)],
)
async def test_converged_errors(gs1_node: Gs1Node, ident: str, status: int) -> None:
    async with gs1_node.session.get(gs1_node.base + "/api/resolve", params={"id": ident}) as r:
        assert r.status == status
        body = await r.json()
    assert body["message"] and body["responseCode"] != 1


async def test_converged_without_id(gs1_node: Gs1Node) -> None:
    async with gs1_node.session.get(gs1_node.base + "/api/resolve") as r:
        assert r.status == 400


async def test_mounts_beside_the_rest_api_and_proxy(gs1_node: Gs1Node) -> None:
    """On the node's main HTTP app, /01/… is the resolver's, not a handle for the proxy."""
    from idr.server.http import make_http_app

    app = make_http_app(gs1_node.service, tls=False)
    add_gs1_routes(app, gs1_node.service)
    add_converged_routes(app, gs1_node.service)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        s = gs1_node.session
        async with s.get(f"{base}/01/{GTIN}?linkType=epil", allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (307, "https://example.com/leaflet.pdf?linkType=epil")
        async with s.get(f"{base}/api/resolve", params={"id": "88.100/plain"}) as r:
            assert r.status == 200 and (await r.json())["scheme"] == "handle"
        async with s.get(f"{base}/.well-known/gs1resolver") as r:
            assert r.status == 200
        async with s.get(f"{base}/api/handles/88.100/plain") as r:
            assert r.status == 200
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------- GS1 rules over HTTP


@pytest.mark.parametrize(
    ("path", "ai", "rule"),
    [
        (f"/01/{GTIN}?3103=12345", "3103", "length"),  # 3103 is N6
        (f"/01/{GTIN}?17=251301", "17", "yymmd0"),  # month 13
        (f"/01/{GTIN}?17=200904&17=901007", "17", "duplicate"),
        (f"/01/{GTIN}?9999=1", "9999", "unknown-ai"),
        ("/00/" + OTHER_KEYS["00"] + "?17=290101", "17", "requires"),  # 17 needs a trade item
        ("/01/09506000134353", "01", "csum"),
    ],
)
async def test_refusal_names_the_ai_and_rule_and_looks_nothing_up(
    gs1_node: Gs1Node, monkeypatch: pytest.MonkeyPatch, path: str, ai: str, rule: str
) -> None:
    asked: list[str] = []
    submit = gs1_node.service.submit

    async def spy(request: Request) -> Any:
        asked.append(request.handle)
        return await submit(request)

    monkeypatch.setattr(gs1_node.service, "submit", spy)
    r = await _get(gs1_node, path)
    body = await r.json()
    assert (r.status, body["ai"], body["rule"]) == (400, ai, rule)
    assert f"AI {ai}" in body["error"]
    async with gs1_node.session.get(gs1_node.base + "/api/resolve", params={"id": path}) as r:
        body = await r.json()
    assert (r.status, body["scheme"], body["ai"], body["rule"]) == (400, "gs1", ai, rule)
    assert asked == []  # nothing was looked up for an invalid identifier


COMPRESSED = "AQnYUc1gmiCNV4JG"  # /01/05412345000013/10/ABC123 (GS1 Digital Link compression)


async def test_compressed_links_resolve(gs1_node: Gs1Node) -> None:
    from idr.schemes.gs1_compress import compress

    lot = gs1.parse_path(f"/01/{GTIN}/10/LOT1")
    full = compress(lot.elements())
    r = await _get(gs1_node, f"/{full}")  # fully compressed: the lot's recall link
    assert (r.status, r.headers["Location"]) == (307, "https://recall.example/lot1?x=1")
    partial = compress([("10", "LOT1")])
    r = await _get(gs1_node, f"/01/{GTIN}/{partial}")  # partially compressed
    assert (r.status, r.headers["Location"]) == (307, "https://recall.example/lot1?x=1")
    r = await _get(gs1_node, f"/{COMPRESSED}")  # valid, but not held here
    assert r.status == 404
    r = await _get(gs1_node, "/AQnYUc1gmiCNV4JH")  # one bit changed: not a valid key any more
    assert r.status == 400 and "compressed Digital Link" in (await r.json())["error"]
    async with gs1_node.session.get(
        gs1_node.base + "/api/resolve", params={"id": f"https://id.gs1.org/{full}"}
    ) as resp:
        assert resp.status == 200 and (await resp.json())["handle"] == f"GS1.9506000/01/{GTIN}/10/LOT1"


async def test_resolver_writes_the_compressed_link(gs1_node: Gs1Node) -> None:
    async with gs1_node.session.get(
        gs1_node.base + "/01/05412345000013/10/ABC123?compress=true", allow_redirects=False
    ) as r:
        assert r.status == 200
        body = await r.json()
    assert body == {
        "uri": "https://id.example.cn/01/05412345000013/10/ABC123",
        "compressed": "https://id.example.cn/CwnYUc1gmo1XgkY",  # as GS1's reference toolkit writes it
    }


@pytest.mark.parametrize(
    "scan",
    [
        f"]d201{GTIN}10LOT1\x1d21X",  # GS1 DataMatrix, GS-separated
        f"]C101{GTIN}10LOT1",  # GS1-128
        f"]Q301{GTIN}10LOT1",  # GS1 QR
        f"^01{GTIN}10LOT1^21X",  # FNC1 written ^ (GS1 syntax engine notation)
        f"01{GTIN}10LOT1\x1d21X",  # no symbology identifier
        f"10LOT1\x1d01{GTIN}",  # AIs in any order
    ],
)
async def test_converged_accepts_raw_scanner_data(gs1_node: Gs1Node, scan: str) -> None:
    async with gs1_node.session.get(gs1_node.base + "/api/resolve", params={"id": scan}) as r:
        assert r.status == 200
        body = await r.json()
    assert body["scheme"] == "gs1" and body["handle"] == f"GS1.9506000/01/{GTIN}/10/LOT1"


async def test_compressed_route_beside_the_proxy(gs1_node: Gs1Node) -> None:
    from idr.server.http import make_http_app

    app = make_http_app(gs1_node.service, tls=False)
    add_gs1_routes(app, gs1_node.service)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        s = gs1_node.session
        async with s.get(f"{base}/noslash", allow_redirects=False) as r:
            assert r.status == 400  # never a handle (no slash): refused, as the proxy did
            assert "not a compressed Digital Link" in (await r.json())["error"]
        async with s.get(f"{base}/console", allow_redirects=False) as r:
            assert r.status == 404  # a reserved root is never a handle
        async with s.get(f"{base}/{COMPRESSED}", allow_redirects=False) as r:
            assert r.status == 404 and "anchor" in await r.json()  # the GS1 resolver's answer
    finally:
        await runner.cleanup()
