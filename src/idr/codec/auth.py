"""Answers to a 402 challenge (RFC 3652 §3.5; Handle.Net ``PublicKeyAuthenticationInfo``,
``SecretKeyAuthenticationInfo``, ``Util.doMac``). Both kinds cover ``nonce || request digest``.

- HS_PUBKEY answer: UTF8-String hash algorithm name, then the length-prefixed signature. For SM2
  keys the name is "SM3" (or "SHA-256") and the signature DER (r, s), in the forms of
  ``idr.codec.sm2``; one of them takes the identity handle as SM2 user id.
- HS_SECKEY answer (≥2.1): one code byte, then the MAC; for PBKDF2 (0x22) the "MAC" is
  salt (len-prefixed), int4 iterations, int4 key length in bits, MAC (len-prefixed).
  Before 2.1 the answer is a bare MD5(key || data || key).
"""

from __future__ import annotations

import hashlib
import hmac
import os

from idr.codec.keys import PrivateKey, PublicKey, default_hash_alg, sign, verify
from idr.codec.wire import ProtocolError, Reader, Writer

MAC_MD5 = 0x01  # MD5(key || data || key)
MAC_SHA1 = 0x02
MAC_SHA256 = 0x03
MAC_HMAC_SHA1 = 0x12
MAC_HMAC_SHA256 = 0x13
MAC_PBKDF2_HMAC_SHA1 = 0x22  # Handle.Net's default from protocol 2.7
MAC_LEGACY_MD5 = 0x00  # pre-2.1: no code byte on the wire

PBKDF2_ITERATIONS = 10000  # Handle.Net's choice
PBKDF2_KEY_BITS = 160
MAX_PBKDF2_ITERATIONS = 100_000  # the client picks the count; bound the CPU it can make us spend
MAX_PBKDF2_KEY_BITS = 1024

_SANDWICH = {MAC_LEGACY_MD5: "md5", MAC_MD5: "md5", MAC_SHA1: "sha1", MAC_SHA256: "sha256"}
_HMAC = {MAC_HMAC_SHA1: "sha1", MAC_HMAC_SHA256: "sha256"}


def sign_challenge(
    private_key: PrivateKey, nonce: bytes, digest: bytes, hash_alg: str | None = None
) -> bytes:
    """The HS_PUBKEY answer a client sends in OC_RESPONSE_TO_CHALLENGE."""
    alg = hash_alg or default_hash_alg(private_key)
    return Writer().text(alg).blob(sign(private_key, nonce + digest, alg)).getvalue()


def verify_signature_answer(
    public_key: PublicKey, nonce: bytes, digest: bytes, answer: bytes, identity: str = ""
) -> bool:
    """False for a wrong signature; ProtocolError for an answer that does not parse.
    ``identity``: the handle the client claims (the SM2 user id of id-pointer-sdk's answers)."""
    r = Reader(answer)
    alg = r.text("signature hash", 64)
    signature = r.blob("signature", 65536)
    r.expect_end("signature answer")
    return verify(public_key, signature, nonce + digest, alg, identity=identity)


def _pbkdf2_password(key: bytes) -> bytes:
    # Handle.Net widens each key byte to a Java char and the JDK's PBKDF2 encodes chars as UTF-8.
    return key.decode("latin-1").encode("utf-8")


def _pbkdf2_mac(key: bytes, data: bytes, salt: bytes, iterations: int, bits: int) -> bytes:
    derived = hashlib.pbkdf2_hmac("sha1", _pbkdf2_password(key), salt, iterations, bits // 8)
    return hmac.digest(derived, data, "sha1")


def secret_key_mac(
    alg: int,
    key: bytes,
    nonce: bytes,
    digest: bytes,
    *,
    salt: bytes | None = None,
    iterations: int = PBKDF2_ITERATIONS,
    key_bits: int = PBKDF2_KEY_BITS,
) -> bytes:
    """The complete HS_SECKEY answer for MAC code ``alg`` (code byte included, except legacy 0)."""
    data = nonce + digest
    if alg in _SANDWICH:
        mac = hashlib.new(_SANDWICH[alg], key + data + key, usedforsecurity=False).digest()
        return mac if alg == MAC_LEGACY_MD5 else bytes([alg]) + mac
    if alg in _HMAC:
        return bytes([alg]) + hmac.digest(key, data, _HMAC[alg])
    if alg == MAC_PBKDF2_HMAC_SHA1:
        salt = os.urandom(16) if salt is None else salt
        mac = _pbkdf2_mac(key, data, salt, iterations, key_bits)
        return Writer().u8(alg).blob(salt).i32(iterations).i32(key_bits).blob(mac).getvalue()
    raise ValueError(f"unknown secret-key MAC code {alg:#x}")


def verify_secret_answer(
    key: bytes, nonce: bytes, digest: bytes, answer: bytes, *, legacy: bool = False
) -> bool:
    """Check an HS_SECKEY answer against the stored secret; ``legacy`` for pre-2.1 peers.

    False for a wrong MAC; ProtocolError for an answer that does not parse or asks for
    unreasonable PBKDF2 work."""
    if legacy:
        return hmac.compare_digest(secret_key_mac(MAC_LEGACY_MD5, key, nonce, digest), answer)
    r = Reader(answer)
    alg = r.u8()
    if alg in _SANDWICH or alg in _HMAC:
        expected = secret_key_mac(alg, key, nonce, digest)
        return alg != MAC_LEGACY_MD5 and hmac.compare_digest(expected, answer)
    if alg != MAC_PBKDF2_HMAC_SHA1:
        raise ProtocolError(f"unknown secret-key MAC code {alg:#x}")
    salt = r.blob("PBKDF2 salt", 1024)
    iterations, bits = r.i32(), r.i32()
    mac = r.blob("PBKDF2 MAC", 1024)
    r.expect_end("PBKDF2 answer")
    if not 0 < iterations <= MAX_PBKDF2_ITERATIONS or not 0 < bits <= MAX_PBKDF2_KEY_BITS or bits % 8:
        raise ProtocolError(f"unacceptable PBKDF2 parameters: {iterations} iterations, {bits} bits")
    return hmac.compare_digest(_pbkdf2_mac(key, nonce + digest, salt, iterations, bits), mac)
