"""Anonymous prefix applications are bounded: per source network, and in total waiting for review.

Anyone may apply for a prefix (REST ``POST /api/federation/applications``, the console's form)
and each application is a stored record, so without a bound one client fills the store and the
reviewers' queue. A source network gets ``applications_per_source``, then one per
``application_interval``; at most ``max_pending_applications`` wait under one parent. Beyond
either: 429 with ``Retry-After`` and a message, nothing stored. A refused (invalid) application
costs the network nothing; another network still applies.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any

import aiohttp

from idr.core.prefixes import uscc_check_char
from tests.security.conftest import Live, basic, start_live

USCC = "91510100MA61R8XB2" + uscc_check_char("91510100MA61R8XB2")
APPS = "/api/federation/applications"


def _body(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "enterprise": f"Sensors {n}",
        "uscc": USCC,
        "contact": f"c{n}@example.cn",
        "secret": "sensor-secret-9",
    } | extra


def _stored(live: Live) -> int:
    return len(live.node.service.store.list_handles("0.PREFIXAPP", None, 100_000))


async def _apply(
    client: aiohttp.ClientSession, live: Live, body: dict[str, Any]
) -> tuple[int, dict[str, Any], str]:
    async with client.post(f"{live.https}{APPS}", json=body) as r:
        return r.status, await r.json(), r.headers.get("Retry-After", "")


def _from(live: Live, address: str) -> aiohttp.ClientSession:
    """A client whose connections come from ``address`` (any 127/8 address is loopback)."""
    ctx = ssl.create_default_context(cafile=str(live.data / "tls" / "cert.pem"))
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, local_addr=(address, 0)))


async def test_one_network_gets_a_few_applications_then_429(tmp_path: Path) -> None:
    limits = {"applications_per_source": 3, "application_interval": 3600.0}
    async with start_live(tmp_path / "sec", role="secondary", http_limits=limits) as live:
        # a refused application (bad credit code) does not count
        status, body, _ = await _apply(live.client, live, _body(0, uscc="123"))
        assert status == 400, body
        for n in range(3):
            status, body, _ = await _apply(live.client, live, _body(n))
            assert status == 201, body
        assert _stored(live) == 3
        for _ in range(5):
            status, body, retry = await _apply(live.client, live, _body(9))
            assert status == 429 and "too many prefix applications" in body["message"], body
            assert int(retry) >= 1
        assert _stored(live) == 3
        # the console's form shares the gate
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False), cookie_jar=jar) as c:
            async with c.get(f"{live.https}/console/prefixes") as r:
                m = re.search(r'name="csrf" value="([^"]+)"', await r.text())
            assert m is not None
            form = {"csrf": m.group(1), "parent": "88.100", "requested": "", **_body(10)}
            url = f"{live.https}/console/prefixes/apply"
            async with c.post(url, data=form, allow_redirects=False) as r:
                text = await r.text()
                assert r.status == 429 and r.headers.get("Retry-After"), text
                assert "too many prefix applications" in text
        assert _stored(live) == 3
        # another network is not held back
        async with _from(live, "127.0.1.7") as other:
            status, body, _ = await _apply(other, live, _body(11))
        assert status == 201, body
        assert _stored(live) == 4


async def test_pending_applications_are_capped_per_parent(tmp_path: Path) -> None:
    async with start_live(
        tmp_path / "sec",
        role="secondary",
        http_limits={"applications_per_source": 100},
        limits={"max_pending_applications": 4},
    ) as live:
        ids = []
        for n in range(4):
            status, body, _ = await _apply(live.client, live, _body(n))
            assert status == 201, body
            ids.append(body["application"]["id"])
        status, body, retry = await _apply(live.client, live, _body(5))
        assert status == 429 and "waiting for review" in body["message"] and retry, body
        async with _from(live, "127.0.2.9") as other:  # from anywhere
            status, body, _ = await _apply(other, live, _body(6))
        assert status == 429, body
        assert _stored(live) == 4
        # a decision makes room
        url = f"{live.https}{APPS}/{ids[0]}/reject"
        async with live.client.post(url, json={"reason": "duplicate"}, headers=basic()) as r:
            assert r.status == 200, await r.text()
        status, body, _ = await _apply(live.client, live, _body(7))
        assert status == 201, body
        assert _stored(live) == 5
