"""Handle messages over HTTP and HTTPS, as hdllib sends them to the interfaces idr advertises.

The requests are hdllib 9.2's own bytes (``HandleResolver.sendHttpOrHttpsRequest``: request line,
headers, envelope and message), captured against an ``idr serve`` node (tests/vectors/hdllib/http);
the answers are checked the way hdllib reads them: ``application/x-hdl-message``, the envelope
with the request's id, whole messages until one is not continued, a certified answer signed with
the server key of the site info. HTTPS: hdllib accepts the certificate only when its public key,
written as ``Util.getBytesFromPublicKey`` writes it, is the site's server key byte for byte.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509

from idr.cli.node import init_node
from idr.codec.bodies import ChallengeResponse, ResolutionResponse, SiteInfoResponse
from idr.codec.envelope import OpFlag
from idr.codec.keys import decode_public_key, encode_public_key
from idr.codec.message import Message, decode_message, encode_message
from idr.codec.signing import verify_message
from idr.codec.site import encode_site
from idr.core.config import NodeConfig
from idr.model.errors import ResponseCode
from idr.model.site import InterfaceType, TransportProtocol
from idr.model.value import ValueReference
from idr.node import Node
from idr.resolver.client import HandleClient, SecretKeyAuth
from idr.server.hdl_http import HDL_MIME_TYPE, frame

VECTORS = Path(__file__).parents[1] / "vectors" / "hdllib" / "http"
SECRET = "hdl-http-secret-300"


def vector(name: str) -> bytes:
    return (VECTORS / f"{name}.req").read_bytes()


def split(raw: bytes) -> tuple[bytes, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, body


def exchange(port: int, raw: bytes, *, tls: bool = False) -> tuple[int, str, bytes]:
    """``raw`` as hdllib writes it to a socket; (status, content type, body) as it reads them."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # hdllib pins the key instead: test_https_certificate…
        sock = ctx.wrap_socket(sock)
    with sock:
        sock.sendall(raw)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        return resp.status, resp.getheader("Content-Type", ""), resp.read()


def post(
    port: int, body: bytes, *, path: str = "/", ctype: str = HDL_MIME_TYPE, tls: bool = False
) -> tuple[int, str, bytes]:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    return exchange(port, head.encode() + body, tls=tls)


def messages(body: bytes, request: bytes) -> list[Message]:
    """hdllib's loop: envelope (same request id), MessageLength bytes, until not continued."""
    out: list[Message] = []
    while body:
        assert body[8:12] == request[8:12]  # "Message came back with different ID"
        end = 20 + int.from_bytes(body[16:20], "big")
        out.append(decode_message(body[:end]))
        body = body[end:]
    assert out and not out[-1].opflags & OpFlag.CN  # the last is not continued
    return out


def answer(port: int, name: str, *, tls: bool = False) -> Message:
    raw = vector(name)
    status, ctype, body = exchange(port, raw, tls=tls)
    assert status == 200 and ctype == HDL_MIME_TYPE
    [msg] = messages(body, split(raw)[1])
    return msg


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    data = tmp_path / "node"
    init_node(data, "88.100", secret=SECRET, https="127.0.0.1:0", http="127.0.0.1:0", native="127.0.0.1:0")
    n = Node(NodeConfig.load(data))
    await n.start()
    assert n.site_task is not None
    await n.site_task
    try:
        yield n
    finally:
        await n.stop()
        n.close()


def ports(node: Node) -> tuple[int, int]:
    assert node.listeners.http is not None and node.listeners.https is not None
    return node.listeners.http[1], node.listeners.https[1]


async def test_hdllib_reads_over_http(node: Node) -> None:
    http_port, https_port = ports(node)
    site = node.service.site_info
    assert site is not None
    got = await asyncio.to_thread(answer, http_port, "get_site_info")
    assert isinstance(got.body, SiteInfoResponse) and got.body.site == site
    [server] = site.servers
    interfaces = {(i.protocol, i.port): i.type for i in server.interfaces}
    assert interfaces[(TransportProtocol.HTTP, http_port)] == InterfaceType.QUERY
    assert interfaces[(TransportProtocol.HTTPS, https_port)] == InterfaceType.ADMIN_AND_QUERY

    got = await asyncio.to_thread(answer, http_port, "resolve_bare_prefix_hs_site")
    assert got.response_code == ResponseCode.SUCCESS and isinstance(got.body, ResolutionResponse)
    assert [v.data for v in got.body.values] == [encode_site(site)]  # the SDK's 88.100 HS_SITE

    got = await asyncio.to_thread(answer, http_port, "resolve_certified")
    assert isinstance(got.body, ResolutionResponse) and got.credential is not None
    assert verify_message(got, decode_public_key(server.public_key))  # checkSignatureIfNeeded

    got = await asyncio.to_thread(answer, http_port, "resolve_not_found")
    assert got.response_code == ResponseCode.HANDLE_NOT_FOUND

    # The same bytes over HTTPS, and as the reference reads a body: one leading CR/LF skipped,
    # anything after the message ignored.
    got = await asyncio.to_thread(answer, https_port, "resolve_not_found", tls=True)
    assert got.response_code == ResponseCode.HANDLE_NOT_FOUND
    head, body = split(vector("resolve_bare_prefix_hs_site"))
    padded = b"\n" + body + b"trailing"
    head = head.replace(f"Content-Length: {len(body)}".encode(), f"Content-Length: {len(padded)}".encode())
    status, _, out = await asyncio.to_thread(exchange, http_port, head + b"\r\n\r\n" + padded)
    assert status == 200 and messages(out, body)[0].response_code == ResponseCode.SUCCESS


