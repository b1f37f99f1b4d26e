"""Session key exchange primitives against the layouts and derivations of Handle.Net 9
(``Util.getBytesFromPublicKey`` for DH, ``GenericProvider.getKeyFromDH``/``generateSecretKey``)."""

from __future__ import annotations

import pytest

from idr.codec import session as keys
from idr.codec.wire import ProtocolError, Writer
from idr.model.errors import ResponseCode
from idr.resolver.keys import generate

# A 1024-bit group (RFC 2409 Oakley group 2), the size HandleResolver generates.
P1024 = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD"
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF",
    16,
)


def test_dh_public_key_layout_is_java_biginteger() -> None:
    """UTF8 "DH_PUB_KEY", int2 flags, then y, p, g with BigInteger.toByteArray's sign byte."""
    k = keys.DHPublicKey(0x80, P1024, 2)
    data = k.encode()
    expected = (
        Writer()
        .text("DH_PUB_KEY")
        .u16(0)
        .blob(b"\x00\x80")
        .blob(b"\x00" + P1024.to_bytes(128, "big"))
        .blob(b"\x02")
    ).getvalue()
    assert data == expected
    assert keys.DHPublicKey.decode(data) == k


def test_dh_agreement_and_derivations() -> None:
    a = keys.DHPrivateKey.generate(P1024, 2)
    b = keys.DHPrivateKey.generate(P1024, 2)
    s1, s2 = a.shared_secret(b.public_key()), b.shared_secret(a.public_key())
    assert s1 == s2 and len(s1) == 128  # padded to the length of p, as Java's KeyAgreement
    aes = keys.key_from_dh(s1, keys.ENCRYPT_ALG_AES)
    assert len(aes) == 32 and aes == s1.lstrip(b"\0")[:32]
    des = keys.key_from_dh(s1, keys.ENCRYPT_ALG_DES)
    assert len(des) == 8 and all(bin(x).count("1") % 2 == 1 for x in des)
    assert len(keys.key_from_dh(s1, keys.ENCRYPT_ALG_DESEDE)) == 24


def test_aes_key_skips_leading_zeros_but_keeps_32_bytes() -> None:
    """``stripLeadingZerosAndTruncate(secret, 32)``: zeros are skipped only while 32 bytes remain."""
    secret = bytes(3) + bytes(range(1, 126))
    assert keys.key_from_dh(secret, keys.ENCRYPT_ALG_AES) == bytes(range(1, 33))
    short = bytes(40)
    assert keys.key_from_dh(short, keys.ENCRYPT_ALG_AES) == bytes(32)


def test_server_answer_and_client_finish_agree() -> None:
    client = keys.DHPrivateKey.generate(P1024, 2)
    data, server_key = keys.dh_answer(client.public_key(), keys.ENCRYPT_ALG_AES, legacy=False)
    assert data[:4] == b"\0\0\0\3"  # the algorithm code precedes the server's DH key (≥ 2.4)
    alg, client_key = keys.dh_finish(client, data, legacy=False)
    assert (alg, client_key) == (keys.ENCRYPT_ALG_AES, server_key)
    data, server_key = keys.dh_answer(client.public_key(), keys.ENCRYPT_ALG_AES, legacy=True)
    assert data.startswith(b"\0\0\0\x0aDH_PUB_KEY")  # bare key before 2.4 …
    assert keys.dh_finish(client, data, legacy=True) == (keys.ENCRYPT_ALG_DES, server_key)  # … and DES


@pytest.mark.parametrize(
    "key",
    [
        keys.DHPublicKey(5, 2**511 + 1, 2),  # a group too small
        keys.DHPublicKey(1, P1024, 2),  # y = 1
        keys.DHPublicKey(P1024 - 1, P1024, 2),  # y = p - 1
        keys.DHPublicKey(5, P1024 + 1, 2),  # even p
        keys.DHPublicKey(5, 2**4097 + 1, 2),  # a group too large to exponentiate for free
    ],
)
def test_unusable_dh_keys_are_session_failed(key: keys.DHPublicKey) -> None:
    with pytest.raises(ProtocolError) as e:
        keys.DHPublicKey.decode(key.encode())
    assert e.value.code == ResponseCode.SESSION_FAILED


def test_other_key_types_and_garbage_are_refused() -> None:
    for data in (b"", b"\0\0\0\x0bRSA_PUB_KEY\0\0", keys.DHPublicKey(5, P1024, 2).encode() + b"x"):
        with pytest.raises(ProtocolError) as e:
            keys.DHPublicKey.decode(data)
        assert e.value.code == ResponseCode.SESSION_FAILED


def test_session_keys_pack_and_unpack() -> None:
    k = keys.new_session_key(keys.ENCRYPT_ALG_AES)
    assert len(k) == 16
    assert keys.unpack_key(keys.pack_key(keys.ENCRYPT_ALG_AES, k)) == (keys.ENCRYPT_ALG_AES, k)
    des = keys.new_session_key(keys.ENCRYPT_ALG_DES)
    assert all(bin(x).count("1") % 2 == 1 for x in des)
    for bad in (b"\0\0", keys.pack_key(9, k), keys.pack_key(keys.ENCRYPT_ALG_DES, k)):
        with pytest.raises(ProtocolError):
            keys.unpack_key(bad)


def test_rsa_wraps_a_session_key() -> None:
    private = generate("rsa")
    from cryptography.hazmat.primitives.asymmetric import rsa

    assert isinstance(private, rsa.RSAPrivateKey)
    packed = keys.pack_key(keys.ENCRYPT_ALG_AES, keys.new_session_key())
    assert keys.rsa_decrypt(private, keys.rsa_encrypt(private.public_key(), packed)) == packed
    with pytest.raises(ProtocolError) as e:  # OpenSSL's implicit rejection: garbage, not an error…
        keys.unpack_key(keys.rsa_decrypt(private, b"\1" * 256))  # … which does not unpack
    assert e.value.code == ResponseCode.SESSION_FAILED
