"""Real nodes on 127.0.0.1 for the console tests: a secondary node (HTTPS + HTTP) per test.

The node is assembled exactly as ``idr demo`` assembles its nodes (``idr.demo.start_node``),
so the console is mounted by ``Node.start`` as in production. Every fixture stops what it
started.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from idr.demo import RunningNode, start_node

SECRET = "console-test-secret"
PREFIX = "88.100"
ADMIN = f"300:0.NA/{PREFIX}"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    m = CSRF.search(html)
    assert m, "page has no CSRF field"
    return m.group(1)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[RunningNode]:
    n = await start_node(tmp_path, "sec", "Test secondary <node>", "secondary", PREFIX, SECRET)
    try:
        yield n
    finally:
        await n.node.stop()
        n.node.close()


def client(node: RunningNode) -> aiohttp.ClientSession:
    """A browser-like client: keeps cookies for 127.0.0.1 and trusts only the node's certificate."""
    ctx = ssl.create_default_context(cafile=str(node.cert))
    return aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        connector=aiohttp.TCPConnector(ssl=ctx),
        timeout=aiohttp.ClientTimeout(total=20),
        trust_env=False,
    )


async def login(
    http: aiohttp.ClientSession, node: RunningNode, secret: str = SECRET
) -> aiohttp.ClientResponse:
    async with http.get(node.https_url + "/console/login") as r:
        token = csrf_of(await r.text())
    return await http.post(
        node.https_url + "/console/login",
        data={"csrf": token, "identity": ADMIN, "secret": secret},
        allow_redirects=False,
    )
