"""hdllib 9.2 (Handle.Net's own client, stock ``HandleResolver``) against a two-server idr site,
replayed from its bytes (tests/vectors/hdllib/site2, README there): the site it was given
(GET_SITE_INFO of an ``idr init --site-servers 2`` site), the server it chose for each handle,
and its requests, sent again to an idr site of two servers: the server hdllib chose answers with
the values it got then, the other one 301."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from urllib.parse import quote

import aiohttp

from idr.codec.bodies import ErrorResponse, ResolutionResponse, SiteInfoResponse
from idr.codec.message import Message, decode_message
from idr.model.errors import ResponseCode
from idr.model.site import TransportProtocol
from idr.resolver.client import HandleClient
from tests.site.conftest import ADMIN, INSECURE, SECRET, fresh_site, stop_site

VECTORS = Path(__file__).parent.parent / "vectors" / "hdllib" / "site2"
CAPTURED_PORTS = [39700, 39710]  # the captured site's native ports (README)


def _msg(name: str) -> Message:
    return decode_message((VECTORS / name).read_bytes())


def _requests(op: str) -> list[tuple[int, str, str, Path]]:
    """(server hdllib sent it to, transport, handle, file) of every captured ``op`` request."""
    out = []
    for f in sorted(VECTORS.glob(f"s?_*_{op}_*_request.bin")):
        server, transport = int(f.name[1]), f.name.split("_")[1]
        body = decode_message(f.read_bytes()).body
        out.append((server, transport, str(body.handle), f))  # type: ignore[attr-defined]
    return out


def _values(msg: Message) -> list[tuple[int, str, bytes]]:
    assert isinstance(msg.body, ResolutionResponse), msg
    return [(v.index, v.type, v.data) for v in msg.body.values]


def test_hdllib_picks_the_server_idr_hashes_to() -> None:
    answer = _msg("site_info_response.bin")
    assert answer.response_code == ResponseCode.SUCCESS and isinstance(answer.body, SiteInfoResponse)
    site = answer.body.site
    assert [s.port_for(TransportProtocol.TCP) for s in site.servers] == CAPTURED_PORTS
    sent = _requests("resolve") + _requests("create") + _requests("delete")
    # Handles of both shares, resolutions over UDP and TCP, a create and a delete on each server.
    assert {(s, t) for s, t, _, _ in sent} == {(0, "udp"), (0, "tcp"), (1, "udp"), (1, "tcp")}
    assert {s for s, _, h, f in sent if "_create_" in f.name} == {0, 1}
    for server, _, handle, f in sent:
        assert site.servers.index(site.server_for(handle)) == server, f.name


async def test_hdllib_requests_replayed_against_an_idr_site(tmp_path: Path) -> None:
    site = await fresh_site(tmp_path, 2)
    try:
        token = base64.b64encode(f"{quote(ADMIN, safe='')}:{SECRET}".encode()).decode()
        resolutions = _requests("resolve")
        handles = sorted({h for _, _, h, _ in resolutions if h.startswith("88.100/")})
        assert handles == [f"88.100/site-{i}" for i in range(4)]
        async with aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"}) as http:
            for n, h in enumerate(handles):  # as the capture's site got them: PUT at any server
                v = {
                    "index": 1,
                    "type": "URL",
                    "data": {"format": "string", "value": f"https://example.org/{h[7:]}"},
                }
                url = f"{site.https(n % 2)}/api/handles/{h}?overwrite=true"
                async with http.put(url, json={"values": [v]}, ssl=INSECURE) as r:
                    assert r.status in (200, 201), await r.text()
        for server, transport, handle, f in resolutions:
            request = f.read_bytes()
            then = decode_message(f.with_name(f.name.replace("_request", "_response")).read_bytes())
            for i, spec in enumerate(site.specs):
                async with HandleClient("127.0.0.1", spec.native, timeout=5.0) as c:
                    raw = (
                        await c.send_udp(request) if transport == "udp" else await _tcp(spec.native, request)
                    )
                answer = decode_message(raw)
                assert answer.request_id == int.from_bytes(request[8:12], "big"), f.name
                if i != server:
                    assert answer.response_code == ResponseCode.SERVER_NOT_RESPONSIBLE, f.name
                    assert answer.body == ErrorResponse("Request was hashed incorrectly")
                    continue
                assert answer.response_code == ResponseCode.SUCCESS, (f.name, answer)
                if handle.startswith("0.NA/"):  # its HS_SITE holds this run's ports
                    assert [t for _, t, _ in _values(answer)] == [t for _, t, _ in _values(then)]
                else:
                    assert _values(answer) == _values(then), f.name
    finally:
        await stop_site(site)


async def _tcp(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5.0)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readexactly(20), 5.0)
        return head + await asyncio.wait_for(reader.readexactly(int.from_bytes(head[16:20], "big")), 5.0)
    finally:
        writer.close()
