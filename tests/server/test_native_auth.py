"""Administration over TCP with challenge–response: RSA, DSA, Ed25519 keys and a secret key;
wrong keys, replayed and tampered answers are refused and nothing is written."""

from __future__ import annotations

from dataclasses import replace

import pytest

from idr.codec.auth import MAC_HMAC_SHA1, MAC_PBKDF2_HMAC_SHA1, MAC_SHA1
from idr.codec.bodies import (
    ChallengeAnswerRequest,
    ChallengeResponse,
    CreateHandleRequest,
    GenericRequest,
    ResolutionRequest,
    ResolutionResponse,
)
from idr.codec.envelope import OpCode, OpFlag
from idr.codec.message import Message, decode_message, encode_message
from idr.model.errors import ResponseCode
from idr.model.value import PERM_SECRET, HandleValue, ValueReference
from idr.resolver.client import (
    Authenticator,
    ClientError,
    HandleClient,
    PublicKeyAuth,
    ResponseError,
    SecretKeyAuth,
    _TcpChannel,
    build_request,
)
from idr.resolver.keys import generate
from tests.resolver.native_node import SECRET, TIMEOUT, NativeNode, identity, key, native  # noqa: F401

KINDS = ["rsa", "dsa", "ed25519", "secret"]


def authenticator(kind: str) -> Authenticator:
    if kind == "secret":
        return SecretKeyAuth(identity(kind), SECRET)
    return PublicKeyAuth(identity(kind), key(kind))


def client(node: NativeNode, auth: Authenticator | None = None) -> HandleClient:
    return HandleClient(node.host, node.port, timeout=TIMEOUT, retries=1, auth=auth)


@pytest.mark.parametrize("kind", KINDS)
async def test_full_admin_cycle(native: NativeNode, kind: str) -> None:  # noqa: F811
    h = f"88.100/{kind}-item"
    async with client(native, authenticator(kind)) as c:
        assert await c.create(h, [HandleValue(1, "URL", b"https://a.example/")]) == h
        await c.add_values(h, [HandleValue(2, "EMAIL", b"a@example.org")])
        await c.modify_values(h, [HandleValue(1, "URL", b"https://b.example/")])
        values = {v.index: v.data for v in await c.resolve_values(h, transport="udp")}
        assert values[1] == b"https://b.example/" and values[2] == b"a@example.org"
        await c.remove_values(h, [2])
        assert 2 not in {v.index for v in await c.resolve_values(h, transport="tcp")}
        await c.delete(h)
        assert (await c.resolve(h)).response_code == ResponseCode.HANDLE_NOT_FOUND
    record = native.service.store.get("88.100/" + f"{kind}-item".upper())
    assert record is None


@pytest.mark.parametrize("mac", [MAC_SHA1, MAC_HMAC_SHA1, MAC_PBKDF2_HMAC_SHA1])
async def test_secret_key_mac_kinds(native: NativeNode, mac: int) -> None:  # noqa: F811
    async with client(native, SecretKeyAuth(identity("secret"), SECRET, mac)) as c:
        await c.create(f"88.100/mac-{mac}", [HandleValue(1, "URL", b"x")])


async def test_mint_returns_the_minted_handle(native: NativeNode) -> None:  # noqa: F811
    async with client(native, authenticator("ed25519")) as c:
        made = await c.create("88.100/", [HandleValue(1, "URL", b"x")], mint=True)
    assert made.startswith("88.100/") and len(made) > len("88.100/")
    assert native.service.store.get(made.upper()) is not None


@pytest.mark.parametrize("kind", KINDS)
async def test_wrong_key_is_refused_and_nothing_written(native: NativeNode, kind: str) -> None:  # noqa: F811
    before = native.snapshot()
    wrong: Authenticator
    if kind == "secret":
        wrong = SecretKeyAuth(identity(kind), b"not-the-secret")
    else:
        wrong = PublicKeyAuth(identity(kind), generate(kind) if kind != "dsa" else key("rsa"))
    async with client(native, wrong) as c:
        with pytest.raises(ResponseError) as e:
            await c.create("88.100/intruder", [HandleValue(1, "URL", b"x")])
    assert e.value.code == ResponseCode.AUTHENTICATION_FAILED
    assert native.snapshot() == before


async def test_unauthenticated_write_gets_a_challenge(native: NativeNode) -> None:  # noqa: F811
    async with client(native) as c:
        answer = (await c.request(build_request(OpCode.DELETE_HANDLE, GenericRequest("88.100/bench-0"))))[0]
    assert answer.response_code == ResponseCode.AUTHENTICATION_NEEDED
    assert isinstance(answer.body, ChallengeResponse) and len(answer.body.nonce) == 16
    assert answer.request_digest is not None and answer.session_id != 0
    assert native.service.store.get("88.100/BENCH-0") is not None


async def _challenge(channel: _TcpChannel, request: Message) -> Message:
    await channel.send(encode_message(request))
    return decode_message(await channel.read())


def _answer(auth: Authenticator, challenge: Message) -> Message:
    assert isinstance(challenge.body, ChallengeResponse) and challenge.request_digest is not None
    signed = auth.answer(challenge.body.nonce, challenge.request_digest.digest, challenge.version)
    body = ChallengeAnswerRequest(auth.auth_type, auth.identity.handle, auth.identity.index, signed)
    return build_request(OpCode.RESPONSE_TO_CHALLENGE, body, flags=OpFlag.KA, session_id=challenge.session_id)


