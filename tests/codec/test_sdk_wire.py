"""Teleinfo id-pointer-sdk on the wire (tests/vectors/sdk): its resolution requests with the extra
auth field, its identity token, its SM2 key values and challenge answers, its response codes;
and the decoder's rule behind them — read what Handle.Net reads, ignore what follows in a body,
stay strict on lengths."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from idr.codec import idtoken
from idr.codec.auth import verify_signature_answer
from idr.codec.bodies import ErrorResponse, GenericRequest, ResolutionRequest, ResolutionResponse
from idr.codec.envelope import OpCode, OpFlag
from idr.codec.keys import decode_public_key, encode_public_key
from idr.codec.message import Message, decode_message, encode_message
from idr.codec.sm2 import SM2PrivateKey, SM2PublicKey
from idr.codec.wire import ProtocolError
from idr.model.errors import ResponseCode
from idr.model.value import ValueReference

SDK = Path(__file__).resolve().parents[1] / "vectors" / "sdk"
NONCE, DIGEST = bytes(range(16)), bytes(range(32, 64))


def sdk(name: str) -> bytes:
    return (SDK / name).read_bytes()


def test_sdk_resolution_carries_an_empty_auth_field() -> None:
    msg = decode_message(sdk("sdk_resolve_request.bin"))
    assert isinstance(msg.body, ResolutionRequest)
    assert msg.body == ResolutionRequest("88.100/bench-0", (), (), b"")
    assert (msg.major, msg.minor, msg.effective_suggested) == (2, 10, (2, 11))
    assert msg.opflags == OpFlag.REC | OpFlag.CA | OpFlag.PO
    assert encode_message(msg) == sdk("sdk_resolve_request.bin")  # the field is written back


def test_sdk_filtered_and_prefix_resolutions() -> None:
    body = decode_message(sdk("sdk_resolve_filtered_request.bin")).body
    assert body == ResolutionRequest("88.100/bench-0", (2,), ("URL",), b"")
    body = decode_message(sdk("sdk_resolve_prefix_request.bin")).body
    assert body == ResolutionRequest("88.100", (), (), b"")


def test_sdk_resolution_with_identity_token() -> None:
    msg = decode_message(sdk("sdk_resolve_token_request.bin"))
    assert isinstance(msg.body, ResolutionRequest) and msg.has_flag(OpFlag.RECU_AUTH)
    assert msg.body.auth == sdk("sdk_token.txt")
    token = idtoken.decode_user_token(msg.body.auth)
    assert token.identity == ValueReference("0.NA/88.100", 310)
    assert (token.nonce, token.timestamp) == (123456, 1700000000.0)
    key = load_pem_private_key(sdk("user_rsa_key.pem"), None)
    assert idtoken.verify_user_token(token, key.public_key())  # type: ignore[arg-type]
    other = SM2PrivateKey.generate().public_key()
    assert not idtoken.verify_user_token(token, other)
    assert idtoken.is_fresh(token, 1700000100.0) and not idtoken.is_fresh(token, 1700001000.0)


def test_identity_token_refusals() -> None:
    raw = sdk("sdk_token.txt")
    head, payload, sig = raw.split(b".")
    key = load_pem_private_key(sdk("user_rsa_key.pem"), None).public_key()  # type: ignore[union-attr]
    tampered = idtoken.decode_user_token(head + b"." + payload + b"." + sig[:-4] + b"AAAA")
    assert not idtoken.verify_user_token(tampered, key)  # type: ignore[arg-type]
    none_alg = b"eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + payload + b"."  # {"alg":"none"}
    for bad in (b"", b"not a token", none_alg, b"\xff" * 10, b"a" * (idtoken.MAX_TOKEN + 1)):
        with pytest.raises(ProtocolError) as e:
            idtoken.decode_user_token(bad)
        assert e.value.code == ResponseCode.INVALID_CREDENTIAL


def test_body_bytes_after_the_fields_are_ignored_as_by_handle_net() -> None:
    """What Handle.Net's decoders accept (they read their fields and stop), we accept."""
    msg = Message(OpCode.GET_SITE_INFO, GenericRequest("/"), request_id=7)
    data = bytearray(encode_message(msg))
    data[40:44] = (int.from_bytes(data[40:44], "big") + 3).to_bytes(4, "big")
    data[16:20] = (int.from_bytes(data[16:20], "big") + 3).to_bytes(4, "big")
    data[49:49] = b"xyz"  # after the 5-byte body "/" (+4 length), before the credential length
    got = decode_message(bytes(data))
    assert got.body == GenericRequest("/") and got.request_id == 7
    # a resolution whose tail is not one length-prefixed field: ignored, no auth field
    plain = encode_message(Message(OpCode.RESOLUTION, ResolutionRequest("88.100/x")))
    odd = bytearray(plain[:-4] + b"\x00\x00\x00\x09ab" + b"\0\0\0\0")
    odd[40:44] = (int.from_bytes(odd[40:44], "big") + 6).to_bytes(4, "big")
    odd[16:20] = (len(odd) - 20).to_bytes(4, "big")
    assert decode_message(bytes(odd)).body == ResolutionRequest("88.100/x")
    # bytes after the credential length are ignored too
    tail = plain + b"\x01\x02"
    tail = tail[:16] + (len(tail) - 20).to_bytes(4, "big") + tail[20:]
    assert decode_message(tail).body == ResolutionRequest("88.100/x")


