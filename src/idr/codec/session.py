"""Session keys: how the two ends of a Handle session agree on the key that MACs their messages.

Layouts and derivations as Handle.Net 9 (``HandleServer.doSessionSetup``/``doKeyExchange``,
``HandleResolver.setupSessionWithServer``, ``security.provider.GenericProvider``,
``Util.getBytesFromPublicKey``):

- Session keys travel as int4 algorithm code ‖ key bytes (``GenericProvider.generateSecretKey``);
  codes 1 DES (8 bytes), 2 DESede (24), 3 AES. Peers before 2.2 send the bare key (DES).
- Diffie–Hellman (mode 4, what every new ``HandleResolver`` uses): the client's ``DH_PUB_KEY``
  (UTF8-String, int2 flags, then y, p, g as length-prefixed Java ``BigInteger``s); the server
  answers in the same group with int4 algorithm ‖ its own ``DH_PUB_KEY`` (≥2.4; bare key and
  DES before). Both sides take the shared secret padded to the length of p (Java's
  ``KeyAgreement.generateSecret``) and, for AES, 32 bytes of it after leading zeros are
  skipped (``stripLeadingZerosAndTruncate``); for DES/DESede the first 8/24 bytes with DES
  parity set.
- RSA (modes 1, 2, 3): the packed key encrypted with RSA PKCS#1 v1.5.

The modular exponentiation is Python's ``pow``: ``cryptography`` deprecates finite-field DH and
its parameter loading runs a primality test (~45 ms for 1024 bits) that a client could make the
server repeat at will; a client that picks a weak group only weakens its own session key.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import padding, rsa

from idr.codec.wire import ProtocolError, Reader, Writer
from idr.model.errors import ResponseCode

ENCRYPT_ALG_DES = 1
ENCRYPT_ALG_DESEDE = 2
ENCRYPT_ALG_AES = 3
KEY_SIZES = {ENCRYPT_ALG_DES: 8, ENCRYPT_ALG_DESEDE: 24, ENCRYPT_ALG_AES: 16}
AES_DH_KEY_SIZE = 32

DH_PUB_KEY = "DH_PUB_KEY"
MIN_DH_BITS = 1024  # what HandleResolver generates (SessionSetupInfo.initDHKeys)
MAX_DH_BITS = 4096  # bounds the work one session setup can ask of the server
DH_EXPONENT_BITS = 512

# RFC 3526 group 14 (2048-bit MODP), the group idr's own client offers.
RFC3526_2048_P = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD"
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F"
    "83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA0510"
    "15728E5A8AACAA68FFFFFFFFFFFFFFFF",
    16,
)


def _java_int(n: int) -> bytes:
    """Java ``BigInteger.toByteArray`` of a non-negative int: minimal, with a sign bit."""
    return n.to_bytes(n.bit_length() // 8 + 1, "big")


def _failed(text: str) -> ProtocolError:
    return ProtocolError(text, ResponseCode.SESSION_FAILED)


@dataclass(frozen=True, slots=True)
class DHPublicKey:
    y: int
    p: int
    g: int

    def encode(self) -> bytes:
        w = Writer().text(DH_PUB_KEY).u16(0)
        return w.blob(_java_int(self.y)).blob(_java_int(self.p)).blob(_java_int(self.g)).getvalue()

    @classmethod
    def decode(cls, data: bytes) -> DHPublicKey:
        """A peer's key, checked: a group of 1024–4096 bits and 1 < y < p−1 (anything else is
        SESSION_FAILED, Handle.Net's code for an unusable exchange key)."""
        r = Reader(data)
        try:
            kind = r.text("key type", 64)
            if kind != DH_PUB_KEY:
                raise _failed(f"exchange key is {kind!r}, not {DH_PUB_KEY}")
            r.u16()
            y, p, g = (int.from_bytes(r.blob(f"DH {c}", MAX_DH_BITS // 8 + 1), "big") for c in "ypg")
            r.expect_end("DH key")
        except ProtocolError as e:
            raise _failed(f"malformed DH key: {e.message}") from e
        if not MIN_DH_BITS <= p.bit_length() <= MAX_DH_BITS or p % 2 == 0:
            raise _failed(
                f"DH group of {p.bit_length()} bits (need an odd {MIN_DH_BITS}–{MAX_DH_BITS}-bit p)"
            )
        if not 1 < g < p - 1 or not 1 < y < p - 1:
            raise _failed("DH key out of range")
        return cls(y, p, g)


@dataclass(frozen=True, slots=True)
class DHPrivateKey:
    x: int
    p: int
    g: int

    @classmethod
    def generate(cls, p: int = RFC3526_2048_P, g: int = 2) -> DHPrivateKey:
        return cls(secrets.randbits(DH_EXPONENT_BITS) | (1 << (DH_EXPONENT_BITS - 1)), p, g)

    def public_key(self) -> DHPublicKey:
        return DHPublicKey(pow(self.g, self.x, self.p), self.p, self.g)

    def shared_secret(self, peer: DHPublicKey) -> bytes:
        """g^xy mod p, padded to the length of p as Java's ``KeyAgreement`` returns it."""
        if (peer.p, peer.g) != (self.p, self.g):
            raise _failed("DH keys from different groups")
        z = pow(peer.y, self.x, self.p)
        if z in (0, 1, self.p - 1):
            raise _failed("degenerate DH shared secret")
        return z.to_bytes((self.p.bit_length() + 7) // 8, "big")


def _des_parity(key: bytes) -> bytes:
    """Each byte's low bit set so the byte has odd parity (``GenericProvider``)."""
    out = bytearray()
    for b in key:
        b &= 0xFE
        out.append(b | ((bin(b).count("1") & 1) ^ 1))
    return bytes(out)


def key_from_dh(secret: bytes, alg: int) -> bytes:
    """The session key both sides derive from the DH shared secret (``getKeyFromDH``)."""
    if alg == ENCRYPT_ALG_AES:
        i = 0
        while i + AES_DH_KEY_SIZE < len(secret) and secret[i] == 0:
            i += 1
        return secret[i : i + AES_DH_KEY_SIZE]
    if alg in (ENCRYPT_ALG_DES, ENCRYPT_ALG_DESEDE):
        return _des_parity(secret[: KEY_SIZES[alg]])
    raise _failed(f"unknown session key algorithm {alg}")


def new_session_key(alg: int = ENCRYPT_ALG_AES) -> bytes:
    size = KEY_SIZES.get(alg)
    if size is None:
        raise _failed(f"unknown session key algorithm {alg}")
    key = secrets.token_bytes(size)
    return key if alg == ENCRYPT_ALG_AES else _des_parity(key)


def pack_key(alg: int, key: bytes) -> bytes:
    return alg.to_bytes(4, "big") + key


def unpack_key(data: bytes) -> tuple[int, bytes]:
    """int4 algorithm ‖ key; the key must have the algorithm's size (AES: 16 to 32 bytes)."""
    if len(data) < 4:
        raise _failed("session key shorter than its algorithm code")
    alg, key = int.from_bytes(data[:4], "big"), data[4:]
    size = KEY_SIZES.get(alg)
    ok = size is not None and (len(key) == size or (alg == ENCRYPT_ALG_AES and 16 <= len(key) <= 32))
    if not ok:
        raise _failed(f"session key of {len(key)} bytes for algorithm {alg}")
    return alg, key


def dh_answer(client_key: DHPublicKey, alg: int, *, legacy: bool) -> tuple[bytes, bytes]:
    """The server's side of mode 4: (SessionSetupResponse data, session key)."""
    mine = DHPrivateKey.generate(client_key.p, client_key.g)
    secret = mine.shared_secret(client_key)
    if legacy:  # before 2.4: bare key, DES
        return mine.public_key().encode(), key_from_dh(secret, ENCRYPT_ALG_DES)
    return pack_key(alg, mine.public_key().encode()), key_from_dh(secret, alg)


def dh_finish(mine: DHPrivateKey, data: bytes, *, legacy: bool) -> tuple[int, bytes]:
    """The client's side of mode 4, from the server's answer: (algorithm, session key)."""
    if legacy:
        return ENCRYPT_ALG_DES, key_from_dh(mine.shared_secret(DHPublicKey.decode(data)), ENCRYPT_ALG_DES)
    if len(data) < 4:
        raise _failed("DH answer shorter than its algorithm code")
    alg = int.from_bytes(data[:4], "big")
    return alg, key_from_dh(mine.shared_secret(DHPublicKey.decode(data[4:])), alg)


def rsa_encrypt(key: rsa.RSAPublicKey, data: bytes) -> bytes:
    """RSA PKCS#1 v1.5, as Handle.Net's ``Util.encrypt`` wraps a session key."""
    return key.encrypt(data, padding.PKCS1v15())


def rsa_decrypt(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    try:
        return key.decrypt(data, padding.PKCS1v15())
    except ValueError as e:
        raise _failed("cannot decrypt the session key") from e
