"""HS_PUBKEY value data ⇄ ``cryptography`` public keys, and the one sign/verify primitive.

Layouts as Handle.Net 9 ``Util.getBytesFromPublicKey``: UTF8-String key type, int2 flags (0),
then the key's integers as length-prefixed big-endian two's complement (Java
``BigInteger.toByteArray``), read back as unsigned magnitudes.

Handle.Net 9.2 knows no Ed25519 encoding (``Common.KEY_ENCODING_*`` lists RSA, DSA and DH
only), so ``ED25519_PUB_KEY`` + flags + the 32 raw key bytes is an idr extension; a
Handle.Net peer will not read such a key.

SM2 (China's commercial cryptography, GB/T 32918) follows Teleinfo's id-pointer-sdk
(``Common.KEY_ENCODING_SM2_PUB_KEY``): ``SM2_PUB_KEY`` + flags + a length-prefixed X.509
SubjectPublicKeyInfo, as DER (what idr writes) or as the PEM text of it (what the SDK's
``Util.getBytesFromPublicKey`` writes). The SDK's ``newIdisPublicKeyValue`` stores the bare PEM
text as the whole HS_PUBKEY value, for any key type; that is read too. SM2 signatures name their
hash "SM3" (``Common.HASH_ALG_SM3``), or "SHA-256" for the SDK's SHA256withSM2; the forms are in
``idr.codec.sm2``.

Costs a key's owner could choose are bounded when the key is read: RSA moduli up to 16384 bits
with public exponents up to 64 bits (OpenSSL's own bound for large moduli), DSA as OpenSSL
allows (p up to 10000 bits).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_der_public_key

from idr.codec.sm2 import (
    DEFAULT_UID,
    MAX_PEM,
    SHA256,
    SM2Error,
    SM2PrivateKey,
    SM2PublicKey,
    is_pem,
    pem_to_der,
    sm3,
)
from idr.codec.wire import ProtocolError, Reader, Writer
from idr.model.errors import ResponseCode

RSA_PUB_KEY = "RSA_PUB_KEY"
DSA_PUB_KEY = "DSA_PUB_KEY"
DH_PUB_KEY = "DH_PUB_KEY"
ED25519_PUB_KEY = "ED25519_PUB_KEY"  # idr extension, see module docstring
SM2_PUB_KEY = "SM2_PUB_KEY"  # Teleinfo/CAICT SDKs, see module docstring

ED25519_SIG_ALG = "Ed25519"  # the "hash algorithm" name written for Ed25519 signatures
SM2_SIG_ALG = "SM3"  # SM2 signs SM3(Z || data); the SDKs write the hash name "SM3"
MAX_RSA_BITS = 16384  # refuse absurd moduli before anyone spends CPU on them
MAX_RSA_EXPONENT_BITS = 64  # a huge public exponent would make every verification a private-key op

PublicKey = rsa.RSAPublicKey | dsa.DSAPublicKey | ed25519.Ed25519PublicKey | SM2PublicKey
PrivateKey = rsa.RSAPrivateKey | dsa.DSAPrivateKey | ed25519.Ed25519PrivateKey | SM2PrivateKey

# Names Handle.Net writes and accepts for the hash of a signature (Common.HASH_ALG_*).
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA1": hashes.SHA1,
    "SHA-1": hashes.SHA1,
    "SHA-256": hashes.SHA256,
    "SHA256": hashes.SHA256,
    "MD5": hashes.MD5,
}


def _java_int(n: int) -> bytes:
    """Java ``BigInteger.toByteArray`` of a non-negative int: minimal, with a sign bit."""
    return n.to_bytes(n.bit_length() // 8 + 1, "big")


def encode_public_key(key: PublicKey) -> bytes:
    w = Writer()
    if isinstance(key, rsa.RSAPublicKey):
        n = key.public_numbers()
        w.text(RSA_PUB_KEY).u16(0).blob(_java_int(n.e)).blob(_java_int(n.n))
    elif isinstance(key, dsa.DSAPublicKey):
        d = key.public_numbers()
        p = d.parameter_numbers
        w.text(DSA_PUB_KEY).u16(0)
        for i in (p.q, p.p, p.g, d.y):
            w.blob(_java_int(i))
    elif isinstance(key, ed25519.Ed25519PublicKey):
        w.text(ED25519_PUB_KEY).u16(0).blob(key.public_bytes(Encoding.Raw, PublicFormat.Raw))
    elif isinstance(key, SM2PublicKey):
        w.text(SM2_PUB_KEY).u16(0).blob(key.to_der())
    else:
        raise TypeError(f"unsupported public key type {type(key).__name__}")
    return w.getvalue()


def _uint(r: Reader, what: str) -> int:
    return int.from_bytes(r.blob(what, 4096), "big")


def _check_rsa(key: rsa.RSAPublicKey) -> rsa.RSAPublicKey:
    numbers = key.public_numbers()
    if numbers.n.bit_length() > MAX_RSA_BITS:
        raise ProtocolError(f"RSA modulus of {numbers.n.bit_length()} bits")
    if numbers.e.bit_length() > MAX_RSA_EXPONENT_BITS:
        raise ProtocolError(f"RSA public exponent of {numbers.e.bit_length()} bits")
    return key


def _from_pem(data: bytes) -> PublicKey:
    """A bare PEM "PUBLIC KEY" value (id-pointer-sdk ``newIdisPublicKeyValue``)."""
    der = pem_to_der(data)
    try:
        return SM2PublicKey.from_der(der)
    except SM2Error:
        pass
    key = load_der_public_key(der)
    if isinstance(key, rsa.RSAPublicKey):
        return _check_rsa(key)
    if isinstance(key, dsa.DSAPublicKey | ed25519.Ed25519PublicKey):
        return key
    raise ProtocolError(f"unsupported PEM public key type {type(key).__name__}")


def decode_public_key(data: bytes) -> PublicKey:
    """HS_PUBKEY data to a key; anything malformed or unsupported is INVALID_VALUE."""
    r = Reader(data)
    try:
        key: PublicKey
        if is_pem(data):
            return _from_pem(data)
        kind = r.text("key type", 64)
        r.u16()  # flags, reserved
        if kind == RSA_PUB_KEY:
            e, n = _uint(r, "RSA exponent"), _uint(r, "RSA modulus")
            if n.bit_length() > MAX_RSA_BITS:
                raise ProtocolError(f"RSA modulus of {n.bit_length()} bits")
            key = _check_rsa(rsa.RSAPublicNumbers(e, n).public_key())
        elif kind == DSA_PUB_KEY:
            q, p, g, y = (_uint(r, f"DSA {c}") for c in "qpgy")
            key = dsa.DSAPublicNumbers(y, dsa.DSAParameterNumbers(p, q, g)).public_key()
        elif kind == ED25519_PUB_KEY:
            key = ed25519.Ed25519PublicKey.from_public_bytes(r.blob("Ed25519 key", 32))
        elif kind == SM2_PUB_KEY:
            key = SM2PublicKey.from_bytes(r.blob("SM2 key", MAX_PEM))
        else:
            raise ProtocolError(f"unsupported public key type {kind!r}")
        # hdllib's Util.getBytesFromPublicKey sizes an RSA key's buffer one int too long, so its
        # keys end in 4 zero bytes, which its reader ignores. Zero padding is read past; anything
        # else after the key is still refused.
        if r.remaining and any(r.raw(r.remaining)):
            raise ProtocolError("bytes after the public key")
    except ProtocolError as e:
        raise ProtocolError(f"malformed HS_PUBKEY data: {e.message}", ResponseCode.INVALID_VALUE) from e
    except (ValueError, UnsupportedAlgorithm) as e:
        raise ProtocolError(f"unusable public key: {e}", ResponseCode.INVALID_VALUE) from e
    return key


def default_hash_alg(key: PublicKey | PrivateKey, version: tuple[int, int] = (2, 11)) -> str:
    """Handle.Net ``Util.getDefaultSigId``: SHA-256 from 2.7 (DSA only from 2.11), else SHA1."""
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return ED25519_SIG_ALG
    if isinstance(key, SM2PublicKey | SM2PrivateKey):
        return SM2_SIG_ALG
    if version < (2, 7) or (isinstance(key, dsa.DSAPublicKey | dsa.DSAPrivateKey) and version < (2, 11)):
        return "SHA1"
    return "SHA-256"


def _hash(alg: str) -> hashes.HashAlgorithm:
    cls = _HASHES.get(alg)
    if cls is None:
        raise ProtocolError(f"unknown signature hash {alg!r}", ResponseCode.INVALID_CREDENTIAL)
    return cls()


def sign(key: PrivateKey, data: bytes, hash_alg: str) -> bytes:
    """RSA PKCS#1 v1.5, DSA DER (r, s), Ed25519 (whose ``hash_alg`` must be "Ed25519"), or SM2
    DER (r, s) with the default user id (``hash_alg`` "SM3", or "SHA-256" for SHA256withSM2)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        if hash_alg != ED25519_SIG_ALG:
            raise ValueError(f"Ed25519 signs with no separate hash, not {hash_alg!r}")
        return key.sign(data)
    if isinstance(key, SM2PrivateKey):
        if hash_alg == SM2_SIG_ALG:
            return key.sign(data)
        if _HASHES.get(hash_alg) is hashes.SHA256:  # id-pointer-sdk's SHA256withSM2
            return key.sign(data, DEFAULT_UID, SHA256)
        raise ValueError(f"SM2 signs with SM3 or SHA-256, not {hash_alg!r}")
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), _hash(hash_alg))
    return key.sign(data, _hash(hash_alg))


