"""A site of four servers (SQLite each), started by the one assembly: every server answers for
the handles the protocol's hash gives it, refuses the others as Handle.Net does (301 "Request
was hashed incorrectly"), authenticates identities another server holds, and its HTTP
front-end relays what another server holds (HTTP clients do not hash)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any
from urllib.parse import quote

import aiohttp

from idr.codec.bodies import ErrorResponse
from idr.model.errors import ResponseCode
from idr.model.handle import normalize_key
from idr.model.value import HandleValue, ValueReference
from idr.resolver.client import HandleClient, ResponseError, SecretKeyAuth
from idr.store.base import Store
from tests.site.conftest import ADMIN, INSECURE, SECRET, Site

AUTH = SecretKeyAuth(ValueReference.parse(ADMIN), SECRET.encode())


def store(site: Site, i: int) -> Store:
    return site.nodes[i].service.store


def basic() -> dict[str, str]:
    token = base64.b64encode(f"{quote(ADMIN, safe='')}:{SECRET}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def url_value(text: str) -> dict[str, object]:
    return {"index": 1, "type": "URL", "data": {"format": "string", "value": text}}


async def test_every_server_publishes_the_whole_site(site4: Site) -> None:
    sites = []
    for spec in site4.specs:
        async with HandleClient("127.0.0.1", spec.native, timeout=5.0) as c:
            sites.append(await c.site_info())
    assert all(s == sites[0] for s in sites)
    assert [(s.host, s.interfaces[0].port) for s in sites[0].servers] == [
        ("127.0.0.1", spec.native) for spec in site4.specs
    ]
    assert len({s.public_key for s in sites[0].servers}) == 1 and sites[0].servers[0].public_key


async def test_a_server_refuses_a_handle_hashed_to_another(site4: Site) -> None:
    handle = "88.100/elsewhere-1"
    owner = site4.owner(handle)
    wrong = (owner + 1) % 4
    async with HandleClient("127.0.0.1", site4.specs[wrong].native, timeout=5.0) as c:
        for transport in ("udp", "tcp"):
            msg = await c.resolve(handle, transport=transport)
            assert msg.response_code == ResponseCode.SERVER_NOT_RESPONSIBLE
            assert msg.body == ErrorResponse("Request was hashed incorrectly")
    async with HandleClient("127.0.0.1", site4.specs[owner].native, timeout=5.0) as c:
        msg = await c.resolve(handle)
        assert msg.response_code == ResponseCode.HANDLE_NOT_FOUND


async def test_native_writes_at_the_owner_authenticate_an_identity_held_elsewhere(site4: Site) -> None:
    ph_owner = site4.owner("0.NA/88.100")
    handles = [f"88.100/native-{i}" for i in range(12)]
    assert {site4.owner(h) for h in handles} - {ph_owner}, "some handle lands away from the admin"
    for h in handles:
        owner = site4.owner(h)
        async with HandleClient("127.0.0.1", site4.specs[owner].native, timeout=5.0, auth=AUTH) as c:
            await c.create(h, [HandleValue(1, "URL", f"https://example.org/{h}".encode())])
            values = await c.resolve_values(h)
        assert values[0].data == f"https://example.org/{h}".encode()
        held = [i for i in range(4) if store(site4, i).get(normalize_key(h)) is not None]
        assert held == [owner]
        wrong = (owner + 1) % 4
        async with HandleClient("127.0.0.1", site4.specs[wrong].native, timeout=5.0, auth=AUTH) as c:
            try:
                await c.delete(h)
                raise AssertionError("the wrong server deleted it")
            except ResponseError as e:
                assert e.code == ResponseCode.SERVER_NOT_RESPONSIBLE
    # A wrong secret is refused wherever the identity lives.
    bad = SecretKeyAuth(ValueReference.parse(ADMIN), b"not-the-secret")
    h = next(h for h in (f"88.100/bad-{i}" for i in range(40)) if site4.owner(h) != ph_owner)
    async with HandleClient("127.0.0.1", site4.specs[site4.owner(h)].native, timeout=5.0, auth=bad) as c:
        try:
            await c.create(h, [HandleValue(1, "URL", b"https://example.org/x")])
            raise AssertionError("a wrong secret was accepted")
        except ResponseError as e:
            assert e.code == ResponseCode.AUTHENTICATION_FAILED


async def test_http_at_any_server_reaches_the_owner(site4: Site) -> None:
    handles = [f"88.100/http-{i}" for i in range(12)]
    async with aiohttp.ClientSession(headers=basic()) as http:
        for n, h in enumerate(handles):
            via = site4.https(n % 4)  # whichever server the client happens to use
            body = {"values": [url_value(f"https://example.org/{h}")]}
            async with http.put(f"{via}/api/handles/{h}", json=body, ssl=INSECURE) as r:
                doc = await r.json()
                assert r.status in (200, 201) and doc["responseCode"] == 1, doc
            held = [i for i in range(4) if store(site4, i).get(normalize_key(h)) is not None]
            assert held == [site4.owner(h)]
        for n, h in enumerate(handles):
            async with http.get(f"{site4.https((n + 1) % 4)}/api/handles/{h}", ssl=INSECURE) as r:
                doc = await r.json()
                assert doc["responseCode"] == 1 and doc["values"][0]["data"]["value"].endswith(h), doc
        # Listing from one server gives every server's share, in key order, paged.
        async with http.get(f"{site4.https(2)}/api/handles?prefix=88.100", ssl=INSECURE) as r:
            doc = await r.json()
        assert doc["handles"] == sorted(handles, key=normalize_key)
        pages: list[str] = []
        for page in range(5):
            q = f"prefix=88.100&page={page}&pageSize=3"
            async with http.get(f"{site4.https(1)}/api/handles?{q}", ssl=INSECURE) as r:
                doc = await r.json()
            pages += doc["handles"]
            assert doc["totalCount"] == str(len(handles)), doc
        assert pages == sorted(handles, key=normalize_key)[:15]
        # Delete through yet another server.
        async with http.delete(f"{site4.https(3)}/api/handles/{handles[0]}", ssl=INSECURE) as r:
            assert (await r.json())["responseCode"] == 1
        assert all(store(site4, i).get(normalize_key(handles[0])) is None for i in range(4))


async def test_pyhandle_reaches_every_handle_through_any_server(site4: Site) -> None:
    """pyhandle (the REST client Handle.Net users script with) knows one server's URL and does
    not hash: each server relays to the owner, for writes, reads and deletes."""
    from pyhandle.handleclient import PyHandleClient

    def client(i: int) -> Any:
        return PyHandleClient("rest").instantiate_with_username_and_password(
            site4.https(i), ADMIN, SECRET, HTTPS_verify=False
        )

    handles = [f"88.100/py-{i}" for i in range(8)]
    assert len({site4.owner(h) for h in handles}) > 1

    def run() -> None:
        for n, h in enumerate(handles):
            client(n % 4).register_handle(h, f"https://example.org/{h}")
        for n, h in enumerate(handles):
            got = client((n + 1) % 4).get_value_from_handle(h, "URL")
            assert got == f"https://example.org/{h}"
        client(2).delete_handle(handles[0])
        assert client(3).retrieve_handle_record(handles[0]) is None

    await asyncio.to_thread(run)
    for h in handles[1:]:
        held = [i for i in range(4) if store(site4, i).get(normalize_key(h)) is not None]
        assert held == [site4.owner(h)]


async def test_reverse_lookup_at_any_server_searches_the_whole_site(site4: Site) -> None:
    handles = [f"88.100/hrls-{i}" for i in range(12)]
    want = sorted(handles, key=normalize_key)
    async with aiohttp.ClientSession(headers=basic()) as http:
        for n, h in enumerate(handles):
            body = {"values": [url_value(f"https://example.org/hrls-site/{h}")]}
            async with http.put(f"{site4.https(n % 4)}/api/handles/{h}", json=body, ssl=INSECURE) as r:
                assert r.status in (200, 201), await r.text()
        assert len({site4.owner(h) for h in handles}) > 1  # spread over the servers
        q = "URL=*hrls-site*"
        for i in range(4):  # whichever server is asked: every server's matches, in key order
            async with http.get(f"{site4.https(i)}/hrls/handles?{q}", ssl=INSECURE) as r:
                assert r.status == 200 and await r.json() == want
        pages: list[str] = []
        for page in range(0, 15, 5):  # paged as one store would page it
            async with http.get(f"{site4.https(2)}/hrls/handles?{q}&limit=5&page={page}", ssl=INSECURE) as r:
                pages += await r.json()
        assert pages == want
        async with http.get(f"{site4.https(3)}/hrls/handles?{q}&retrieverecords=true", ssl=INSECURE) as r:
            records = await r.json()
        assert sorted(records) == want and all(records[h][0]["value"].endswith(h) for h in handles)
        # bounded: a page deeper than the merge may go is refused, with why
        async with http.get(f"{site4.https(1)}/hrls/handles?{q}&limit=10&page=50000", ssl=INSECURE) as r:
            assert r.status == 400 and "narrow the search" in (await r.json())["message"]
