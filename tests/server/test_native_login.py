"""The Teleinfo SDK's login on a real node, message for message as ``TransportOnTcpLogin.login``
sends it: its own SessionId (10001), GET_SITE_INFO under it, OC_LOGIN_ID_SYSTEM (2001) with the
402 challenge answered on the same connection, then writes under that SessionId with no further
challenge, the connection kept open without KA. The session is the connection's: another
connection with the same SessionId is not logged in, and closing ends it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_asyncio

from idr.codec.bodies import (
    ChallengeAnswerRequest,
    ChallengeResponse,
    CreateHandleRequest,
    EmptyBody,
    GenericRequest,
    LoginRequest,
    ResolutionRequest,
    SiteInfoResponse,
)
from idr.codec.envelope import OpCode, OpFlag
from idr.codec.message import Message, decode_message, encode_message
from idr.model.errors import ResponseCode
from idr.model.value import HandleValue
from idr.resolver.client import (
    Authenticator,
    ClientError,
    PublicKeyAuth,
    SecretKeyAuth,
    _TcpChannel,
    build_request,
)
from idr.server.native import NativeOptions
from idr.server.server_key import ServerKey
from tests.resolver.native_node import SECRET, TIMEOUT, NativeNode, identity, key, start_node

SID = 10001  # SessionIdFactoryDefault: an AtomicInteger from 10000, incremented first


@pytest_asyncio.fixture
async def node(tmp_path: Path) -> AsyncIterator[NativeNode]:
    n = await start_node(tmp_path, NativeOptions(server_key=ServerKey(key("rsa")), idle_timeout=5.0))
    try:
        yield n
    finally:
        await n.server.close()
        n.service.close()


class Conn:
    """One SDK channel: requests written one after another, no KA flag."""

    def __init__(self, channel: _TcpChannel) -> None:
        self.channel = channel

    async def ask(self, msg: Message) -> Message:
        await self.channel.send(encode_message(msg))
        return decode_message(await self.channel.read())

    async def close(self) -> None:
        await self.channel.close()


async def connect(node: NativeNode) -> Conn:
    return Conn(await _TcpChannel.open(node.host, node.port, TIMEOUT))


def in_session(opcode: int, body: object, sid: int = SID, flags: int = 0) -> Message:
    return replace(build_request(opcode, body, flags=flags), session_id=sid)  # type: ignore[arg-type]


async def login(conn: Conn, auth: Authenticator, sid: int = SID) -> Message:
    site = await conn.ask(in_session(OpCode.GET_SITE_INFO, GenericRequest("/"), sid))
    assert site.response_code == ResponseCode.SUCCESS and isinstance(site.body, SiteInfoResponse)
    who = auth.identity
    req = in_session(OpCode.LOGIN_ID_SYSTEM, LoginRequest(who.handle, who.index), sid, OpFlag.RD)
    challenge = await conn.ask(req)
    assert challenge.response_code == ResponseCode.AUTHENTICATION_NEEDED
    assert challenge.session_id == sid and isinstance(challenge.body, ChallengeResponse)
    assert challenge.request_digest is not None
    signed = auth.answer(challenge.body.nonce, challenge.request_digest.digest, challenge.version)
    answer = ChallengeAnswerRequest(auth.auth_type, who.handle, who.index, signed)
    return await conn.ask(in_session(OpCode.RESPONSE_TO_CHALLENGE, answer, challenge.session_id, OpFlag.RD))


def create(name: str, sid: int = SID) -> Message:
    return in_session(OpCode.CREATE_HANDLE, CreateHandleRequest(name, (HandleValue(1, "URL", b"x"),)), sid)


@pytest.mark.parametrize(
    "auth",
    [SecretKeyAuth(identity("secret"), SECRET), PublicKeyAuth(identity("rsa"), key("rsa"))],
    ids=["secret", "rsa"],
)
async def test_sdk_login_then_writes_without_challenge(node: NativeNode, auth: Authenticator) -> None:
    conn = await connect(node)
    try:
        done = await login(conn, auth)
        assert done.response_code == ResponseCode.SUCCESS
        assert done.opcode == OpCode.LOGIN_ID_SYSTEM and isinstance(done.body, EmptyBody)
        for i in range(3):
            answer = await conn.ask(create(f"88.100/sdk-{i}"))
            assert answer.response_code == ResponseCode.SUCCESS
        # the SDK's idle heartbeat resolves "0" outside the session: the connection stays up
        beat = await conn.ask(build_request(OpCode.RESOLUTION, ResolutionRequest("0")))
        assert beat.opcode == OpCode.RESOLUTION
        answer = await conn.ask(in_session(OpCode.DELETE_HANDLE, GenericRequest("88.100/sdk-0")))
        assert answer.response_code == ResponseCode.SUCCESS
    finally:
        await conn.close()
    assert node.server.handler.challenges.issued == 1
    assert (
        node.service.store.get("88.100/SDK-1") is not None and node.service.store.get("88.100/SDK-0") is None
    )


async def test_the_session_is_the_connections(node: NativeNode) -> None:
    a, b = await connect(node), await connect(node)
    try:
        assert (
            await login(a, SecretKeyAuth(identity("secret"), SECRET))
        ).response_code == ResponseCode.SUCCESS
        # same SessionId on another connection (another SDK process): not logged in
        assert (await b.ask(create("88.100/intruder"))).response_code == ResponseCode.SESSION_TIMEOUT
        assert (await a.ask(create("88.100/owner"))).response_code == ResponseCode.SUCCESS
    finally:
        await a.close()
        await b.close()
    assert node.service.store.get("88.100/INTRUDER") is None
    for _ in range(100):  # connection_lost runs on the server's loop
        if len(node.server.handler.sessions) == 0:
            break
        await asyncio.sleep(0.02)
    assert len(node.server.handler.sessions) == 0


async def test_a_failed_login_proves_nothing(node: NativeNode) -> None:
    conn = await connect(node)
    try:
        wrong = SecretKeyAuth(identity("secret"), b"not the secret")
        assert (await login(conn, wrong)).response_code == ResponseCode.AUTHENTICATION_FAILED
        answer = await conn.ask(create("88.100/nope"))
        assert answer.response_code == ResponseCode.AUTHENTICATION_NEEDED  # still anonymous
        # and the answer must come from the identity that logged in
        rsa = PublicKeyAuth(identity("rsa"), key("rsa"))
        site = await conn.ask(in_session(OpCode.GET_SITE_INFO, GenericRequest("/")))
        assert site.response_code == ResponseCode.SUCCESS
        req = in_session(OpCode.LOGIN_ID_SYSTEM, LoginRequest("0.NA/88.100", 300), SID, OpFlag.RD)
        challenge = await conn.ask(req)
        assert isinstance(challenge.body, ChallengeResponse) and challenge.request_digest is not None
        signed = rsa.answer(challenge.body.nonce, challenge.request_digest.digest, challenge.version)
        body = ChallengeAnswerRequest(rsa.auth_type, rsa.identity.handle, rsa.identity.index, signed)
        answer = await conn.ask(in_session(OpCode.RESPONSE_TO_CHALLENGE, body))
        assert answer.response_code == ResponseCode.INVALID_CREDENTIAL
    finally:
        await conn.close()
    assert node.service.store.get("88.100/NOPE") is None


async def test_without_a_session_the_connection_closes_after_the_answer(node: NativeNode) -> None:
    conn = await connect(node)
    try:
        answer = await conn.ask(build_request(OpCode.RESOLUTION, ResolutionRequest("88.100/bench-0")))
        assert answer.response_code == ResponseCode.SUCCESS
        with pytest.raises(ClientError):
            await conn.ask(build_request(OpCode.RESOLUTION, ResolutionRequest("88.100/bench-0")))
    finally:
        await conn.close()


async def test_sdk_site_info_under_its_session_id_keeps_the_connection(node: NativeNode) -> None:
    conn = await connect(node)
    try:
        for _ in range(2):
            site = await conn.ask(in_session(OpCode.GET_SITE_INFO, GenericRequest("/")))
            assert site.response_code == ResponseCode.SUCCESS and site.session_id == SID
    finally:
        await conn.close()
