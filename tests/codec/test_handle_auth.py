"""HS_PUBKEY data, challenge answers (public and secret key) and signed messages."""

from __future__ import annotations

import hashlib
import hmac
from functools import cache

import pytest
from cryptography.hazmat.primitives.asymmetric import dsa, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from idr.codec import auth
from idr.codec.bodies import CreateHandleRequest, ResolutionResponse
from idr.codec.envelope import OpCode
from idr.codec.keys import PrivateKey, decode_public_key, encode_public_key
from idr.codec.message import Message, decode_message, encode_message
from idr.codec.signing import covered_bytes, mac_message, sign_message, verify_mac, verify_message
from idr.codec.wire import ProtocolError, Reader
from idr.model.errors import ResponseCode
from idr.model.value import HandleValue

NONCE = bytes(range(16))
DIGEST = hashlib.sha256(b"request").digest()


@cache
def keys() -> dict[str, PrivateKey]:
    return {
        "rsa": rsa.generate_private_key(65537, 2048),
        "dsa": dsa.generate_private_key(2048),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
    }


KINDS = ["rsa", "dsa", "ed25519"]


@pytest.mark.parametrize("kind", KINDS)
def test_public_key_data_roundtrip(kind: str) -> None:
    pub = keys()[kind].public_key()
    data = encode_public_key(pub)
    back = decode_public_key(data)
    assert encode_public_key(back) == data
    probe = auth.sign_challenge(keys()[kind], NONCE, DIGEST)
    assert auth.verify_signature_answer(back, NONCE, DIGEST, probe)


def test_rsa_layout_matches_handle_net() -> None:
    priv = keys()["rsa"]
    assert isinstance(priv, rsa.RSAPrivateKey)
    pub = priv.public_key()
    r = Reader(encode_public_key(pub))
    assert r.text() == "RSA_PUB_KEY" and r.u16() == 0
    assert r.blob() == b"\x01\x00\x01"  # Java BigInteger.toByteArray(65537)
    modulus = r.blob()
    assert modulus[0] == 0 and len(modulus) == 257  # sign byte before a 2048-bit magnitude
    assert int.from_bytes(modulus, "big") == pub.public_numbers().n


def test_dsa_layout_order_is_q_p_g_y() -> None:
    priv = keys()["dsa"]
    assert isinstance(priv, dsa.DSAPrivateKey)
    pub = priv.public_key()
    n = pub.public_numbers()
    r = Reader(encode_public_key(pub))
    assert r.text() == "DSA_PUB_KEY" and r.u16() == 0
    got = [int.from_bytes(r.blob(), "big") for _ in range(4)]
    p = n.parameter_numbers
    assert got == [p.q, p.p, p.g, n.y]


BAD_KEYS = [
    b"",
    b"\0\0\0\x0bRSA_PUB_KEY\0\0",
    b"\0\0\0\x0fED25519_PUB_KEY\0\0\0\0\0\x03abc",
    b"\0\0\0\x0aDH_PUB_KEY\0\0",
    b"\0\0\0\x0bRSA_PUB_KEY\0\0\0\0\0\x01\x02\0\0\0\x01\x0f",  # even exponent, tiny modulus
]


@pytest.mark.parametrize("data", BAD_KEYS)
def test_bad_public_key_data(data: bytes) -> None:
    with pytest.raises(ProtocolError) as e:
        decode_public_key(data)
    assert e.value.code == ResponseCode.INVALID_VALUE


@pytest.mark.parametrize("kind", KINDS)
def test_sign_and_verify_challenge(kind: str) -> None:
    priv = keys()[kind]
    answer = auth.sign_challenge(priv, NONCE, DIGEST)
    assert auth.verify_signature_answer(priv.public_key(), NONCE, DIGEST, answer)
    # Tampered signature, other nonce, other digest, other key: all refused.
    tampered = answer[:-1] + bytes([answer[-1] ^ 1])
    assert not auth.verify_signature_answer(priv.public_key(), NONCE, DIGEST, tampered)
    assert not auth.verify_signature_answer(priv.public_key(), bytes(16), DIGEST, answer)
    assert not auth.verify_signature_answer(priv.public_key(), NONCE, DIGEST[::-1], answer)
    other = next(k for n, k in keys().items() if n != kind)
    assert not auth.verify_signature_answer(other.public_key(), NONCE, DIGEST, answer)


@pytest.mark.parametrize(("kind", "alg"), [(k, a) for k in ("rsa", "dsa") for a in ("SHA1", "SHA-256")])
def test_hash_names_handle_net_writes(kind: str, alg: str) -> None:
    priv = keys()[kind]
    answer = auth.sign_challenge(priv, NONCE, DIGEST, alg)
    assert Reader(answer).text() == alg
    assert auth.verify_signature_answer(priv.public_key(), NONCE, DIGEST, answer)


def test_default_hash_names() -> None:
    assert Reader(auth.sign_challenge(keys()["rsa"], NONCE, DIGEST)).text() == "SHA-256"
    assert Reader(auth.sign_challenge(keys()["ed25519"], NONCE, DIGEST)).text() == "Ed25519"


MAC_CODES = [
    auth.MAC_MD5,
    auth.MAC_SHA1,
    auth.MAC_SHA256,
    auth.MAC_HMAC_SHA1,
    auth.MAC_HMAC_SHA256,
    auth.MAC_PBKDF2_HMAC_SHA1,
]


@pytest.mark.parametrize("code", MAC_CODES)
def test_secret_key_answers(code: int) -> None:
    key = b"correct horse"
    answer = auth.secret_key_mac(code, key, NONCE, DIGEST)
    assert answer[0] == code
    assert auth.verify_secret_answer(key, NONCE, DIGEST, answer)
    assert not auth.verify_secret_answer(b"wrong horse", NONCE, DIGEST, answer)
    assert not auth.verify_secret_answer(key, NONCE, DIGEST, answer[:-1] + bytes([answer[-1] ^ 0x80]))
    assert not auth.verify_secret_answer(key, bytes(16), DIGEST, answer)


