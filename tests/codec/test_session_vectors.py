"""Captured session, certification and login bytes (tests/vectors/sessions) against idr's codec:
the reference server's signatures verify, hdllib's MACs are reproduced byte for byte, and the
clients' challenge answers check against the nonces and digests they answered."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from idr.codec import session as keys
from idr.codec.auth import verify_secret_answer
from idr.codec.bodies import (
    KEY_EXCHANGE_DH,
    ChallengeAnswerRequest,
    ChallengeResponse,
    EmptyBody,
    LoginRequest,
    SessionSetupRequest,
    SessionSetupResponse,
    SiteInfoResponse,
)
from idr.codec.credential import CREDENTIAL_MAC, CREDENTIAL_SIGNED
from idr.codec.envelope import OpCode, OpFlag
from idr.codec.keys import decode_public_key, encode_public_key
from idr.codec.message import Message, decode_message, encode_message, request_digest
from idr.codec.signing import mac_message, verify_mac, verify_message
from idr.model.errors import ResponseCode
from idr.model.value import HandleValue, ValueReference
from idr.resolver.keys import load_public_key
from idr.server import auth

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "sessions"
SECRET = b"interop-secret-300"


def msg(name: str) -> Message:
    return decode_message((VECTORS / f"{name}.bin").read_bytes())


def ref_key() -> bytes:
    site = msg("ref_site_info_response").body
    assert isinstance(site, SiteInfoResponse)
    return site.site.servers[0].public_key


def test_reference_site_publishes_an_rsa_key_idr_reads() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    assert isinstance(decode_public_key(ref_key()), rsa.RSAPublicKey)


def test_hdllib_session_setup_request_layout() -> None:
    req = msg("hdllib_setup_request")
    body = req.body
    assert req.opcode == OpCode.SESSION_SETUP and req.session_id == 0
    assert req.opflags & OpFlag.CT and req.opflags & OpFlag.RD
    assert isinstance(body, SessionSetupRequest) and body.mode == KEY_EXCHANGE_DH
    assert (body.identity_handle, body.identity_index) == ("0.NA/88.100", 300)
    client = keys.DHPublicKey.decode(body.public_key)
    assert client.p.bit_length() == 1024
    # idr writes the body hdllib writes, its two-byte length quirk included
    assert encode_message(replace(req, raw=b"")) == req.raw


def test_reference_setup_answer_is_signed_digested_and_a_dh_half() -> None:
    req, answer = msg("hdllib_setup_request"), msg("ref_setup_response")
    assert answer.session_id == 1 and answer.response_code == ResponseCode.SUCCESS
    assert answer.request_digest == request_digest(req, answer.request_digest.alg)  # type: ignore[union-attr]
    assert answer.credential is not None and answer.credential.type == CREDENTIAL_SIGNED
    assert answer.credential.digest_alg == "SHA-256"
    assert verify_message(answer, decode_public_key(ref_key()))
    assert not verify_message(replace(answer, session_id=2), decode_public_key(ref_key()))
    body = answer.body
    assert isinstance(body, SessionSetupResponse) and body.mode == KEY_EXCHANGE_DH
    assert body.data[:4] == keys.pack_key(keys.ENCRYPT_ALG_AES, b"")
    server = keys.DHPublicKey.decode(body.data[4:])
    assert isinstance(req.body, SessionSetupRequest)
    client = keys.DHPublicKey.decode(req.body.public_key)
    assert (server.p, server.g) == (client.p, client.g)
    assert encode_message(replace(answer, raw=b"")) == answer.raw  # idr re-encodes it exactly


def test_reference_certified_answer_verifies() -> None:
    req, answer = msg("hdllib_certified_request"), msg("ref_certified_response")
    assert req.opflags & OpFlag.CT and answer.request_id == req.request_id
    assert verify_message(answer, decode_public_key(ref_key()))


def test_hdllib_maced_request_layout() -> None:
    req = msg("hdllib_maced_delete_request")
    cred = req.credential
    assert req.session_id == 1 and cred is not None
    assert (cred.type, cred.digest_alg, len(cred.signature)) == (CREDENTIAL_MAC, "HMAC-SHA256", 32)
    enc = cred.encode()
    assert req.raw.endswith(len(enc).to_bytes(4, "big") + enc) and len(enc) + 4 == 81  # as captured
    assert cred.session_counter > 0


def test_hdllib_mac_reproduced_byte_for_byte() -> None:
    key = bytes.fromhex((VECTORS / "hdllib_maced_session_key.hex").read_text().strip())
    for name, counter in (("hdllib_maced_create_request", 1), ("hdllib_maced_create_response", 5)):
        m = msg(name)
        assert m.credential is not None and m.credential.session_counter == counter
        assert verify_mac(m, key)
        assert not verify_mac(m, bytes(32))
        assert encode_message(mac_message(replace(m, credential=None, raw=b""), key, counter)) == m.raw


def _pending(request: Message, challenge: Message) -> auth.Pending:
    body = challenge.body
    assert isinstance(body, ChallengeResponse) and challenge.request_digest is not None
    return auth.Pending(request, body.nonce, challenge.request_digest.digest, time.monotonic() + 60)


def _pubkey(name: str) -> bytes:
    path = VECTORS / name
    return path.read_bytes() if path.suffix == ".bin" else encode_public_key(load_public_key(path))


@pytest.mark.parametrize(
    ("challenge", "answer", "key"),
    [
        ("ref_session_challenge_rsa", "hdllib_answer_rsa", "identity_rsa_301_pub.pem"),
        ("ref_session_challenge_dsa", "hdllib_answer_dsa", "identity_dsa_302_pub.pem"),
        ("idr_login_challenge_rsa", "sdk_answer_rsa", "identity_rsa_301_pub.pem"),
        ("idr_login_challenge_sm2a_ec", "sdk_answer_sm2a_ec", "identity_sm2_a_pubvalue.bin"),
        (
            "idr_login_challenge_sm2a_keyconverter",
            "sdk_answer_sm2a_keyconverter",
            "identity_sm2_a_pubvalue.bin",
        ),
        ("idr_login_challenge_sm2b_ec", "sdk_answer_sm2b_ec", "identity_sm2_b_pubvalue.bin"),
        (
            "idr_login_challenge_sm2b_keyconverter",
            "sdk_answer_sm2b_keyconverter",
            "identity_sm2_b_pubvalue.bin",
        ),
    ],
)
def test_public_key_answers_verify(challenge: str, answer: str, key: str) -> None:
    ch, ans = msg(challenge), msg(answer)
    assert ch.response_code == ResponseCode.AUTHENTICATION_NEEDED and ans.session_id == ch.session_id
    body = ans.body
    assert isinstance(body, ChallengeAnswerRequest) and body.auth_type == auth.PUBKEY
    claimed = ValueReference(body.identity_handle, body.identity_index)
    values = [HandleValue(body.identity_index, "HS_PUBKEY", _pubkey(key))]
    pending = _pending(ch, ch)
    assert auth.verify_answer(claimed, auth.PUBKEY, values, pending, ans) == claimed
    wrong = replace(pending, nonce=bytes(16))
    with pytest.raises(Exception, match="authentication"):
        auth.verify_answer(claimed, auth.PUBKEY, values, wrong, ans)


@pytest.mark.parametrize(
    ("challenge", "answer"),
    [
        ("ref_session_challenge_seckey", "hdllib_answer_seckey"),
        ("idr_login_challenge_seckey", "sdk_answer_seckey"),
    ],
)
def test_secret_key_answers_verify(challenge: str, answer: str) -> None:
    ch, ans = msg(challenge), msg(answer)
    body = ans.body
    assert isinstance(body, ChallengeAnswerRequest) and body.auth_type == auth.SECKEY
    pending = _pending(ch, ch)
    assert verify_secret_answer(SECRET, pending.nonce, pending.digest, body.signed_response)
    assert not verify_secret_answer(b"wrong", pending.nonce, pending.digest, body.signed_response)


def test_sdk_login_exchange() -> None:
    site_req, site = msg("sdk_site_info_request"), msg("idr_site_info_response")
    assert site_req.session_id == 10001 and site.session_id == 10001
    assert site.response_code == ResponseCode.SUCCESS and isinstance(site.body, SiteInfoResponse)
    login = msg("sdk_login_request")
    assert login.opcode == OpCode.LOGIN_ID_SYSTEM and login.session_id == 10001
    assert login.body == LoginRequest("0.NA/88.100", 300)
    assert len(login.raw) == 20 + 24 + 4 + len("0.NA/88.100") + 4  # no credential length at all
    challenge = msg("idr_login_challenge_seckey")
    assert challenge.session_id == 10001 and challenge.opcode == OpCode.LOGIN_ID_SYSTEM
    assert challenge.request_digest == request_digest(login, challenge.request_digest.alg)  # type: ignore[union-attr]
    done = msg("idr_login_response")
    answer = msg("sdk_answer_seckey")
    assert done.request_id == answer.request_id and done.opcode == OpCode.LOGIN_ID_SYSTEM
    assert done.response_code == ResponseCode.SUCCESS and isinstance(done.body, EmptyBody)
    write = msg("sdk_session_create_request")
    assert write.session_id == 10001 and write.credential is None