async def test_replayed_answer_is_rejected(native: NativeNode) -> None:  # noqa: F811
    auth = authenticator("rsa")
    channel = await _TcpChannel.open(native.host, native.port, TIMEOUT)
    try:
        create = build_request(
            OpCode.CREATE_HANDLE,
            CreateHandleRequest("88.100/once", (HandleValue(1, "URL", b"x"),)),
            flags=OpFlag.KA,
        )
        challenge = await _challenge(channel, create)
        answer = _answer(auth, challenge)
        await channel.send(encode_message(answer))
        assert decode_message(await channel.read()).response_code == ResponseCode.SUCCESS
        before = native.snapshot()
        await channel.send(encode_message(replace(answer, request_id=answer.request_id + 1)))
        replay = decode_message(await channel.read())
    finally:
        await channel.close()
    assert replay.response_code == ResponseCode.SESSION_MESSAGE_REJECTED
    assert native.snapshot() == before


async def test_unknown_challenge_session_times_out(native: NativeNode) -> None:  # noqa: F811
    body = ChallengeAnswerRequest("HS_SECKEY", "0.NA/88.100", 300, b"\x13" + bytes(32))
    async with client(native) as c:
        answer = (await c.request(build_request(OpCode.RESPONSE_TO_CHALLENGE, body, session_id=12345)))[0]
    assert answer.response_code == ResponseCode.AUTHEN_TIMEOUT


@pytest.mark.parametrize("kind", ["rsa", "secret"])
async def test_tampered_answer_is_refused(native: NativeNode, kind: str) -> None:  # noqa: F811
    auth = authenticator(kind)
    before = native.snapshot()
    channel = await _TcpChannel.open(native.host, native.port, TIMEOUT)
    try:
        create = build_request(
            OpCode.CREATE_HANDLE,
            CreateHandleRequest("88.100/tampered", (HandleValue(1, "URL", b"x"),)),
            flags=OpFlag.KA,
        )
        challenge = await _challenge(channel, create)
        answer = _answer(auth, challenge)
        assert isinstance(answer.body, ChallengeAnswerRequest)
        signed = bytearray(answer.body.signed_response)
        signed[-1] ^= 0x01
        tampered = replace(answer, body=replace(answer.body, signed_response=bytes(signed)))
        await channel.send(encode_message(tampered))
        refused = decode_message(await channel.read())
    finally:
        await channel.close()
    assert refused.response_code == ResponseCode.AUTHENTICATION_FAILED
    assert native.snapshot() == before


async def test_answer_for_another_identity_index_fails(native: NativeNode) -> None:  # noqa: F811
    """A valid RSA signature claimed for the Ed25519 key's index does not authenticate."""
    forged = PublicKeyAuth(identity("ed25519"), key("rsa"))
    before = native.snapshot()
    async with client(native, forged) as c:
        with pytest.raises(ResponseError) as e:
            await c.delete("88.100/bench-1")
    assert e.value.code == ResponseCode.AUTHENTICATION_FAILED
    assert native.snapshot() == before


async def test_authenticated_but_not_admin_is_refused(native: NativeNode) -> None:  # noqa: F811
    """Authentication is not authorisation: an identity with a key but no HS_ADMIN right."""
    async with client(native, authenticator("secret")) as c:
        seckey = HandleValue(300, "HS_SECKEY", b"user-secret", permissions=PERM_SECRET)
        await c.create("88.100/user", [seckey])
    user = SecretKeyAuth(ValueReference("88.100/user", 300), b"user-secret")
    async with client(native, user) as c:
        with pytest.raises(ResponseError) as e:
            await c.delete("88.100/bench-1")
    assert e.value.code == ResponseCode.INSUFFICIENT_PERMISSIONS


async def test_non_public_read_over_udp_challenge(native: NativeNode) -> None:  # noqa: F811
    """PO clear on a handle with a secret value: a 402 over UDP, answered over UDP, returns it."""
    async with client(native, authenticator("secret")) as c:
        answer = await c.resolve("0.NA/88.100", transport="udp", public_only=False)
        public = await c.resolve("0.NA/88.100", transport="udp", public_only=True)
    assert answer.response_code == ResponseCode.SUCCESS and isinstance(answer.body, ResolutionResponse)
    assert 300 in {v.index for v in answer.body.values}
    assert isinstance(public.body, ResolutionResponse)
    assert 300 not in {v.index for v in public.body.values}


async def test_client_refuses_to_sign_a_challenge_for_another_request(native: NativeNode) -> None:  # noqa: F811
    """The client checks the challenge digest before signing (no confused-deputy signing)."""
    c = client(native, authenticator("secret"))
    req = build_request(OpCode.RESOLUTION, ResolutionRequest("0.NA/88.100"))
    other = build_request(OpCode.DELETE_HANDLE, GenericRequest("88.100/bench-0"))
    async with client(native) as plain:
        challenge = (await plain.request(other))[0]
    with pytest.raises(ClientError, match="refusing to sign"):
        c._challenge_answer(req, challenge)
