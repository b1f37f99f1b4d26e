"""The console over real HTTP(S): every page and endpoint, bad input, escaping, sessions, CSRF."""

from __future__ import annotations

import asyncio
import csv
import io

import aiohttp

from idr.core.request import Op, Request
from idr.demo import RunningNode
from idr.model.value import HandleValue, ValueReference
from tests.console.conftest import ADMIN, PREFIX, client, csrf_of, login

XSS = "<script>alert(1)</script>"
VIN = "LS5A3DKE0RA000001"  # valid check digit (the demo's vehicle)
CELL_FIELDS = {
    "manufacturer": "Yibin Cells Ltd",
    "model": "LFP-280",
    "chemistry": "LFP",
    "capacity_ah": "280",
    "production_date": "2024-07-01",
    "batch": "B-07",
}


async def _put(node: RunningNode, handle: str, values: list[tuple[int, str, str]]) -> None:
    vals = tuple(HandleValue(i, t, d.encode()) for i, t, d in values)
    identity = ValueReference.parse(ADMIN)
    r = await node.service.submit(Request(Op.CREATE_HANDLE, handle, values=vals, identity=identity))
    assert r.ok, r.message


async def test_every_page_renders_in_both_languages(node: RunningNode) -> None:
    async with client(node) as http:
        for path in (
            "/console",
            "/console/resolve",
            "/console/register",
            "/console/batch",
            "/console/prefixes",
            "/console/chain",
            "/console/login",
        ):
            for lang, word in (("en", "Dashboard"), ("zh", "概览")):
                async with http.get(f"{node.https_url}{path}?lang={lang}") as r:
                    body = await r.text()
                    assert r.status == 200, (path, r.status)
                    assert word in body and 'lang="' in body
                    assert "Content-Security-Policy" in r.headers
        # The language sticks in a cookie once chosen.
        async with http.get(f"{node.https_url}/console/chain?lang=en") as r:
            assert r.status == 200
        async with http.get(f"{node.https_url}/console") as r:
            assert "Dashboard" in await r.text()


async def test_node_name_is_escaped_and_404_is_a_page(node: RunningNode) -> None:
    async with client(node) as http, http.get(node.https_url + "/console/nothing-here") as r:
        body = await r.text()
        assert r.status == 404
        assert "Test secondary &lt;node&gt;" in body and "<node>" not in body


async def test_stats_endpoint_counts_resolutions(node: RunningNode) -> None:
    """The dashboard counts what /metrics counts: answers of the node's front-ends."""
    await _put(node, f"{PREFIX}/A1", [(1, "URL", "https://example.org/a1")])
    async with client(node) as http:
        for _ in range(3):
            async with http.get(f"{node.http_url}/api/handles/{PREFIX}/A1") as r:
                assert r.status == 200
        async with http.get(node.http_url + "/console/api/stats") as r:
            stats = await r.json()
    assert stats["registered"] >= 1
    assert stats["resolutions_total"] >= 3 and stats["resolutions_today"] >= 3
    assert len(stats["per_minute"]) == 60 and stats["per_minute"][-1][1] >= 3
    assert stats["replication"] is None


async def test_node_api_and_federation_map(node: RunningNode) -> None:
    async with client(node) as http:
        async with http.get(node.http_url + "/console/api/node") as r:
            info = await r.json()
        assert info["role"] == "secondary" and PREFIX in info["prefixes"]
        async with http.get(node.http_url + "/console/api/federation") as r:
            fmap = await r.json()
        assert fmap["up"] is True and fmap["children"] == []


async def test_resolve_shows_values_escaped_and_links_only_http(node: RunningNode) -> None:
    await _put(
        node,
        f"{PREFIX}/X{XSS}",
        [
            (1, "URL", "javascript:alert(1)"),
            (2, "DESC", XSS),
            (3, "URL", "https://example.org/ok"),
            (4, "PART", f"{PREFIX}/OTHER"),
        ],
    )
    async with (
        client(node) as http,
        http.get(f"{node.http_url}/console/resolve", params={"id": f"{PREFIX}/X{XSS}", "lang": "en"}) as r,
    ):
        body = await r.text()
    assert r.status == 200
    assert XSS not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert 'href="javascript:' not in body
    assert '<a href="https://example.org/ok"' in body
    assert "/console/resolve?id=88.100%2FOTHER" in body  # a handle-valued field links onwards
    assert "HS_ADMIN" in body and "300:0.NA/88.100" in body  # decoded admin
    assert 'id="trace"' in body