def verify_sm2(key: SM2PublicKey, signature: bytes, data: bytes, hash_alg: str, identity: str = "") -> bool:
    """An SM2 signature in any of the forms of ``idr.codec.sm2``: "SM3" by id-pointer-sdk's EC
    keys (user id = ``identity``, message = SM3(data)) or idr's (default user id, message =
    data); "SHA-256" by the SDK's KeyConverter keys (SHA256withSM2, default user id)."""
    if hash_alg == SM2_SIG_ALG:
        if identity and key.verify(signature, sm3(data), identity.encode("utf-8")):
            return True
        return key.verify(signature, data)
    if _HASHES.get(hash_alg) is hashes.SHA256:
        return key.verify(signature, data, DEFAULT_UID, SHA256)
    return False


def verify(key: PublicKey, signature: bytes, data: bytes, hash_alg: str, *, identity: str = "") -> bool:
    """True only for a good signature; a wrong key type or hash name is simply False.
    ``identity``: the signer's handle, which SM2 signatures of id-pointer-sdk use as user id."""
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            if hash_alg != ED25519_SIG_ALG:
                return False
            key.verify(signature, data)
        elif isinstance(key, SM2PublicKey):
            return verify_sm2(key, signature, data, hash_alg, identity)
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), _hash(hash_alg))
        else:
            key.verify(signature, data, _hash(hash_alg))
    except (InvalidSignature, ProtocolError, ValueError):
        return False
    return True
