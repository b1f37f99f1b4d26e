"""SM2/SM3 (China's commercial cryptography) in the codec: the library against the standards'
vectors, interoperability with an OpenSSL-made key and signature, HS_PUBKEY and challenge-answer
wire forms, and PEM key files."""

from __future__ import annotations

import base64
from pathlib import Path

import gmalg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from idr.codec.auth import sign_challenge, verify_signature_answer
from idr.codec.keys import decode_public_key, default_hash_alg, encode_public_key, sign, verify
from idr.codec.sm2 import SM2_N, SM2Error, SM2PrivateKey
from idr.codec.wire import ProtocolError
from idr.model.errors import ResponseCode
from idr.resolver.keys import KeyFileError, generate, load_private_key, load_public_key, write_key_pair

# Made with OpenSSL 3.0.19: `openssl genpkey -algorithm SM2`, then
# `openssl pkeyutl -sign -rawin -digest sm3 -pkeyopt distid:1234567812345678` over MESSAGE.
OPENSSL_KEY = b"""-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqBHM9VAYItBG0wawIBAQQgVfYfRF2f66b23bM7
KKWDyt2deA5nLvAhtLlmqne6IeihRANCAAQbs4reMXp5yPKwXm6rBRrIk4DAG/kZ
VTs9V8VzRwLzGN+BNEuc7IGTizVsowpqZak5EUQmmXxjMHvFlydumBI4
-----END PRIVATE KEY-----
"""
OPENSSL_PUB = b"""-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoEcz1UBgi0DQgAEG7OK3jF6ecjysF5uqwUayJOAwBv5
GVU7PVfFc0cC8xjfgTRLnOyBk4s1bKMKamWpORFEJpl8YzB7xZcnbpgSOA==
-----END PUBLIC KEY-----
"""
OPENSSL_D = "55f61f445d9feba6f6ddb33b28a583cadd9d780e672ef021b4b966aa77ba21e8"
MESSAGE = b"nonce0123456789ABdigest-of-request-32-bytes-long!!"
OPENSSL_SIG = bytes.fromhex(
    "3046022100821ff742425679b1afe557271c3df8f708cddff4dbc1f0968c0cff261735b347"
    "022100d3aa328fa2759fdb6d2592429f469b27be8a230f9a6da77b8111af9f296ee849"
)


def der_of(pem: bytes) -> bytes:
    return base64.b64decode(b"".join(line for line in pem.splitlines() if not line.startswith(b"-----")))


def openssl_key() -> SM2PrivateKey:
    return SM2PrivateKey.from_pkcs8(der_of(OPENSSL_KEY))


def sm3(data: bytes) -> str:
    h = gmalg.SM3()
    h.update(data)
    return bytes(h.value()).hex()


def test_sm3_standard_vectors() -> None:
    """GB/T 32905-2016 Appendix A, examples 1 and 2."""
    assert sm3(b"abc") == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    assert sm3(b"abcd" * 16) == "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"


def test_openssl_signature_verifies_with_the_default_user_id() -> None:
    """An independent implementation's Z value (ENTL || "1234567812345678" || a || b || G || P)
    and DER signature are ours: OpenSSL's signature verifies, and only over its message."""
    key = openssl_key()
    assert key.secret.hex() == OPENSSL_D
    pub = key.public_key()
    assert pub.verify(OPENSSL_SIG, MESSAGE)
    assert not pub.verify(OPENSSL_SIG, MESSAGE + b"!")
    assert not pub.verify(OPENSSL_SIG, MESSAGE, uid=b"another signer")
    r, s = decode_dss_signature(OPENSSL_SIG)
    assert pub.verify(r.to_bytes(32, "big") + s.to_bytes(32, "big"), MESSAGE)  # hutool's plain form


def test_key_files_are_byte_for_byte_openssls() -> None:
    key = openssl_key()
    assert key.to_pkcs8() == der_of(OPENSSL_KEY)
    assert key.public_key().to_der() == der_of(OPENSSL_PUB)


def test_sign_verify_round_trip_and_refusals() -> None:
    key, other = SM2PrivateKey.generate(), SM2PrivateKey.generate()
    sig = sign(key, MESSAGE, "SM3")
    decode_dss_signature(sig)  # DER (r, s)
    assert verify(key.public_key(), sig, MESSAGE, "SM3")
    tampered = bytearray(sig)
    tampered[-1] ^= 1
    assert not verify(key.public_key(), bytes(tampered), MESSAGE, "SM3")
    assert not verify(other.public_key(), sig, MESSAGE, "SM3")
    assert not verify(key.public_key(), sig, MESSAGE, "SHA-256")
    assert not verify(key.public_key(), b"\x30\x00", MESSAGE, "SM3")
    assert not verify(key.public_key(), bytes(64), MESSAGE, "SM3")  # r = s = 0
    with pytest.raises(ValueError):
        sign(key, MESSAGE, "SHA-512")


def test_sm3_name_with_a_non_sm2_key_is_simply_false() -> None:
    rsa_key = generate("ed25519")
    assert not verify(rsa_key.public_key(), OPENSSL_SIG, MESSAGE, "SM3")