async def test_resolve_bad_and_missing_identifiers(node: RunningNode) -> None:
    async with client(node) as http:
        async with http.get(f"{node.http_url}/console/resolve", params={"id": f"{PREFIX}/missing"}) as r:
            assert r.status == 404
            assert "HANDLE_NOT_FOUND" in await r.text()
        async with http.get(f"{node.http_url}/console/resolve", params={"id": "/" + XSS}) as r:
            body = await r.text()
            assert r.status in (200, 400)
            assert XSS not in body
        async with http.get(f"{node.http_url}/console/api/resolve", params={"id": f"{PREFIX}/missing"}) as r:
            doc = await r.json()
            assert doc["responseCode"] == 100 and doc["trace"]


async def test_login_refused_over_plain_http(node: RunningNode) -> None:
    async with client(node) as http:
        async with http.get(node.http_url + "/console/login?lang=en") as r:
            body = await r.text()
            assert r.status == 403 and "needs HTTPS" in body and 'name="secret"' not in body
        async with http.get(node.http_url + "/console/prefixes") as r:
            token = csrf_of(await r.text())
        async with http.post(
            node.http_url + "/console/login", data={"csrf": token, "identity": ADMIN, "secret": "x"}
        ) as r:
            assert r.status == 403


async def test_wrong_secret_and_bad_identity(node: RunningNode) -> None:
    async with client(node) as http:
        r = await login(http, node, secret="wrong")
        assert r.status == 401
        async with http.get(node.https_url + "/console/login") as page:
            token = csrf_of(await page.text())
        async with http.post(
            node.https_url + "/console/login", data={"csrf": token, "identity": "nonsense", "secret": "x"}
        ) as bad:
            assert bad.status == 400
        async with http.get(node.https_url + "/console/register") as page:
            assert 'id="register-form"' not in await page.text()


async def test_login_sets_a_strict_session_cookie_and_rotates_it(node: RunningNode) -> None:
    async with client(node) as http:
        async with http.get(node.https_url + "/console") as r:
            before = r.cookies["__Host-idr_console"].value
        r = await login(http, node)
        assert r.status == 303
        raw = ";".join(r.headers.getall("Set-Cookie")).lower()
        assert (
            "__host-idr_console=" in raw
            and "httponly" in raw
            and "samesite=strict" in raw
            and "secure" in raw
        )
        assert r.cookies["__Host-idr_console"].value != before
        async with http.get(node.https_url + "/console") as page:
            assert ADMIN in await page.text()
        # The same browser over plain HTTP is not logged in (the Secure cookie is not sent).
        async with http.get(node.http_url + "/console") as page:
            assert 'id="signed-in"' not in await page.text()


async def test_csrf_is_required_on_every_form(node: RunningNode) -> None:
    async with client(node) as http:
        assert (await login(http, node)).status == 303
        form = {"template": "battery-cell@1", "prefix": PREFIX, "suffix": "C1", **CELL_FIELDS}
        for token in (None, "forged"):
            data = dict(form) if token is None else {**form, "csrf": token}
            async with http.post(node.https_url + "/console/register", data=data) as r:
                assert r.status == 403
        async with http.post(node.https_url + "/console/logout", data={}) as r:
            assert r.status == 403
        async with http.post(node.https_url + "/console/prefixes/apply", data={"parent": PREFIX}) as r:
            assert r.status == 403
        assert node.service.store.get("88.100/C1") is None


