"""Handle.Net sessions on a real node: setup in every key exchange mode with its answer signed by
the server's key, identity proven once per session, requests and certified answers MACed with the
session key, replays and forgeries refused, terminate, timeouts; certified answers outside a
session signed with the server's RSA, DSA or SM2 key."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import rsa

from idr.codec import session as keys
from idr.codec.bodies import (
    KEY_EXCHANGE_CIPHER_CLIENT,
    KEY_EXCHANGE_CIPHER_HDL,
    KEY_EXCHANGE_CIPHER_SERVER,
    KEY_EXCHANGE_DH,
    CreateHandleRequest,
    GenericRequest,
    ResolutionRequest,
    SessionExchangeKeyRequest,
    SessionSetupRequest,
    SessionSetupResponse,
)
from idr.codec.credential import CREDENTIAL_MAC, CREDENTIAL_SIGNED
from idr.codec.envelope import OpCode, OpFlag
from idr.codec.keys import decode_public_key, encode_public_key
from idr.codec.message import Message, decode_message, encode_message, request_digest
from idr.codec.signing import mac_message, verify_mac, verify_message
from idr.codec.sm2 import SM2PrivateKey
from idr.model.errors import ResponseCode
from idr.model.value import HandleValue, ValueReference
from idr.resolver.client import (
    Authenticator,
    ClientError,
    HandleClient,
    PublicKeyAuth,
    SecretKeyAuth,
    _TcpChannel,
    build_request,
)
from idr.server.native import NativeOptions
from idr.server.server_key import ServerKey
from tests.resolver.native_node import SECRET, TIMEOUT, NativeNode, identity, key, start_node

SERVER_KINDS = ["rsa", "dsa", "sm2"]


@functools.cache
def server_key(kind: str) -> ServerKey:
    return ServerKey(SM2PrivateKey.generate() if kind == "sm2" else key(kind))


async def _node(tmp_path: Path, kind: str = "rsa") -> AsyncIterator[NativeNode]:
    node = await start_node(tmp_path, NativeOptions(server_key=server_key(kind)))
    try:
        yield node
    finally:
        await node.server.close()
        node.service.close()


@pytest_asyncio.fixture
async def node(tmp_path: Path) -> AsyncIterator[NativeNode]:
    async for n in _node(tmp_path):
        yield n


def authenticator(kind: str) -> Authenticator:
    if kind == "secret":
        return SecretKeyAuth(identity(kind), SECRET)
    return PublicKeyAuth(identity(kind), key(kind))


def client(node: NativeNode, auth: Authenticator | None = None, certify: bool = False) -> HandleClient:
    return HandleClient(
        node.host, node.port, timeout=TIMEOUT, retries=1, auth=auth, session=True, certify=certify
    )


async def exchange(node: NativeNode, msg: Message | bytes) -> Message:
    channel = await _TcpChannel.open(node.host, node.port, TIMEOUT)
    try:
        await channel.send(msg if isinstance(msg, bytes) else encode_message(msg))
        return decode_message(await channel.read())
    finally:
        await channel.close()


@pytest.mark.parametrize("server", SERVER_KINDS)
@pytest.mark.parametrize("kind", ["secret", "rsa", "dsa"])
async def test_identity_proven_once_per_session(tmp_path: Path, server: str, kind: str) -> None:
    """Five writes, one challenge: after the first answer the session carries the identity."""
    async for node in _node(tmp_path, server):
        h = f"88.100/session-{kind}"
        async with client(node, authenticator(kind), certify=True) as c:
            assert await c.create(h, [HandleValue(1, "URL", b"https://a.example/")]) == h
            await c.add_values(h, [HandleValue(2, "EMAIL", b"a@example.org")])
            await c.modify_values(h, [HandleValue(1, "URL", b"https://b.example/")])
            await c.remove_values(h, [2])
            assert c.session is not None and c.session.authenticated
            session = node.server.handler.sessions.find(c.session.id)
            assert session is not None and session.identity == identity(kind)
            await c.delete(h)
        assert node.server.handler.challenges.issued == 1
        assert node.service.store.get(h.upper()) is None
        assert len(node.server.handler.sessions) == 0  # the client terminated it


async def test_setup_answer_is_signed_and_digested(node: NativeNode) -> None:
    private = keys.DHPrivateKey.generate()
    body = SessionSetupRequest(KEY_EXCHANGE_DH, 600, "0.NA/88.100", 300, private.public_key().encode())
    req = build_request(OpCode.SESSION_SETUP, body, flags=OpFlag.RD)  # even without CT: signed
    answer = await exchange(node, req)
    assert answer.response_code == ResponseCode.SUCCESS and answer.session_id != 0
    assert isinstance(answer.body, SessionSetupResponse) and answer.request_digest is not None
    assert answer.credential is not None and answer.credential.type == CREDENTIAL_SIGNED
    assert verify_message(answer, decode_public_key(server_key("rsa").public_bytes))
    alg, mine = keys.dh_finish(private, answer.body.data, legacy=False)
    session = node.server.handler.sessions.find(answer.session_id)
    assert session is not None and session.key == mine and alg == keys.ENCRYPT_ALG_AES
    assert session.claimed == ValueReference("0.NA/88.100", 300) and session.timeout == 600


async def _setup_raw(node: NativeNode, body: SessionSetupRequest) -> Message:
    return await exchange(node, build_request(OpCode.SESSION_SETUP, body, flags=OpFlag.CT | OpFlag.RD))


async def _mac_write(node: NativeNode, sid: int, session_key: bytes, counter: int, name: str) -> Message:
    req = build_request(OpCode.CREATE_HANDLE, CreateHandleRequest(name, (HandleValue(1, "URL", b"x"),)))
    return await exchange(node, mac_message(replace(req, session_id=sid), session_key, counter))


@pytest.mark.parametrize(
    "mode", [KEY_EXCHANGE_CIPHER_CLIENT, KEY_EXCHANGE_CIPHER_HDL, KEY_EXCHANGE_CIPHER_SERVER]
)
async def test_rsa_key_exchange_modes(node: NativeNode, mode: int) -> None:
    """Modes 1–3 agree on a key the server then checks MACs with (a wrong key: 502)."""
    client_key = key("rsa")
    assert isinstance(client_key, rsa.RSAPrivateKey)
    body = SessionSetupRequest(
        mode,
        600,
        "0.NA/88.100",
        301,
        encode_public_key(client_key.public_key()) if mode == KEY_EXCHANGE_CIPHER_CLIENT else b"",
        "0.NA/88.100" if mode == KEY_EXCHANGE_CIPHER_HDL else "",
        301,
    )
    answer = await _setup_raw(node, body)
    assert answer.response_code == ResponseCode.SUCCESS, answer.body
    assert isinstance(answer.body, SessionSetupResponse)
    sid = answer.session_id
    if mode == KEY_EXCHANGE_CIPHER_SERVER:
        assert answer.body.data == server_key("rsa").public_bytes
        pub = decode_public_key(answer.body.data)
        assert isinstance(pub, rsa.RSAPublicKey)
        session_key = keys.new_session_key()
        blob = keys.rsa_encrypt(pub, keys.pack_key(keys.ENCRYPT_ALG_AES, session_key))
        req = replace(
            build_request(OpCode.SESSION_EXCHANGEKEY, SessionExchangeKeyRequest(blob)), session_id=sid
        )
        assert (await exchange(node, req)).response_code == ResponseCode.SUCCESS
    else:
        _, session_key = keys.unpack_key(keys.rsa_decrypt(client_key, answer.body.data))
    bad = await _mac_write(node, sid, b"wrong" * 4, 1, "88.100/bad-key")
    assert bad.response_code == ResponseCode.INVALID_SESSION_KEY
    good = await _mac_write(node, sid, session_key, 2, "88.100/good-key")
    assert good.response_code == ResponseCode.AUTHENTICATION_NEEDED  # session not yet authenticated
    assert good.session_id == sid  # the challenge names the session


async def test_dh_needs_a_dh_key_and_cipher_modes_an_rsa_key(node: NativeNode) -> None:
    dsa_pub = encode_public_key(key("dsa").public_key())
    for body, code in (
        (SessionSetupRequest(KEY_EXCHANGE_DH, 60, "", -1, dsa_pub), ResponseCode.SESSION_FAILED),
        (
            SessionSetupRequest(KEY_EXCHANGE_CIPHER_CLIENT, 60, "", -1, dsa_pub),
            ResponseCode.NEED_RSAKEY_FOR_SESSIONEXCHANGE,
        ),
        (
            SessionSetupRequest(KEY_EXCHANGE_CIPHER_HDL, 60, "", -1, b"", "88.100/nowhere", 1),
            ResponseCode.SESSION_FAILED,
        ),
    ):
        answer = await _setup_raw(node, body)
        assert answer.response_code == code
        assert answer.credential is not None  # errors to a certified request are signed too
    assert len(node.server.handler.sessions) == 0


async def test_cipher_server_needs_an_rsa_server_key(tmp_path: Path) -> None:
    async for node in _node(tmp_path, "dsa"):
        answer = await _setup_raw(node, SessionSetupRequest(KEY_EXCHANGE_CIPHER_SERVER, 60))
        assert answer.response_code == ResponseCode.SESSION_FAILED


async def test_forged_and_replayed_session_requests_are_refused(node: NativeNode) -> None:
    async with client(node, authenticator("secret")) as c:
        await c.create("88.100/first", [HandleValue(1, "URL", b"x")])
        session = c.session
        assert session is not None and session.authenticated
        before = node.snapshot()
        req = build_request(
            OpCode.CREATE_HANDLE, CreateHandleRequest("88.100/forged", (HandleValue(1, "URL", b"x"),))
        )
        signed = session.sign(req)
        assert signed.credential is not None
        tampered = encode_message(
            replace(signed, body=CreateHandleRequest("88.100/other", signed.body.values))
        )  # type: ignore[attr-defined]
        assert (await exchange(node, tampered)).response_code == ResponseCode.INVALID_SESSION_KEY
        no_mac = replace(req, session_id=session.id)
        assert (
            await exchange(node, no_mac)
        ).response_code == ResponseCode.AUTHENTICATION_NEEDED  # no identity
        assert node.snapshot() == before
        wire = encode_message(signed)
        assert (await exchange(node, wire)).response_code == ResponseCode.SUCCESS
        again = await exchange(node, wire)
        assert again.response_code == ResponseCode.SESSION_MESSAGE_REJECTED


async def test_unknown_and_terminated_sessions_time_out(node: NativeNode) -> None:
    req = build_request(OpCode.CREATE_HANDLE, CreateHandleRequest("88.100/x", (HandleValue(1, "URL", b"x"),)))
    assert (
        await exchange(node, replace(req, session_id=12345))
    ).response_code == ResponseCode.SESSION_TIMEOUT
    async with client(node, authenticator("rsa")) as c:
        await c.create("88.100/t1", [HandleValue(1, "URL", b"x")])
        assert c.session is not None
        sid, k = c.session.id, c.session.key
        await c.end_session()
    answer = await exchange(node, mac_message(replace(req, session_id=sid), k, 99))
    assert answer.response_code == ResponseCode.SESSION_TIMEOUT


async def test_client_sets_up_again_when_the_server_forgot(node: NativeNode) -> None:
    async with client(node, authenticator("secret")) as c:
        await c.create("88.100/f1", [HandleValue(1, "URL", b"x")])
        assert c.session is not None
        first = c.session.id
        node.server.handler.sessions.close(node.server.handler.sessions.find(first))  # type: ignore[arg-type]
        await c.create("88.100/f2", [HandleValue(1, "URL", b"x")])
        assert c.session is not None and c.session.id != first


async def test_anonymous_session_is_never_promoted(node: NativeNode) -> None:
    """A session set up without an identity: each write is challenged (HandleServer does the same)."""
    c = HandleClient(node.host, node.port, timeout=TIMEOUT, auth=authenticator("secret"), session=True)
    async with c:
        body, private = SessionSetupRequest(KEY_EXCHANGE_DH, 600, "", -1, b""), keys.DHPrivateKey.generate()
        body = replace(body, public_key=private.public_key().encode())
        answer = await _setup_raw(node, body)
        assert isinstance(answer.body, SessionSetupResponse)
        from idr.resolver.session import ClientSession

        _, k = keys.dh_finish(private, answer.body.data, legacy=False)
        c.session = ClientSession(answer.session_id, k, answer.version, None)
        await c.create("88.100/a1", [HandleValue(1, "URL", b"x")])
        await c.create("88.100/a2", [HandleValue(1, "URL", b"x")])
    assert node.server.handler.challenges.issued == 2


async def test_session_setup_and_terminate_over_udp(node: NativeNode) -> None:
    """hdllib sends SESSION_SETUP to the first interface that takes queries: UDP."""
    c = HandleClient(node.host, node.port, timeout=TIMEOUT, retries=0)
    private = keys.DHPrivateKey.generate()
    body = SessionSetupRequest(KEY_EXCHANGE_DH, 60, "0.NA/88.100", 300, private.public_key().encode())
    answer = (await c.request(build_request(OpCode.SESSION_SETUP, body, flags=OpFlag.CT), transport="udp"))[0]
    assert answer.response_code == ResponseCode.SUCCESS and isinstance(answer.body, SessionSetupResponse)
    assert verify_message(answer, decode_public_key(server_key("rsa").public_bytes))
    _, k = keys.dh_finish(private, answer.body.data, legacy=False)
    bye = mac_message(
        replace(build_request(OpCode.SESSION_TERMINATE, GenericRequest("")), session_id=answer.session_id),
        k,
        1,
    )
    assert (await c.request(bye, transport="udp"))[0].response_code == ResponseCode.SUCCESS
    assert len(node.server.handler.sessions) == 0


async def test_no_server_key_no_sessions(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    try:
        answer = await _setup_raw(node, SessionSetupRequest(KEY_EXCHANGE_CIPHER_SERVER, 60))
        assert answer.response_code == ResponseCode.SESSION_FAILED
    finally:
        await node.server.close()
        node.service.close()


@pytest.mark.parametrize("server", SERVER_KINDS)
async def test_certified_answers_are_signed_with_the_server_key(tmp_path: Path, server: str) -> None:
    """CT outside a session: HS_SIGNED under the key the site info publishes (UDP and TCP,
    success and error); the hot cache never serves an unsigned copy."""
    async for node in _node(tmp_path, server):
        async with HandleClient(node.host, node.port, timeout=TIMEOUT, certify=True) as c:
            published = await c.published_key()
            assert published == server_key(server).public_bytes
            pub = decode_public_key(published)
            for transport in ("udp", "tcp", "udp"):
                for h in ("88.100/bench-0", "88.100/missing"):
                    req = build_request(OpCode.RESOLUTION, ResolutionRequest(h), flags=OpFlag.CT)
                    answer = (await c.request(req, transport=transport))[0]
                    assert answer.credential is not None and answer.credential.type == CREDENTIAL_SIGNED
                    assert verify_message(answer, pub), (transport, h)


async def test_certified_answers_in_a_session_are_maced(node: NativeNode) -> None:
    async with client(node, authenticator("dsa"), certify=True) as c:
        await c.create("88.100/m1", [HandleValue(1, "URL", b"x")])
        assert c.session is not None
        req = c.session.sign(
            build_request(OpCode.RESOLUTION, ResolutionRequest("88.100/m1"), flags=OpFlag.CT)
        )
        for transport in ("udp", "tcp"):
            answer = (await c.request(req, transport=transport))[0]
            assert answer.credential is not None and answer.credential.type == CREDENTIAL_MAC
            assert verify_mac(answer, c.session.key)
            req = c.session.sign(replace(req, credential=None, raw=b""))


async def test_client_refuses_an_answer_signed_by_another_key(node: NativeNode) -> None:
    wrong = server_key("dsa").public_bytes
    c = HandleClient(
        node.host, node.port, timeout=TIMEOUT, auth=authenticator("secret"), session=True, server_key=wrong
    )
    async with c:
        with pytest.raises(ClientError, match="signature"):
            await c.create("88.100/never", [HandleValue(1, "URL", b"x")])
    assert node.service.store.get("88.100/NEVER") is None


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_hdllibs_captured_setup_request_is_answered(node: NativeNode, transport: str) -> None:
    """The bytes hdllib 9.2 sent the reference server (tests/vectors/sessions), sent to idr."""
    raw = (
        Path(__file__).resolve().parents[1] / "vectors" / "sessions" / "hdllib_setup_request.bin"
    ).read_bytes()
    request = decode_message(raw)
    if transport == "udp":
        c = HandleClient(node.host, node.port, timeout=TIMEOUT, retries=1)
        answer = decode_message(await c.send_udp(raw))
    else:
        answer = await exchange(node, raw)
    assert answer.response_code == ResponseCode.SUCCESS and answer.request_id == request.request_id
    assert answer.request_digest == request_digest(request, answer.request_digest.alg)  # type: ignore[union-attr]
    assert verify_message(answer, decode_public_key(server_key("rsa").public_bytes))
    assert isinstance(answer.body, SessionSetupResponse) and isinstance(request.body, SessionSetupRequest)
    client = keys.DHPublicKey.decode(request.body.public_key)
    server = keys.DHPublicKey.decode(answer.body.data[4:])
    assert (server.p, server.g) == (client.p, client.g) and answer.body.data[:4] == b"\0\0\0\3"
    session = node.server.handler.sessions.find(answer.session_id)
    assert session is not None and session.claimed == ValueReference("0.NA/88.100", 300)
    assert session.key is not None and len(session.key) == 32 and session.version == (2, 11)


async def test_an_extra_udp_worker_leaves_session_setup_to_worker_0(tmp_path: Path) -> None:
    """A UDP-only worker of ``idr serve --workers`` would hold sessions worker 0 (TCP) does not
    know: it does not answer a setup, so hdllib's UDP attempt times out and it uses TCP."""
    node = await start_node(tmp_path, NativeOptions(server_key=server_key("rsa"), tcp=False))
    try:
        c = HandleClient(node.host, node.port, timeout=0.5, retries=0)
        dh = keys.DHPrivateKey.generate().public_key().encode()
        body = SessionSetupRequest(KEY_EXCHANGE_DH, 60, "", -1, dh)
        with pytest.raises(ClientError, match="no answer"):
            await c.request(build_request(OpCode.SESSION_SETUP, body, flags=OpFlag.CT), transport="udp")
        assert len(node.server.handler.sessions) == 0
        resolved = await c.resolve("88.100/bench-0")  # it still answers what it is for
        assert resolved.response_code == ResponseCode.SUCCESS
    finally:
        await node.server.close()
        node.service.close()