def test_challenge_answer_wire_form() -> None:
    """UTF8-String "SM3", then the length-prefixed DER signature over nonce || digest."""
    key = openssl_key()
    nonce, digest = bytes(range(16)), bytes(32)
    assert default_hash_alg(key) == default_hash_alg(key.public_key()) == "SM3"
    answer = sign_challenge(key, nonce, digest)
    assert answer[:7] == b"\0\0\0\x03SM3"
    sig = answer[11:]
    assert int.from_bytes(answer[7:11], "big") == len(sig)
    assert key.public_key().verify(sig, nonce + digest)
    assert verify_signature_answer(key.public_key(), nonce, digest, answer)
    assert not verify_signature_answer(key.public_key(), nonce, bytes([1]) + digest[1:], answer)
    assert not verify_signature_answer(SM2PrivateKey.generate().public_key(), nonce, digest, answer)


def test_hs_pubkey_layout() -> None:
    """``SM2_PUB_KEY`` + int2 flags + length-prefixed SubjectPublicKeyInfo (Teleinfo's SDK)."""
    data = encode_public_key(openssl_key().public_key())
    spki = der_of(OPENSSL_PUB)
    assert data == b"\0\0\0\x0bSM2_PUB_KEY" + b"\0\0" + len(spki).to_bytes(4, "big") + spki
    assert decode_public_key(data) == openssl_key().public_key()


@settings(max_examples=15, deadline=None)
@given(st.integers(1, SM2_N - 2))
def test_hs_pubkey_round_trip(d: int) -> None:
    pub = SM2PrivateKey(d.to_bytes(32, "big")).public_key()
    assert decode_public_key(encode_public_key(pub)) == pub


def _hs_pubkey(blob: bytes) -> bytes:
    return b"\0\0\0\x0bSM2_PUB_KEY\0\0" + len(blob).to_bytes(4, "big") + blob


def test_hs_pubkey_also_takes_a_bare_point() -> None:
    pub = openssl_key().public_key()
    assert decode_public_key(_hs_pubkey(pub.point)) == pub


@pytest.mark.parametrize(
    "blob",
    [
        bytes.fromhex("04") + bytes(64),  # not on the curve
        der_of(OPENSSL_PUB)[:-1] + bytes([der_of(OPENSSL_PUB)[-1] ^ 1]),  # y off by one bit
        der_of(OPENSSL_PUB) + b"\0",  # trailing byte inside the SPKI
        b"\x02" + bytes(32),  # compressed form: not supported
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo),  # a P-256 key is not an SM2 key
    ],
)
def test_hs_pubkey_refuses_what_is_not_an_sm2_key(blob: bytes) -> None:
    with pytest.raises(ProtocolError) as e:
        decode_public_key(_hs_pubkey(blob))
    assert e.value.code == ResponseCode.INVALID_VALUE


def _tlv(tag: int, body: bytes) -> bytes:
    assert len(body) < 0x100
    return bytes([tag, len(body)] if len(body) < 0x80 else [tag, 0x81, len(body)]) + body


def _bouncycastle_style_pkcs8(d: bytes, point: bytes) -> bytes:
    """PKCS#8 whose ECPrivateKey also names its curve in [0], as BouncyCastle writes it."""
    alg = bytes.fromhex("301306072a8648ce3d020106082a811ccf5501822d")
    curve = bytes.fromhex("06082a811ccf5501822d")
    public = _tlv(0xA1, _tlv(0x03, b"\0" + point))
    ec_key = bytes.fromhex("020101") + _tlv(0x04, d) + _tlv(0xA0, curve) + public
    body = bytes.fromhex("020100") + alg + _tlv(0x04, _tlv(0x30, ec_key))
    return _tlv(0x30, body)


def test_pkcs8_with_curve_parameters_and_mismatches() -> None:
    key = openssl_key()
    assert SM2PrivateKey.from_pkcs8(_bouncycastle_style_pkcs8(key.secret, key.public_key().point)) == key
    other = SM2PrivateKey.generate().public_key().point
    with pytest.raises(SM2Error, match="does not match"):
        SM2PrivateKey.from_pkcs8(_bouncycastle_style_pkcs8(key.secret, other))
    with pytest.raises(SM2Error):
        SM2PrivateKey.from_pkcs8(der_of(OPENSSL_KEY) + b"\0")
    with pytest.raises(SM2Error):
        SM2PrivateKey.from_pkcs8(der_of(OPENSSL_KEY)[:40])
    with pytest.raises(SM2Error):
        SM2PrivateKey(bytes(32))  # d = 0


def test_pem_files(tmp_path: Path) -> None:
    (tmp_path / "openssl.pem").write_bytes(OPENSSL_KEY)
    (tmp_path / "openssl.pub").write_bytes(OPENSSL_PUB)
    assert load_private_key(tmp_path / "openssl.pem") == openssl_key()
    assert load_public_key(tmp_path / "openssl.pub") == openssl_key().public_key()
    assert load_public_key(tmp_path / "openssl.pem") == openssl_key().public_key()

    key = generate("sm2")
    assert isinstance(key, SM2PrivateKey)
    pub_path = write_key_pair(key, tmp_path / "mine.pem")
    assert (tmp_path / "mine.pem").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "mine.pem").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert load_private_key(tmp_path / "mine.pem") == key
    assert load_public_key(pub_path) == key.public_key()

    with pytest.raises(KeyFileError, match="encrypted SM2"):
        write_key_pair(key, tmp_path / "locked.pem", passphrase=b"pw")
    (tmp_path / "broken.pem").write_bytes(OPENSSL_KEY.replace(b"MIGH", b"MIGI"))
    with pytest.raises(KeyFileError):
        load_private_key(tmp_path / "broken.pem")