async def test_register_with_field_errors_then_success_then_edit(node: RunningNode) -> None:
    async with client(node) as http:
        assert (await login(http, node)).status == 303
        async with http.get(node.https_url + "/console/register?template=battery-cell@1&lang=en") as r:
            page = await r.text()
            token = csrf_of(page)
            assert 'for="f-capacity_ah"' in page and 'id="f-capacity_ah"' in page
        bad = {**CELL_FIELDS, "capacity_ah": "lots", "chemistry": ""}
        data = {"csrf": token, "template": "battery-cell@1", "prefix": PREFIX, "suffix": "CELL-1", **bad}
        async with http.post(node.https_url + "/console/register", data=data) as r:
            body = await r.text()
            assert r.status == 400
            assert 'id="capacity_ah-error"' in body and "is not a number" in body
            assert 'id="chemistry-error"' in body and 'aria-invalid="true"' in body
        data.update(CELL_FIELDS)
        async with http.post(node.https_url + "/console/register", data=data, allow_redirects=False) as r:
            assert r.status == 303
            assert r.headers["Location"].startswith("/console/resolve?id=88.100/CELL-1")
        async with http.get(node.https_url + "/console/resolve?id=88.100/CELL-1") as r:
            body = await r.text()
            assert "LFP-280" in body and "battery-cell@1" in body
        # A second registration of the same handle is refused with a way to edit it.
        async with http.post(node.https_url + "/console/register", data=data) as r:
            assert r.status == 400 and "/console/edit?handle=" in await r.text()
        async with http.get(node.https_url + "/console/edit?handle=88.100/CELL-1") as r:
            page = await r.text()
            assert 'value="LFP-280"' in page
        edit = {**data, "csrf": csrf_of(page), "handle": "88.100/CELL-1", "model": "LFP-314"}
        async with http.post(node.https_url + "/console/edit", data=edit, allow_redirects=False) as r:
            assert r.status == 303
    rec = node.service.store.get("88.100/CELL-1")
    assert rec is not None
    types = {v.type: v.data for v in rec.values}
    assert types["model"] == b"LFP-314" and "HS_ADMIN" in types


async def test_batch_upload_with_progress_and_error_report(node: RunningNode) -> None:
    rows = [["handle", *CELL_FIELDS, "url"]]
    for i in range(120):
        rows.append([f"{PREFIX}/B-{i}", *CELL_FIELDS.values(), f"https://example.org/{i}"])
    rows[5][4] = "-3"  # capacity below the minimum
    rows[9][0] = "not a handle"
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    async with client(node) as http:
        assert (await login(http, node)).status == 303
        async with http.get(node.https_url + "/console/batch") as r:
            token = csrf_of(await r.text())
        form = aiohttp.FormData()
        form.add_field("csrf", token)
        form.add_field("template", "battery-cell@1")
        form.add_field("file", buf.getvalue().encode(), filename="cells.csv", content_type="text/csv")
        async with http.post(node.https_url + "/console/batch", data=form) as r:
            assert r.status == 202
            job = await r.json()
        assert job["total"] == 120
        for _ in range(200):
            async with http.get(f"{node.https_url}/console/api/jobs/{job['id']}") as r:
                job = await r.json()
            if job["finished"]:
                break
            await asyncio.sleep(0.05)
        assert job["finished"] and job["ok"] == 118 and job["failed"] == 2
        async with http.get(f"{node.https_url}/console/batch/{job['id']}/errors.csv") as r:
            assert r.status == 200 and r.content_type == "text/csv"
            report = list(csv.reader(io.StringIO((await r.read()).decode("utf-8-sig"))))
        assert report[0] == ["line", "handle", "error"]
        assert [row[0] for row in report[1:]] == ["6", "10"]
        assert "minimum" in report[1][2]
    # Another browser (no session) sees neither the job nor its report.
    async with client(node) as other, other.get(f"{node.https_url}/console/api/jobs/{job['id']}") as r:
        assert r.status == 404


async def test_batch_rejects_bad_files(node: RunningNode) -> None:
    async with client(node) as http:
        assert (await login(http, node)).status == 303
        async with http.get(node.https_url + "/console/batch") as r:
            token = csrf_of(await r.text())
        for content in (b"", b"suffix,model\nx,y\n", b"handle,colour\n88.100/a,red\n", b"\xff\xfe"):
            form = aiohttp.FormData()
            form.add_field("csrf", token)
            form.add_field("template", "battery-cell@1")
            form.add_field("file", content, filename="x.csv", content_type="text/csv")
            async with http.post(node.https_url + "/console/batch", data=form) as r:
                assert r.status == 400 and "error" in await r.json()


