"""Issue 12, item 7: applicants' contacts and credit codes are read by those who review them only.

A secondary's prefix-review queue (console and ``/api/federation/applications``) is for the
admins of the parent prefix; the top's filing register (console and
``/api/federation/filings``) for the top's admins, and each secondary's admins for their own
filings. Anonymous visitors and other identities see none of it.
"""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp

from idr.codec.values import encode_admin
from idr.core.prefixes import uscc_check_char
from idr.core.request import Op, Request
from idr.model.value import PERM_SECRET, AdminPermission, AdminRecord, HandleValue, ValueReference
from tests.security.conftest import SECRET, Live, basic, start_live

USCC = "91510100MA61R8XB2" + uscc_check_char("91510100MA61R8XB2")
CONTACT = "zhang.san@example.cn"
OUTSIDER = "88.100/outsider"
OUTSIDER_SECRET = "outsider-secret"


def _leaks(text: str) -> bool:
    return USCC in text or CONTACT in text


async def _get(live: Live, url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with live.client.get(url, headers=headers or {}) as r:
        return r.status, await r.text()


async def _console_login(client: aiohttp.ClientSession, base: str, identity: str, secret: str) -> None:
    async with client.get(f"{base}/console/login") as r:
        csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text())
    assert csrf is not None
    form = {"csrf": csrf.group(1), "identity": identity, "secret": secret, "next": "/console/prefixes"}
    async with client.post(f"{base}/console/login", data=form, allow_redirects=False) as r:
        assert r.status == 303, await r.text()


async def test_review_queue_is_for_reviewers_only(tmp_path: Path) -> None:
    async with start_live(tmp_path / "sec", role="secondary") as live:
        body = {"enterprise": "Chengdu sensors", "uscc": USCC, "contact": CONTACT, "secret": "sensor-secret"}
        async with live.client.post(f"{live.https}/api/federation/applications", json=body) as r:
            assert r.status == 201, await r.text()
        outsider = await live.identity(
            OUTSIDER, OUTSIDER_SECRET, AdminPermission.ADD_HANDLE, on="0.NA/88.100"
        )
        apps = "/api/federation/applications"
        for base in (live.http, live.https):
            status, text = await _get(live, f"{base}/console/prefixes")
            assert status == 200 and not _leaks(text), text
            status, text = await _get(live, f"{base}{apps}")
            assert status in (401, 403) and not _leaks(text)
        status, text = await _get(live, f"{live.https}{apps}", basic(outsider, OUTSIDER_SECRET))
        assert status == 403 and not _leaks(text)
        status, text = await _get(live, f"{live.https}{apps}", basic())
        assert status == 200 and _leaks(text)  # the prefix's admin reviews
        # the console: a logged-in outsider sees no queue, the reviewer sees it
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False), cookie_jar=jar) as c:
            await _console_login(c, live.https, outsider, OUTSIDER_SECRET)
            async with c.get(f"{live.https}/console/prefixes") as r:
                assert not _leaks(await r.text())
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False), cookie_jar=jar) as c:
            await _console_login(c, live.https, "300:0.NA/88.100", SECRET)
            async with c.get(f"{live.https}/console/prefixes") as r:
                assert _leaks(await r.text())


async def test_filings_are_for_the_top_and_the_filer(tmp_path: Path) -> None:
    top_secret = "top-admin-secret"
    async with start_live(tmp_path / "top", role="top", prefix="0.NA", secret=top_secret) as live:
        svc = live.node.service
        top_admin = ValueReference("0.NA/0.NA", 300)
        sec_admin = "300:0.NA/88.100"
        values = (
            HandleValue(
                100, "HS_ADMIN", encode_admin(AdminRecord("0.NA/88.100", 300, int(AdminPermission.ALL)))
            ),
            HandleValue(300, "HS_SECKEY", SECRET.encode(), permissions=PERM_SECRET),
        )
        r = await svc.submit(Request(Op.CREATE_HANDLE, "0.NA/88.100", values=values, identity=top_admin))
        assert r.ok, r
        other = ValueReference("0.NA/88.200", 300)
        r = await svc.submit(
            Request(Op.CREATE_HANDLE, "0.NA/88.200", values=(values[1],), identity=top_admin)
        )
        assert r.ok, r
        filing = {"prefix": "88.100.7", "parent": "88.100", "enterprise": "Chengdu sensors", "uscc": USCC}
        filing["contact"] = CONTACT
        async with live.client.post(
            f"{live.https}/api/federation/filings", json=filing, headers=basic(sec_admin, SECRET)
        ) as resp:
            assert resp.status == 201, await resp.text()
        url = "/api/federation/filings"
        for base in (live.http, live.https):
            status, text = await _get(live, f"{base}{url}")
            assert status in (401, 403) and not _leaks(text)
            status, text = await _get(live, f"{base}/console/prefixes")
            assert not _leaks(text)
        # public verification (核验) says the prefix is filed, by whom — not its code or contact
        status, text = await _get(live, f"{live.http}/api/federation/verify?id=88.100.7")
        assert status == 200 and '"filed":true' in text.replace(" ", "") and "Chengdu sensors" in text
        assert not _leaks(text)
        status, text = await _get(live, f"{live.https}{url}", basic(str(other), SECRET))
        assert status == 200 and not _leaks(text)  # another secondary: none of it
        status, text = await _get(live, f"{live.https}{url}", basic(sec_admin, SECRET))
        assert status == 200 and _leaks(text)  # its own filing
        status, text = await _get(live, f"{live.https}{url}", basic("300:0.NA/0.NA", top_secret))
        assert status == 200 and _leaks(text)
