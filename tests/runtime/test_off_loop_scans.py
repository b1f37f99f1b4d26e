"""Store reads left on the event loop after issue 11, moved off it: a top node on PostgreSQL
whose tables another session holds locked keeps answering cached UDP resolutions at once while

* an admin's audit-trail query walks the transaction log (and many at once are refused, not
  queued without bound),
* a ``/metrics`` scrape reads the log's position,
* an SNMS token login, a console login, a mode-3 session setup (its exchange key's handle) and
  a converged GS1 resolution (which asks whether the top knows a GS1 company prefix) and a
  public verification (核验) of a prefix wait for records that are not cached, and the node's
  public facts for the federation map walk its delegations,
* the console's first resolution reads the top service's own sites (the referral walker's
  root), and a reviewer's decision on a prefix application (at a secondary) reads the
  application

— each of these used to read the store on the loop, so one lock (or one slow round trip)
stalled every client of the node. Each still answers correctly once the lock goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from idr.codec.bodies import KEY_EXCHANGE_CIPHER_HDL, SessionSetupRequest
from idr.codec.envelope import OpCode, OpFlag
from idr.codec.keys import encode_public_key
from idr.codec.message import decode_message, encode_message
from idr.codec.values import encode_admin
from idr.core.request import Op, Request
from idr.model.errors import ResponseCode
from idr.model.handle import normalize_key
from idr.model.value import PERM_SECRET, AdminPermission, AdminRecord, HandleValue, ValueReference
from idr.node import Node
from idr.resolver.client import HandleClient, _TcpChannel, build_request
from tests.runtime.conftest import node_on_postgres

SECRET = "scans-s3cret-0123456789"
TOP_ADMIN = ValueReference("0.NA/0.NA", 300)
ID_SECRET = "identity-s3cret-987654"
GTIN = "00614141123452"


@pytest.fixture
async def top(tmp_path: Path) -> AsyncIterator[tuple[Node, str]]:
    async with node_on_postgres(tmp_path / "top", SECRET, role="top") as started:
        yield started


@contextlib.contextmanager
def locked(dsn: str, table: str) -> Iterator[threading.Event]:
    """Another session holds ``table``: every statement on it waits until the block ends
    (or ``release`` is set)."""
    ready, release = threading.Event(), threading.Event()

    def hold() -> None:
        with psycopg.connect(dsn) as conn, conn.transaction():
            conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            ready.set()
            release.wait(30)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert ready.wait(10)
    try:
        yield release
    finally:
        release.set()
        holder.join(10)


def _client(node: Node, jar: aiohttp.CookieJar | None = None) -> aiohttp.ClientSession:
    ctx = ssl.create_default_context(cafile=str(node.config.data_dir / "tls" / "cert.pem"))
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ctx, limit=0), cookie_jar=jar or aiohttp.CookieJar(unsafe=True)
    )


def _https(node: Node) -> str:
    assert node.listeners.https
    return f"https://127.0.0.1:{node.listeners.https[1]}"


async def _cached_udp_answers_flow(node: Node, handle: str) -> None:
    """A cached resolution over UDP is answered within a second, three times over."""
    assert node.listeners.native
    async with HandleClient("127.0.0.1", node.listeners.native[1], timeout=2.0, retries=0) as c:
        for _ in range(3):
            t0 = time.monotonic()
            assert (await c.resolve(handle)).response_code == ResponseCode.SUCCESS
            assert time.monotonic() - t0 < 1.0


async def _loop_stays_free(seconds: float) -> None:
    """Sleep on the loop the node runs on: a read that held the loop (until the lock's holder
    gives up, 30 s) makes this sleep that long, where an answer below may not show it."""
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    assert time.monotonic() - t0 < seconds + 5.0, "the event loop was held"


async def _create(node: Node, handle: str, *values: HandleValue, by: ValueReference = TOP_ADMIN) -> None:
    resp = await node.service.submit(Request(Op.CREATE_HANDLE, handle, values=values, identity=by))
    assert resp.ok, resp


async def test_audit_trail_walks_the_log_off_the_loop_and_a_few_at_once(top: tuple[Node, str]) -> None:
    node, dsn = top
    await _create(node, "0.NA/77.9", HandleValue(1, "URL", b"https://example.org/hot"))
    await _cached_udp_answers_flow(node, "0.NA/77.9")  # cached now
    # as pyhandle sends it: the user quoted
    auth = {"Authorization": aiohttp.encode_basic_auth("300%3A0.NA%2F0.NA", SECRET)}  # type: ignore[attr-defined]
    url = f"{_https(node)}/api/federation/audit?limit=5"
    async with _client(node) as http:
        async with http.get(url, headers=auth) as r:
            assert r.status == 200, await r.text()  # and the admin's identity is cached

        async def audit() -> tuple[int, Any]:
            async with http.get(url, headers=auth) as r:
                return r.status, await r.json()

        async def metrics() -> int:
            async with http.get(f"{_https(node)}/metrics") as r:
                await r.read()
                return r.status

        with locked(dsn, "txlog") as release:
            first = asyncio.ensure_future(audit())
            scrape = asyncio.ensure_future(metrics())  # its log position waits on the lock too
            await _loop_stays_free(0.3)
            assert not first.done() and not scrape.done()
            await _cached_udp_answers_flow(node, "0.NA/77.9")
            # one walk at a time, a few waiting: the rest are refused at once
            more = [asyncio.ensure_future(audit()) for _ in range(12)]
            done, _ = await asyncio.wait(more, timeout=5.0, return_when=asyncio.FIRST_COMPLETED)
            refused = [t.result() for t in done]
            assert refused and all(status == 503 for status, _ in refused), refused
            assert not first.done()
            release.set()
            status, body = await first
            assert status == 200 and any("0.NA/77.9" in e["keys"] for e in body["entries"]), body
            assert await scrape == 200
            statuses = sorted(status for status, _ in await asyncio.gather(*more))
        assert statuses.count(503) >= 3 and statuses.count(200) >= 1, statuses


async def test_logins_session_setups_and_gs1_checks_wait_off_the_loop(top: tuple[Node, str]) -> None:
    node, dsn = top
    svc = node.service
    exchange_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def identity(handle: str) -> tuple[HandleValue, ...]:
        admin = AdminRecord(handle, 300, int(AdminPermission.ALL))
        return (
            HandleValue(100, "HS_ADMIN", encode_admin(admin)),
            HandleValue(300, "HS_SECKEY", ID_SECRET.encode(), permissions=PERM_SECRET),
        )

    await _create(node, "0.NA/77.1", *identity("0.NA/77.1"))  # SNMS login
    await _create(node, "0.NA/77.3", *identity("0.NA/77.3"))  # console login
    await _create(
        node,
        "0.NA/77.2",
        *identity("0.NA/77.2"),
        HandleValue(301, "HS_PUBKEY", encode_public_key(exchange_key.public_key())),
    )
    await _create(node, "0.NA/77.9", HandleValue(1, "URL", b"https://example.org/hot"))
    await _cached_udp_answers_flow(node, "0.NA/77.9")
    assert node.listeners.native
    port = node.listeners.native[1]

    async with _client(node) as http:
        base = _https(node)
        async with http.get(f"{base}/console/login") as r:
            m = re.search(r'name="csrf" value="([^"]+)"', await r.text())
        assert m is not None
        csrf = m.group(1)
        # nothing the requests below read is cached
        svc.cache.invalidate(
            [normalize_key(h) for h in ("0.NA/77.1", "0.NA/77.2", "0.NA/77.3")]
            + [normalize_key(f"0.NA/GS1.{GTIN[1 : 1 + n]}") for n in range(13)]
            + ["0.NA/GS1"]
        )

        async def snms() -> int:
            login = {"username": "300:0.NA/77.1", "password": ID_SECRET}
            async with http.post(f"{base}/identity/token", json=login) as r:
                body = await r.json()
            return int(body["status"])

        async def console() -> int:
            form = {"csrf": csrf, "identity": "300:0.NA/77.3", "secret": ID_SECRET, "next": "/console"}
            async with http.post(f"{base}/console/login", data=form, allow_redirects=False) as r:
                return r.status

        async def gs1() -> int:
            async with http.get(f"{base}/api/resolve", params={"id": f"https://id.gs1.org/01/{GTIN}"}) as r:
                await r.read()
                return r.status

        async def verify() -> int:  # 核验: public, about any prefix
            async with http.get(f"{base}/api/federation/verify", params={"id": "88.977"}) as r:
                doc = await r.json()
            assert doc["verification"]["filed"] is False, doc
            return r.status

        async def node_facts() -> int:  # public: what the federation map asks every node
            async with http.get(f"{base}/console/api/node") as r:
                doc = await r.json()
            assert isinstance(doc["delegations"], list), doc
            return r.status

        async def session_setup() -> ResponseCode:
            body = SessionSetupRequest(KEY_EXCHANGE_CIPHER_HDL, 600, "0.NA/77.2", 300, b"", "0.NA/77.2", 301)
            msg = build_request(OpCode.SESSION_SETUP, body, flags=OpFlag.CT | OpFlag.RD)
            channel = await _TcpChannel.open("127.0.0.1", port, 20.0)
            try:
                await channel.send(encode_message(msg))
                return ResponseCode(decode_message(await channel.read()).response_code)
            finally:
                await channel.close()

        with locked(dsn, "handles") as release:
            waiting = {
                "snms": asyncio.ensure_future(snms()),
                "console": asyncio.ensure_future(console()),
                "gs1": asyncio.ensure_future(gs1()),
                "session": asyncio.ensure_future(session_setup()),
                "verify": asyncio.ensure_future(verify()),
                "node": asyncio.ensure_future(node_facts()),
            }
            await _loop_stays_free(0.5)
            assert not [name for name, t in waiting.items() if t.done()]
            await _cached_udp_answers_flow(node, "0.NA/77.9")
            assert not [name for name, t in waiting.items() if t.done()]
            release.set()
            results = {name: await asyncio.wait_for(t, 20) for name, t in waiting.items()}
    assert results["snms"] == 1
    assert results["console"] == 303
    assert results["gs1"] == 404  # no GS1 prefix is known here: a clear not-found, after waiting
    assert results["session"] == ResponseCode.SUCCESS
    assert results["verify"] == 200
    assert results["node"] == 200


async def test_the_consoles_first_walk_reads_its_root_sites_off_the_loop(top: tuple[Node, str]) -> None:
    node, dsn = top
    await _create(node, "0.NA/77.9", HandleValue(1, "URL", b"https://example.org/hot"))
    await _cached_udp_answers_flow(node, "0.NA/77.9")
    async with _client(node) as http:

        async def resolve() -> tuple[int, Any]:
            async with http.get(f"{_https(node)}/console/api/resolve", params={"id": "0.NA/77.9"}) as r:
                return r.status, await r.json()

        with locked(dsn, "handles") as release:
            first = asyncio.ensure_future(resolve())  # builds the walker: the top's sites, once
            await _loop_stays_free(0.5)
            assert not first.done()
            await _cached_udp_answers_flow(node, "0.NA/77.9")
            assert not first.done()
            release.set()
            status, doc = await asyncio.wait_for(first, 20)
    assert status == 200 and doc["responseCode"] == ResponseCode.SUCCESS, doc
    assert [h["node"] for h in doc["trace"]], doc


async def test_a_reviewers_decision_reads_the_application_off_the_loop(tmp_path: Path) -> None:
    from idr.core.federation import FederatedService
    from idr.core.prefixes import PrefixRegistry

    async with node_on_postgres(tmp_path / "sec", SECRET, "88.100", role="secondary") as (node, dsn):
        svc = node.service
        assert isinstance(svc, FederatedService)
        reg = PrefixRegistry(svc, "88.100")
        app = await reg.apply(
            enterprise="Acme", uscc="91511500MA64K8Q21C", contact="a@example.org", secret=ID_SECRET
        )
        admin = ValueReference("0.NA/88.100", 300)
        await _create(node, "88.100/hot", HandleValue(1, "URL", b"https://example.org/hot"), by=admin)
        await _cached_udp_answers_flow(node, "88.100/hot")
        async with _client(node) as http:
            base = _https(node)
            async with http.get(f"{base}/console/login") as r:
                m = re.search(r'name="csrf" value="([^"]+)"', await r.text())
            assert m is not None
            form = {"csrf": m.group(1), "identity": str(admin), "secret": SECRET, "next": "/console"}
            async with http.post(f"{base}/console/login", data=form, allow_redirects=False) as r:
                assert r.status == 303
            async with http.get(f"{base}/console/prefixes") as r:
                m = re.search(r'name="csrf" value="([^"]+)"', await r.text())
            assert m is not None
            svc.cache.invalidate([normalize_key(f"0.PREFIXAPP/{app.id}")])  # not cached

            async def decide() -> int:
                url = f"{base}/console/prefixes/{app.id}/decide"
                async with http.post(
                    url, data={"csrf": m.group(1), "decision": "approve"}, allow_redirects=False
                ) as r:
                    return r.status

            with locked(dsn, "handles") as release:
                waiting = asyncio.ensure_future(decide())
                await _loop_stays_free(0.5)
                assert not waiting.done()
                await _cached_udp_answers_flow(node, "88.100/hot")
                assert not waiting.done()
                release.set()
                assert await asyncio.wait_for(waiting, 20) == 303
        assert (await reg.read(app.id)).status == "approved"
        assert "88.100.1" in svc.homed_prefixes()