async def test_prefix_application_review_and_reject(node: RunningNode) -> None:
    async with client(node) as http:
        async with http.get(node.https_url + "/console/prefixes") as r:
            token = csrf_of(await r.text())
        base = {
            "csrf": token,
            "parent": PREFIX,
            "enterprise": f"Acme {XSS}",
            "contact": "a@example.org",
            "secret": "applicant-secret",
        }
        async with http.post(node.https_url + "/console/prefixes/apply", data={**base, "uscc": "123"}) as r:
            body = await r.text()
            assert r.status == 400 and 'id="p-uscc-error"' in body
        for _ in range(2):
            async with http.post(
                node.https_url + "/console/prefixes/apply",
                data={**base, "uscc": "91511500MA64K8Q21C"},
                allow_redirects=False,
            ) as r:
                assert r.status == 303
        async with http.get(node.https_url + "/console/prefixes") as r:
            body = await r.text()
            # not logged in: applicants' data is not shown (reviewers only), no review buttons
            assert (
                "st-pending" not in body and "a@example.org" not in body and "91511500MA64K8Q21C" not in body
            )
            assert 'name="decision"' not in body
        assert (await login(http, node)).status == 303
        async with http.get(node.https_url + "/console/prefixes?lang=en") as r:
            page = await r.text()
            assert page.count("st-pending") == 2 and XSS not in page
        import re

        ids = re.findall(r'id="app-(APP-[0-9A-F]+)"', page)
        assert len(ids) == 2
        token = csrf_of(page)
        url = f"{node.https_url}/console/prefixes/{ids[0]}/decide"
        async with http.post(url, data={"csrf": token, "decision": "reject", "reason": ""}) as r:
            assert r.status == 400
        async with http.post(url, data={"csrf": token, "decision": "reject", "reason": "duplicate"}) as r:
            assert r.status == 200
        url = f"{node.https_url}/console/prefixes/{ids[1]}/decide"
        async with http.post(url, data={"csrf": token, "decision": "approve"}) as r:
            body = await r.text()
            assert r.status == 200 and "st-approved" in body and "st-rejected" in body and "duplicate" in body
            assert "not filed" in body  # no top node configured for this lone secondary
    assert "88.100.1" in node.service.homed_prefixes()


async def test_supply_chain_tree(node: RunningNode) -> None:
    await _put(node, f"{PREFIX}/CELL-9", [(2, "DESC", "cell")])
    await _put(
        node,
        f"{PREFIX}/PACK-9",
        [(2, "DESC", "pack"), (3, "cell", f"{PREFIX}/CELL-9"), (4, "cell", f"{PREFIX}/GONE")],
    )
    await _put(
        node,
        f"{PREFIX}/VIN-9",
        [(2, "DESC", f"car {XSS}"), (3, "battery_pack", f"{PREFIX}/PACK-9"), (4, "self", f"{PREFIX}/VIN-9")],
    )
    async with (
        client(node) as http,
        http.get(f"{node.http_url}/console/chain?id={PREFIX}/VIN-9&lang=en") as r,
    ):
        body = await r.text()
    assert r.status == 200
    assert "4 identifiers" in body
    assert body.count('class="cnode ok"') == 4 and body.count('class="cnode bad"') == 1
    assert "already shown above" in body and XSS not in body
    assert "/console/resolve?id=88.100%2FCELL-9" in body


async def test_static_assets_are_served_from_the_package(node: RunningNode) -> None:
    async with client(node) as http:
        async with http.get(node.http_url + "/console/static/console.css") as r:
            assert r.status == 200 and r.content_type == "text/css"
        async with http.get(node.http_url + "/console/static/console.js") as r:
            assert r.status == 200 and r.content_type == "text/javascript"
        async with http.get(node.http_url + "/console/static/../idr.toml") as r:
            assert r.status == 404
        async with http.get(node.http_url + "/console/static/secret.txt") as r:
            assert r.status == 404
        async with http.delete(node.http_url + "/console") as r:
            assert r.status == 405