def test_secret_key_formulas() -> None:
    key, data = b"k3y", NONCE + DIGEST
    assert auth.secret_key_mac(1, key, NONCE, DIGEST) == b"\x01" + hashlib.md5(key + data + key).digest()
    assert auth.secret_key_mac(2, key, NONCE, DIGEST) == b"\x02" + hashlib.sha1(key + data + key).digest()
    assert auth.secret_key_mac(3, key, NONCE, DIGEST) == b"\x03" + hashlib.sha256(key + data + key).digest()
    assert auth.secret_key_mac(0x13, key, NONCE, DIGEST) == b"\x13" + hmac.digest(key, data, "sha256")
    salt = b"s" * 16
    ans = auth.secret_key_mac(0x22, key, NONCE, DIGEST, salt=salt)
    derived = hashlib.pbkdf2_hmac("sha1", key, salt, 10000, 20)
    r = Reader(ans)
    assert (r.u8(), r.blob(), r.i32(), r.i32()) == (0x22, salt, 10000, 160)
    assert r.blob() == hmac.digest(derived, data, "sha1")
    legacy = auth.secret_key_mac(0, key, NONCE, DIGEST)
    assert legacy == hashlib.md5(key + data + key).digest()
    assert auth.verify_secret_answer(key, NONCE, DIGEST, legacy, legacy=True)
    assert not auth.verify_secret_answer(key, NONCE, DIGEST, legacy[::-1], legacy=True)


def test_pbkdf2_non_ascii_key_is_utf8_widened_like_java() -> None:
    key, salt = "pässwörd".encode("latin-1"), b"0123456789abcdef"
    ans = auth.secret_key_mac(0x22, key, NONCE, DIGEST, salt=salt, iterations=10)
    derived = hashlib.pbkdf2_hmac("sha1", "pässwörd".encode(), salt, 10, 20)
    assert ans.endswith(hmac.digest(derived, NONCE + DIGEST, "sha1"))


def test_pbkdf2_refuses_unreasonable_work() -> None:
    ans = bytearray(auth.secret_key_mac(0x22, b"k", NONCE, DIGEST, salt=b"s" * 16, iterations=10))
    ans[1 + 4 + 16 : 1 + 4 + 16 + 4] = (10**9).to_bytes(4, "big")
    with pytest.raises(ProtocolError):
        auth.verify_secret_answer(b"k", NONCE, DIGEST, bytes(ans))
    with pytest.raises(ProtocolError):
        auth.verify_secret_answer(b"k", NONCE, DIGEST, b"\x7f" + bytes(20))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(KINDS), st.binary(max_size=32), st.binary(max_size=32))
def test_challenge_property(kind: str, nonce: bytes, digest: bytes) -> None:
    priv = keys()[kind]
    answer = auth.sign_challenge(priv, nonce, digest)
    assert auth.verify_signature_answer(priv.public_key(), nonce, digest, answer)
    assert not auth.verify_signature_answer(priv.public_key(), nonce + b"x", digest, answer)


def _response(minor: int) -> Message:
    v = HandleValue(1, "URL", b"https://example.org/")
    return Message(
        OpCode.RESOLUTION,
        ResolutionResponse("88.100/x", (v,)),
        ResponseCode.SUCCESS,
        request_id=0x1234,
        session_id=7,
        minor=minor,
        expiration=1700000000,
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("minor", [1, 5, 6, 7, 8, 11])
def test_signed_message_survives_the_wire(kind: str, minor: int) -> None:
    priv = keys()[kind]
    signed = sign_message(_response(minor), priv, session_counter=3)
    back = decode_message(encode_message(signed))
    assert back.credential == signed.credential and back.credential is not None
    assert back.credential.type == "HS_SIGNED" and back.credential.session_counter == 3
    assert verify_message(back, priv.public_key())
    # Flip one byte of the body as received: the signature no longer holds.
    raw = bytearray(back.raw)
    raw[50] ^= 1
    assert not verify_message(decode_message(bytes(raw)), priv.public_key())
    other = next(k for n, k in keys().items() if n != kind)
    assert not verify_message(back, other.public_key())


def test_covered_bytes_by_version() -> None:
    hb = _response(5).header_and_body()
    assert covered_bytes(_response(5), 9) == hb
    m7 = _response(7)
    assert (
        covered_bytes(m7, 9)
        == bytes([2, 7])
        + (7).to_bytes(4, "big")
        + (0x1234).to_bytes(4, "big")
        + (9).to_bytes(4, "big")
        + m7.header_and_body()
    )
    m8 = _response(8)
    assert covered_bytes(m8, 9)[:4] == bytes([2, 8, 2, 11])
    m6 = _response(6)  # Handle.Net's offset bug: sid[0:2], then the counter, then zeros
    assert covered_bytes(m6, 9)[:14] == bytes([2, 6, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0])


@pytest.mark.parametrize("minor", [1, 4, 7, 11])
def test_session_mac(minor: int) -> None:
    msg = Message(OpCode.CREATE_HANDLE, CreateHandleRequest("88.100/new", ()), minor=minor, session_id=5)
    maced = decode_message(encode_message(mac_message(msg, b"session-key", 42)))
    assert verify_mac(maced, b"session-key")
    assert not verify_mac(maced, b"other-key")
    with pytest.raises(ValueError):
        mac_message(Message(OpCode.CREATE_HANDLE, CreateHandleRequest("a/b"), minor=6), b"k", 1)