async def test_writes_only_on_the_admin_interface(node: Node) -> None:
    """Plain HTTP is a query interface: hdllib never sends a write there, and idr refuses one
    as the reference's NativeServlet does; HTTPS takes it (challenge, answer, created)."""
    http_port, https_port = ports(node)
    got = await asyncio.to_thread(answer, http_port, "create_with_seckey")
    assert got.response_code == ResponseCode.PROTOCOL_ERROR
    assert node.listeners.native is not None
    async with HandleClient(*node.listeners.native) as c:
        msg = await c.resolve("88.100/http-probe", transport="tcp")
    assert msg.response_code == ResponseCode.HANDLE_NOT_FOUND

    raw = vector("create_with_seckey")
    challenge = await asyncio.to_thread(answer, https_port, "create_with_seckey", tls=True)
    assert challenge.response_code == ResponseCode.AUTHENTICATION_NEEDED
    assert isinstance(challenge.body, ChallengeResponse)
    client = HandleClient(
        "127.0.0.1", 0, auth=SecretKeyAuth(ValueReference("0.NA/88.100", 300), SECRET.encode())
    )
    reply = encode_message(client._challenge_answer(decode_message(split(raw)[1]), challenge))
    head = f"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: {HDL_MIME_TYPE}\r\nContent-Length: {len(reply)}"
    status, _, out = await asyncio.to_thread(
        exchange, https_port, head.encode() + b"\r\n\r\n" + reply, tls=True
    )
    assert status == 200 and messages(out, reply)[0].response_code == ResponseCode.SUCCESS
    async with HandleClient(*node.listeners.native) as c:
        msg = await c.resolve("88.100/http-probe", transport="tcp")
    assert isinstance(msg.body, ResolutionResponse)
    assert {v.type for v in msg.body.values} == {"URL", "HS_ADMIN"}


async def test_https_certificate_is_the_server_key(node: Node) -> None:
    """hdllib's TrustManagerSpecificPublicKey: the certificate's key, as Util.getBytesFromPublicKey
    writes it (RSA: four zero bytes at the end), equals the site's server key byte for byte."""
    _, https_port = ports(node)

    def peer_cert() -> bytes:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with (
            socket.create_connection(("127.0.0.1", https_port), timeout=10) as raw,
            ctx.wrap_socket(raw) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            return der

    key = x509.load_der_x509_certificate(await asyncio.to_thread(peer_cert)).public_key()
    site = node.service.site_info
    assert site is not None
    assert encode_public_key(key) + bytes(4) == site.servers[0].public_key  # type: ignore[arg-type]


def test_bodies_that_are_not_one_handle_message() -> None:
    body = split(vector("resolve_not_found"))[1]
    assert frame(body) == body and frame(b"\r" + body + b"xx") == body
    assert frame(body[:10]) == "Invalid message length"
    assert isinstance(frame(body[:-1]), str)  # shorter than its MessageLength
    assert frame(b"\x09" + body[1:]) == "not a Handle protocol 2.x message"


async def test_a_body_that_is_not_a_request(node: Node) -> None:
    http_port, _ = ports(node)
    response = await asyncio.to_thread(answer, http_port, "resolve_not_found")
    for body in (b"short", encode_message(response)):
        status, _, _ = await asyncio.to_thread(post, http_port, body, path="/x")
        assert status == 400  # no reflection: a response is never answered
    cut = split(vector("resolve_not_found"))[1][:30]  # an envelope, part of its message
    status, _, out = await asyncio.to_thread(post, http_port, cut)
    assert status == 200 and messages(out, cut)[0].response_code == ResponseCode.PROTOCOL_ERROR
    # Any other POST is the REST API's, the proxy's: untouched.
    api = "/api/handles/88.100/x"
    status, ctype, _ = await asyncio.to_thread(
        lambda: post(http_port, b"{}", path=api, ctype="application/json")
    )
    assert ctype.startswith("application/json") and status != 200
