"""The site information a node publishes (GET_SITE_INFO), read the way hdllib reads it.

``hdllib_site`` below follows ``Encoder.decodeSiteInfoRecord`` field by field (including its
refusal of trailing bytes), independently of idr's own decoder; ``hdllib_pick`` follows
``HandleResolver``'s choice of interface: for each protocol in its preferred order (UDP, TCP,
HTTP), the first interface of that protocol whose type admits the request
(``Interface.canHandleRequest``)."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from idr.cli.node import init_node
from idr.codec.bodies import GenericRequest
from idr.codec.envelope import OpCode
from idr.codec.message import encode_message
from idr.core.config import NodeConfig
from idr.node import Node
from idr.resolver.client import build_request
from tests.server.test_native_transport import recv_message
from tests.server.test_native_vectors import udp_exchange

ST_ADMIN, ST_QUERY, ST_ADMIN_AND_QUERY = 1, 2, 3
SP_UDP, SP_TCP, SP_HTTP = 0, 1, 2
PREFERRED = (SP_UDP, SP_TCP, SP_HTTP)  # HandleResolver.preferredProtocols' default


def hdllib_site(b: bytes) -> dict[str, object]:
    def arr(o: int) -> tuple[bytes, int]:
        (n,) = struct.unpack_from(">i", b, o)
        return b[o + 4 : o + 4 + n], o + 4 + n

    fmt, major, minor, serial, flags, hash_opt = struct.unpack_from(">HBBHBB", b, 0)
    _, o = arr(8)
    (n_att,) = struct.unpack_from(">i", b, o)
    o += 4
    attrs = {}
    for _ in range(n_att):
        k, o = arr(o)
        v, o = arr(o)
        attrs[k.decode()] = v.decode()
    (n_srv,) = struct.unpack_from(">i", b, o)
    o += 4
    servers = []
    for _ in range(n_srv):
        (sid,) = struct.unpack_from(">i", b, o)
        ip = b[o + 4 : o + 20]
        key, o = arr(o + 20)
        (n_if,) = struct.unpack_from(">i", b, o)
        o += 4
        ifaces = []
        for _ in range(n_if):
            t, p, port = struct.unpack_from(">BBi", b, o)
            ifaces.append((t, p, port))
            o += 6
        servers.append({"id": sid, "ip": ip, "key": key, "interfaces": ifaces})
    if o < len(b):
        raise ValueError("Unexpected data remaining after decoding")  # as decodeSiteInfoRecord
    return {
        "format": fmt,
        "version": (major, minor),
        "serial": serial,
        "primary": bool(flags & 0x80),
        "multi_primary": bool(flags & 0x40),
        "hash": hash_opt,
        "attributes": attrs,
        "servers": servers,
    }


def hdllib_pick(interfaces: list[tuple[int, int, int]], admin: bool) -> tuple[int, int, int] | None:
    for proto in PREFERRED:
        for t, p, port in interfaces:
            if p != proto:
                continue
            if (t in (ST_ADMIN, ST_ADMIN_AND_QUERY)) if admin else (t in (ST_QUERY, ST_ADMIN_AND_QUERY)):
                return t, p, port
    return None


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Node]:
    data = tmp_path / "node"
    init_node(data, "88.100", secret="site-secret", https="127.0.0.1:0", http="", native="127.0.0.1:0")
    node = Node(NodeConfig.load(data))
    await node.start()
    try:
        yield node
    finally:
        await node.stop()
        node.close()


async def test_site_info_as_hdllib_reads_it(served: Node) -> None:
    assert served.listeners.native is not None
    host, port = served.listeners.native
    request = encode_message(build_request(OpCode.GET_SITE_INFO, GenericRequest("/")))
    [raw] = await asyncio.to_thread(udp_exchange, host, port, request)
    assert int.from_bytes(raw[24:28], "big") == 1  # success
    body_len = int.from_bytes(raw[40:44], "big")
    site = hdllib_site(raw[44 : 44 + body_len])
    assert site["format"] == 1 and site["version"] == (2, 11)  # as Handle.Net 9 advertises
    assert site["primary"] and not site["multi_primary"]
    [server] = site["servers"]  # type: ignore[misc]
    ifaces = server["interfaces"]
    assert (ST_QUERY, SP_UDP, port) in ifaces  # UDP: queries only, as the reference's site
    assert (ST_ADMIN_AND_QUERY, SP_TCP, port) in ifaces
    assert hdllib_pick(ifaces, admin=False) == (ST_QUERY, SP_UDP, port)  # reads go over UDP
    assert hdllib_pick(ifaces, admin=True) == (ST_ADMIN_AND_QUERY, SP_TCP, port)  # writes over TCP

    def over_tcp() -> bytes:
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(request)
            return recv_message(s)

    tcp = await asyncio.to_thread(over_tcp)
    assert tcp[44:] == raw[44:]  # the same record both ways


async def test_the_prefix_handle_names_the_site_that_serves_it(served: Node, tmp_path: Path) -> None:
    """The national SDK's ``resolveHandle("88.100", {"HS_SITE"})``: the node's own prefix handle
    carries its site (GET_SITE_INFO's bytes), over UDP and TCP, bare or as 0.NA/88.100; after a
    restart on other ports it names the new ones."""
    from idr.codec.bodies import ResolutionResponse
    from idr.codec.site import encode_site
    from idr.resolver.client import HandleClient

    assert served.site_task is not None
    await served.site_task
    assert served.listeners.native is not None
    host, port = served.listeners.native
    async with HandleClient(host, port, timeout=5) as client:
        site = await client.site_info()
        for handle, transport in (("88.100", "udp"), ("0.NA/88.100", "tcp")):
            msg = await client.resolve(handle, types=("HS_SITE",), transport=transport)
            assert isinstance(msg.body, ResolutionResponse), msg
            [value] = msg.body.values
            assert value.data == encode_site(site)
    await served.stop()
    again = Node(NodeConfig.load(tmp_path / "node"))
    await again.start(native="127.0.0.1:0")
    try:
        assert again.site_task is not None
        await again.site_task
        assert again.listeners.native is not None and again.listeners.native != (host, port)
        host, port = again.listeners.native
        async with HandleClient(host, port, timeout=5) as client:
            msg = await client.resolve("88.100", types=("HS_SITE",), transport="tcp")
        assert isinstance(msg.body, ResolutionResponse)
        [value] = msg.body.values
        assert again.service.site_info is not None and value.data == encode_site(again.service.site_info)
        assert (ST_QUERY, SP_UDP, port) in hdllib_site(value.data)["servers"][0]["interfaces"]  # type: ignore[index]
    finally:
        await again.stop()
        again.close()


async def test_the_sdks_prefix_lookup_gets_the_site(served: Node) -> None:
    """id-pointer-sdk's own bytes for ``resolveHandle("88.100", {"HS_SITE"})`` (captured against
    the reference server) sent to a node as ``idr serve`` assembles it, nothing seeded: answered
    as the reference answered them — success, the handle as asked, one HS_SITE at index 1 — with
    this node's site."""
    from idr.codec.bodies import ResolutionResponse
    from idr.codec.message import decode_message
    from idr.codec.site import encode_site
    from tests.server.test_native_sdk import SDK

    captured = SDK / "captured"
    request = (captured / "resolve_bare_prefix_request.bin").read_bytes()
    reference = decode_message((captured / "resolve_bare_prefix_reference_response.bin").read_bytes())
    assert isinstance(reference.body, ResolutionResponse)
    assert served.listeners.native is not None and served.service.site_info is not None
    host, port = served.listeners.native

    def over_tcp() -> bytes:
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(request)
            return recv_message(s)

    for raw in (
        await asyncio.to_thread(over_tcp),
        (await asyncio.to_thread(udp_exchange, host, port, request))[0],
    ):
        got = decode_message(raw)
        assert got.request_id == decode_message(request).request_id
        assert isinstance(got.body, ResolutionResponse)
        assert (got.response_code, got.body.handle) == (reference.response_code, reference.body.handle)
        assert [(v.index, v.type) for v in got.body.values] == [
            (v.index, v.type) for v in reference.body.values
        ]
        assert got.body.values[0].data == encode_site(served.service.site_info)