def test_lengths_stay_strict() -> None:
    plain = encode_message(Message(OpCode.RESOLUTION, ResolutionRequest("88.100/x")))
    longer_body = bytearray(plain)
    longer_body[40:44] = (len(plain) - 44 + 1).to_bytes(4, "big")  # body past the message
    handle_past_body = bytearray(plain)
    handle_past_body[44:48] = (200).to_bytes(4, "big")  # handle length past the body end
    envelope_lies = bytearray(plain)
    envelope_lies[16:20] = (len(plain)).to_bytes(4, "big")
    for bad in (longer_body, handle_past_body, envelope_lies):
        with pytest.raises(ProtocolError):
            decode_message(bytes(bad))
    credential_too_long = plain[:-4] + struct.pack(">I", 1000) + bytes(10)
    credential_too_long = (
        credential_too_long[:16]
        + (len(credential_too_long) - 20).to_bytes(4, "big")
        + credential_too_long[20:]
    )
    with pytest.raises(ProtocolError):
        decode_message(credential_too_long)


@pytest.mark.parametrize("code", [603, 604, 605])
def test_sdk_limit_codes_are_known_error_responses(code: int) -> None:
    msg = Message(OpCode.CREATE_HANDLE, ErrorResponse("limit reached"), response_code=code)
    got = decode_message(encode_message(msg))
    assert got.response_code == code and got.body == ErrorResponse("limit reached")
    assert ResponseCode(code).name in ("REQUEST_LIMIT_DAILY", "REGISTER_COUNT_LIMIT", "PREFIX_LIMIT")


def test_sm2_key_values_in_all_three_forms_are_the_same_key() -> None:
    key = SM2PrivateKey.from_pkcs8(sdk("user_sm2_key.der")).public_key()
    for name in ("sm2_pubkey_pem_value.bin", "sm2_pubkey_bare_pem_value.bin", "sm2_pubkey_der_value.bin"):
        assert decode_public_key(sdk(name)) == key, name
    assert sdk("sm2_pubkey_der_value.bin") == encode_public_key(key)  # idr writes DER
    pem = sdk("sm2_pubkey_bare_pem_value.bin")
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----\r\n") and pem.endswith(b"-----END PUBLIC KEY-----\r\n")
    assert SM2PublicKey.from_bytes(pem.replace(b"\r\n", b"\n")) == key


def test_bad_pem_key_values_are_invalid_values() -> None:
    pem = sdk("sm2_pubkey_bare_pem_value.bin")
    for bad in (
        pem.replace(b"MFkw", b"M!kw"),  # not base64
        pem[:60] + b"\r\n-----END PUBLIC KEY-----\r\n",  # truncated DER
        b"-----BEGIN PUBLIC KEY-----\r\n" + b"QUFB" * 5000 + b"\r\n-----END PUBLIC KEY-----\r\n",
    ):
        with pytest.raises(ProtocolError) as e:
            decode_public_key(bad)
        assert e.value.code == ResponseCode.INVALID_VALUE


def test_sdk_sm2_challenge_answers_verify() -> None:
    """The SDK's two ways of answering a challenge with an SM2 key: an EC key signs SM3(nonce ||
    digest) with the identity handle as user id ("SM3"); a KeyConverter key signs SHA256withSM2
    with the default user id ("SHA-256")."""
    key = decode_public_key(sdk("sm2_pubkey_pem_value.bin"))
    ec, sha = sdk("sm2_answer_sdk_ec.bin"), sdk("sm2_answer_sdk_sha256.bin")
    assert verify_signature_answer(key, NONCE, DIGEST, ec, "0.NA/88.100")
    assert not verify_signature_answer(key, NONCE, DIGEST, ec, "0.NA/88.101")  # user id is the handle
    assert not verify_signature_answer(key, NONCE, bytes(32), ec, "0.NA/88.100")
    assert verify_signature_answer(key, NONCE, DIGEST, sha, "0.NA/88.100")
    assert verify_signature_answer(key, NONCE, DIGEST, sha)
    assert not verify_signature_answer(key, NONCE, bytes(32), sha)


