"""Teleinfo id-pointer-sdk against a node, with its own bytes (tests/vectors/sdk): resolutions with
the extra auth field over TCP and UDP (existing, missing, filtered, a bare prefix), a resolution
carrying an identity token, and writes authenticated by SM2 keys stored and used as the SDK
stores and uses them."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from idr.codec.bodies import ResolutionResponse
from idr.codec.keys import encode_public_key
from idr.codec.message import decode_message
from idr.codec.site import encode_site
from idr.codec.sm2 import DEFAULT_UID, SHA256, SM3, SM2PrivateKey, sm3
from idr.codec.udp import Reassembler
from idr.codec.values import encode_admin
from idr.codec.wire import Writer
from idr.core.federation import loopback_site
from idr.model.errors import ResponseCode
from idr.model.value import AdminPermission, AdminRecord, HandleRecord, HandleValue, ValueReference
from idr.resolver.client import HandleClient, ResponseError
from tests.resolver.native_node import T0, TIMEOUT, NativeNode, native, prefix_values, start_node, vector  # noqa: F401
from tests.server.test_native_transport import recv_message
from tests.server.test_native_vectors import tcp_exchange, udp_exchange

SDK = Path(__file__).resolve().parents[1] / "vectors" / "sdk"
USER = ValueReference("0.NA/88.100", 310)  # the identity of the token vector


def sdk(name: str) -> bytes:
    return (SDK / name).read_bytes()


def tcp_message(host: str, port: int, data: bytes) -> bytes:
    """One request over TCP; its one answer (the SDK's connections are not closed after it)."""
    with socket.create_connection((host, port), timeout=TIMEOUT) as s:
        s.sendall(data)
        return recv_message(s)


def udp_message(host: str, port: int, data: bytes) -> bytes:
    """One request over UDP; the answer reassembled from however many datagrams it came in."""
    parts = Reassembler()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(TIMEOUT)
        s.sendto(data, (host, port))
        while (whole := parts.feed("server", s.recvfrom(65535)[0], 0.0)) is None:
            pass
    return whole


def answer_of(raw: bytes) -> tuple[int, str, list[int]]:
    msg = decode_message(raw)
    if isinstance(msg.body, ResolutionResponse):
        return msg.response_code, msg.body.handle, [v.index for v in msg.body.values]
    return msg.response_code, "", []


@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_sdk_resolutions(native: NativeNode, transport: str) -> None:  # noqa: F811
    def ask(name: str) -> tuple[int, str, list[int]]:
        data = sdk(name)
        if transport == "udp":
            raw = udp_message(native.host, native.port, data)
        else:
            raw = tcp_message(native.host, native.port, data)
        got = decode_message(raw)
        assert got.request_id == decode_message(data).request_id
        return answer_of(raw)

    for _ in range(2):  # slow path, then the answer cache
        assert await asyncio.to_thread(ask, "sdk_resolve_request.bin") == (1, "88.100/bench-0", [1, 2, 100])
        assert await asyncio.to_thread(ask, "sdk_resolve_filtered_request.bin") == (
            1,
            "88.100/bench-0",
            [1, 2],
        )
        missing = await asyncio.to_thread(ask, "sdk_resolve_missing_request.bin")
        assert missing[0] == ResponseCode.HANDLE_NOT_FOUND
        code, handle, indexes = await asyncio.to_thread(ask, "sdk_resolve_prefix_request.bin")
        # the bare prefix is resolved as 0.NA/88.100 and echoed as asked; HS_SECKEY stays private (PO)
        assert (code, handle) == (1, "88.100") and 100 in indexes and 300 not in indexes


REC700 = HandleRecord(
    "88.100/rec700",
    (
        HandleValue(1, "URL", b"https://example.org/interop/rec700"),
        HandleValue(2, "EMAIL", b"interop@example.org"),
        HandleValue(3, "DESC", b"seven hundred bytes " * 30),
    ),
)


@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_captured_sdk_requests(native: NativeNode, transport: str) -> None:  # noqa: F811
    """The SDK's own bytes, captured against the reference server, sent to idr: the same
    answers the reference gave (with this node's data)."""
    site = HandleValue(1, "HS_SITE", encode_site(loopback_site("idr", native=native.port)))
    native.service.import_now([REC700, HandleRecord("0.NA/88.100", (*prefix_values(), site))])

    def ask(name: str) -> tuple[int, str, list[int]]:
        data = (SDK / "captured" / name).read_bytes()
        raw = (
            udp_message(native.host, native.port, data)
            if transport == "udp"
            else tcp_message(native.host, native.port, data)
        )
        assert decode_message(raw).request_id == decode_message(data).request_id
        return answer_of(raw)

    assert await asyncio.to_thread(ask, "resolve_rec700_request.bin") == (1, "88.100/rec700", [1, 2, 3])
    assert await asyncio.to_thread(ask, "resolve_type_filter_request.bin") == (1, "88.100/rec700", [2])
    assert await asyncio.to_thread(ask, "resolve_index_filter_request.bin") == (1, "88.100/rec700", [1, 3])
    assert (await asyncio.to_thread(ask, "resolve_missing_request.bin"))[0] == ResponseCode.HANDLE_NOT_FOUND
    # "88.100" with type HS_SITE: the prefix handle's site, under the name asked (as the reference)
    assert await asyncio.to_thread(ask, "resolve_bare_prefix_request.bin") == (1, "88.100", [1])
    # an auth string that is not the SDK's token: ignored, as the reference ignores the field
    assert await asyncio.to_thread(ask, "resolve_authstring_request.bin") == (1, "88.100/rec700", [1, 2, 3])


@dataclass
class TokenNode:
    node: NativeNode
    key: rsa.RSAPrivateKey


@pytest_asyncio.fixture
async def token_node(tmp_path: Path) -> AsyncIterator[TokenNode]:
    node = await start_node(tmp_path)
    key = load_pem_private_key(sdk("user_rsa_key.pem"), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    svc = node.service
    user_key = HandleValue(USER.index, "HS_PUBKEY", encode_public_key(key.public_key()))
    reader = AdminRecord(USER.handle, USER.index, AdminPermission.READ_VALUE)
    private = HandleRecord(
        "88.100/private",
        (
            HandleValue(1, "URL", b"https://example.org/public"),
            HandleValue(2, "EMAIL", b"secret@example.org", permissions=0b1110 & ~0b0010),  # admin only
            HandleValue(100, "HS_ADMIN", encode_admin(reader)),
        ),
    )
    svc.import_now([HandleRecord("0.NA/88.100", (*prefix_values(), user_key)), private])
    node.server.handler.wall_clock = lambda: T0 + 60.0  # the token vector was made at T0
    try:
        yield TokenNode(node, key)
    finally:
        await node.server.close()
        svc.close()


async def test_resolution_with_identity_token_answers_as_that_identity(token_node: TokenNode) -> None:
    node = token_node.node
    data = sdk("sdk_resolve_token_request.bin")
    raw = await asyncio.to_thread(tcp_message, node.host, node.port, data)
    assert answer_of(raw) == (1, "88.100/private", [1, 2, 100])
    [raw] = await asyncio.to_thread(udp_exchange, node.host, node.port, data)
    assert answer_of(raw) == (1, "88.100/private", [1, 2, 100])
    assert len(node.server.cache) == 0  # an identity's answer is never cached
    # without the token (same request, empty auth field, no flag): public values only
    plain = bytearray(data[:28]) + bytes([data[28], data[29], data[30], data[31] & ~0x04]) + data[32:]
    auth_at = 44 + 4 + len(b"88.100/private") + 8
    body = bytes(plain[44:auth_at]) + bytes(4)
    anon = plain[:16] + (24 + len(body) + 4).to_bytes(4, "big") + plain[20:40]
    anon += len(body).to_bytes(4, "big") + body + bytes(4)
    raw = await asyncio.to_thread(tcp_message, node.host, node.port, bytes(anon))
    assert answer_of(raw) == (1, "88.100/private", [1, 100])


async def test_identity_token_refused_when_stale_forged_or_unknown(token_node: TokenNode) -> None:
    node = token_node.node
    data = sdk("sdk_resolve_token_request.bin")
    node.server.handler.wall_clock = lambda: T0 + 3600.0  # an hour later
    raw = await asyncio.to_thread(tcp_message, node.host, node.port, data)
    assert decode_message(raw).response_code == ResponseCode.AUTHENTICATION_FAILED
    node.server.handler.wall_clock = lambda: T0
    forged = bytearray(data)
    forged[-10] ^= 1  # inside the signature
    raw = await asyncio.to_thread(tcp_message, node.host, node.port, bytes(forged))
    assert decode_message(raw).response_code in (
        ResponseCode.AUTHENTICATION_FAILED,
        ResponseCode.INVALID_CREDENTIAL,
    )


# --------------------------------------------------------------------------- SM2 as the SDK does it


@dataclass(frozen=True)
class SdkSm2Auth:
    """Answers a challenge as id-pointer-sdk's ``PublicKeyAuthenticationInfo`` does: "ec" (a
    hutool/BouncyCastle EC key: SM3(nonce || digest) signed with the identity handle as user id,
    hash name "SM3") or "sha256" (a KeyConverter key: SHA256withSM2, hash name "SHA-256")."""

    identity: ValueReference
    key: SM2PrivateKey
    form: str
    auth_type: str = "HS_PUBKEY"

    def answer(self, nonce: bytes, digest: bytes, version: tuple[int, int]) -> bytes:
        if self.form == "ec":
            sig = self.key.sign(sm3(nonce + digest), self.identity.handle.encode(), SM3)
            return Writer().text("SM3").blob(sig).getvalue()
        sig = self.key.sign(nonce + digest, DEFAULT_UID, SHA256)
        return Writer().text("SHA-256").blob(sig).getvalue()


KEY_FORMS = ["sm2_pubkey_pem_value.bin", "sm2_pubkey_bare_pem_value.bin", "sm2_pubkey_der_value.bin"]


@pytest.mark.parametrize("value", KEY_FORMS)
@pytest.mark.parametrize("form", ["ec", "sha256"])
async def test_writes_authenticated_by_sdk_sm2_keys(tmp_path: Path, value: str, form: str) -> None:
    node = await start_node(tmp_path)
    try:
        key = SM2PrivateKey.from_pkcs8(sdk("user_sm2_key.der"))
        ident = ValueReference("0.NA/88.100", 320)
        admin = HandleValue(
            101, "HS_ADMIN", encode_admin(AdminRecord(ident.handle, ident.index, AdminPermission.ALL))
        )
        stored = HandleValue(ident.index, "HS_PUBKEY", sdk(value))  # the SDK's bytes, as stored
        node.service.import_now([HandleRecord("0.NA/88.100", (*prefix_values(), admin, stored))])
        auth = SdkSm2Auth(ident, key, form)
        async with HandleClient(node.host, node.port, timeout=TIMEOUT, auth=auth) as c:
            await c.create("88.100/sm2-sdk", [HandleValue(1, "URL", b"https://a.example/")])
            await c.modify_values("88.100/sm2-sdk", [HandleValue(1, "URL", b"https://b.example/")])
        record = node.service.store.get("88.100/SM2-SDK")
        assert record is not None and record.values[0].data == b"https://b.example/"
        other = SdkSm2Auth(ValueReference("0.NA/88.100", 320), SM2PrivateKey.generate(), form)
        async with HandleClient(node.host, node.port, timeout=TIMEOUT, auth=other) as c:
            with pytest.raises(ResponseError) as e:
                await c.delete("88.100/sm2-sdk")
        assert e.value.code == ResponseCode.AUTHENTICATION_FAILED
        assert node.service.store.get("88.100/SM2-SDK") is not None
    finally:
        await node.server.close()
        node.service.close()


async def test_sdk_connections_stay_open_without_ka(native: NativeNode) -> None:  # noqa: F811
    """id-pointer-sdk pools its TCP channels and never sets KA: after an answer to its resolution
    the connection stays open for the next one (hdllib's requests still get the close)."""
    data = sdk("sdk_resolve_request.bin")

    def pooled() -> list[int]:
        with socket.create_connection((native.host, native.port), timeout=TIMEOUT) as s:
            codes = []
            for name in (
                "sdk_resolve_request.bin",
                "sdk_resolve_missing_request.bin",
                "sdk_resolve_request.bin",
            ):
                s.sendall(sdk(name))  # one at a time, each after the previous answer
                codes.append(decode_message(recv_message(s)).response_code)
            return codes

    for _ in range(2):  # slow path, then the answers come from the cache
        assert await asyncio.to_thread(pooled) == [1, 100, 1]
    assert await asyncio.to_thread(
        tcp_exchange, native.host, native.port, vector("tcp_resolve_bench-0_request.bin")
    )
    assert data  # hdllib's request: answered, then closed (tcp_exchange reads until the close)