def test_client_chosen_costs_are_bounded_when_read() -> None:
    """A secret-key answer may not ask for more than 100,000 PBKDF2 iterations or 1024 key bits,
    and an RSA key may not carry a public exponent over 64 bits (each verification would cost a
    private-key operation)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    from idr.codec.auth import MAC_PBKDF2_HMAC_SHA1, verify_secret_answer
    from idr.codec.keys import RSA_PUB_KEY
    from idr.codec.wire import Writer

    for iterations, bits in ((100_001, 160), (10_000, 2048), (0, 160)):
        answer = Writer().u8(MAC_PBKDF2_HMAC_SHA1).blob(b"s").i32(iterations).i32(bits).blob(b"m").getvalue()
        with pytest.raises(ProtocolError):
            verify_secret_answer(b"key", NONCE, DIGEST, answer)
    n = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key().public_numbers().n
    huge_e = (1 << 100) + 1
    value = (
        Writer()
        .text(RSA_PUB_KEY)
        .u16(0)
        .blob(huge_e.to_bytes(13, "big"))
        .blob(b"\0" + n.to_bytes(128, "big"))
    )
    with pytest.raises(ProtocolError) as e:
        decode_public_key(value.getvalue())
    assert e.value.code == ResponseCode.INVALID_VALUE and "exponent" in e.value.message


CAPTURED = SDK / "captured"


def test_captured_sdk_requests_match_the_layout_the_vectors_were_laid_out_in() -> None:
    """The SDK's real bytes (captured on loopback) have the shape of the hand-laid vectors:
    envelope 2.10 suggesting 2.11, REC|CA|PO, site serial -1, and the auth field at the end."""
    laid = sdk("sdk_resolve_request.bin")
    for name in (
        "resolve_rec700_request.bin",
        "resolve_missing_request.bin",
        "resolve_bare_prefix_request.bin",
    ):
        real = (CAPTURED / name).read_bytes()
        assert real[:8] == laid[:8] and real[24:36] == laid[24:36], name
        msg = decode_message(real)
        assert isinstance(msg.body, ResolutionRequest) and msg.body.auth == b"", name
        assert real.endswith(bytes(8))  # empty auth field, then the empty credential
    assert decode_message(
        (CAPTURED / "resolve_index_filter_request.bin").read_bytes()
    ).body == ResolutionRequest("88.100/rec700", (1, 3), (), b"")
    assert decode_message(
        (CAPTURED / "resolve_type_filter_request.bin").read_bytes()
    ).body == ResolutionRequest("88.100/rec700", (), ("EMAIL",), b"")
    auth = decode_message((CAPTURED / "resolve_authstring_request.bin").read_bytes())
    assert auth.has_flag(OpFlag.RECU_AUTH) and isinstance(auth.body, ResolutionRequest)
    assert auth.body.auth == b"interop-auth-string" and not idtoken.is_jwt(auth.body.auth)
    assert idtoken.is_jwt(sdk("sdk_token.txt"))


def test_reference_answers_a_bare_prefix_under_the_name_asked() -> None:
    answer = decode_message((CAPTURED / "resolve_bare_prefix_reference_response.bin").read_bytes())
    assert answer.response_code == ResponseCode.SUCCESS and isinstance(answer.body, ResolutionResponse)
    assert answer.body.handle == "88.100" and [v.type for v in answer.body.values] == ["HS_SITE"]


def test_hdllib_public_key_values_are_read_as_hdllib_writes_them() -> None:
    """hdllib's Util.getBytesFromPublicKey (captured key values): its RSA encoding ends in four
    zero bytes (its buffer is one int too long), which its own reader skips; so do we."""
    hdllib = SDK.parent / "hdllib"
    rsa_value = (hdllib / "rsa_pubkey_value.bin").read_bytes()
    assert rsa_value.endswith(bytes(4))
    key = decode_public_key(rsa_value)
    assert encode_public_key(key) == rsa_value[:-4]
    decode_public_key((hdllib / "dsa_pubkey_value.bin").read_bytes())
    with pytest.raises(ProtocolError):
        decode_public_key(rsa_value[:-1] + b"\x01")
