"""SM2 keys and SM2 signatures (GB/T 32918, GB/T 32905), in the forms China's Handle SDKs use.

``cryptography`` has no SM2, so the arithmetic is ``gmalg`` (pure Python, no dependencies; see
docs/security.md for why it was chosen). This module wraps it in two small immutable key classes
and owns the byte formats, with no I/O:

- Public key: X.509 SubjectPublicKeyInfo, algorithm id-ecPublicKey (1.2.840.10045.2.1) with
  named curve sm2p256v1 (1.2.156.10197.1.301) and an uncompressed point, as DER or as the PEM
  text of that DER. Teleinfo's id-pointer-sdk stores PEM: ``Util.getBytesFromPublicKey`` puts
  ``KeyConverter.toX509Pem(key)`` (the "-----BEGIN PUBLIC KEY-----" text, CRLF line ends) inside
  the SM2_PUB_KEY encoding, and ``ValueHelper.newIdisPublicKeyValue`` makes that PEM text the
  whole HS_PUBKEY value; DER is what OpenSSL and BouncyCastle's ``getEncoded()`` write and what
  idr writes. DER is canonical, so a valid SPKI for such a key is always the same 26-byte header
  followed by the 65-byte point; we compare rather than parse.
- Private key: PKCS#8 (RFC 5208) wrapping an RFC 5915 ECPrivateKey with the same algorithm, as
  ``openssl genpkey -algorithm SM2`` writes. Encrypted PKCS#8 is not supported.
- Signature: DER SEQUENCE { r INTEGER, s INTEGER } (verification also takes the 64-byte r || s
  "plain" form some SDK helpers emit: the challenge nonce makes malleability harmless) over
  H(Z || message), Z = H(ENTL || user id || curve || public key). The SDK signs challenges in
  two ways (``PublicKeyAuthenticationInfo.authenticate``), both verified here:
  * a BouncyCastle/hutool EC key ("EC"): hutool ``SM2.signHex(SM3(nonce || digest), hex(user id))``
    — H = SM3, user id = the identity handle's UTF-8 bytes, message = the 32-byte SM3 of
    nonce || digest; hash name "SM3";
  * a key loaded by its ``KeyConverter`` ("SM2"): the JCA ``SHA256withSM2`` signature
    (BouncyCastle ``SM2Signer(new SHA256Digest())``) — H = SHA-256, the default user id,
    message = nonce || digest; hash name "SHA-256".
  idr's own form (BouncyCastle's and OpenSSL's SM3withSM2 defaults) is H = SM3 with the GB/T
  32918 default user id "1234567812345678" over nonce || digest, hash name "SM3".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from dataclasses import dataclass, field

import gmalg
import gmalg.sm2
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

DEFAULT_UID = b"1234567812345678"  # GB/T 32918.2 / GM/T 0009 default signer identity
SM3 = "sm3"
SHA256 = "sha256"
PEM_BEGIN = b"-----BEGIN PUBLIC KEY-----"
PEM_END = b"-----END PUBLIC KEY-----"
MAX_PEM = 16384  # bytes of PEM text we are willing to read (an RSA-16384 key is ~2.9 KB)
SM2_N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123  # group order
# The curve y² = x³ + ax + b over F_p (GB/T 32918.5); its cofactor is 1.
SM2_P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
SM2_A = SM2_P - 3
SM2_B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
POINT_SIZE = 65  # 04 || x || y

# SEQUENCE { SEQUENCE { OID id-ecPublicKey, OID sm2p256v1 }, BIT STRING (0 unused bits) ...
_SPKI_HEADER = bytes.fromhex("3059301306072a8648ce3d020106082a811ccf5501822d034200")
_ALG_ID = bytes.fromhex("301306072a8648ce3d020106082a811ccf5501822d")
_SM2_CURVE_OID = bytes.fromhex("06082a811ccf5501822d")


class SM2Error(ValueError):
    """Bytes that are not an SM2 key of the supported form."""


def pem_to_der(text: bytes) -> bytes:
    """The DER inside "-----BEGIN PUBLIC KEY-----" PEM text (any line ends; strict base64)."""
    if len(text) > MAX_PEM:
        raise SM2Error(f"PEM text of {len(text)} bytes")
    body = text.strip()
    if not body.startswith(PEM_BEGIN) or not body.endswith(PEM_END):
        raise SM2Error("not a PEM public key (-----BEGIN PUBLIC KEY----- … -----END PUBLIC KEY-----)")
    inner = b"".join(body[len(PEM_BEGIN) : -len(PEM_END)].split())
    try:
        return base64.b64decode(inner, validate=True)
    except (binascii.Error, ValueError) as e:
        raise SM2Error(f"PEM public key is not valid base64: {e}") from None


def is_pem(data: bytes) -> bool:
    return data.lstrip()[: len(PEM_BEGIN)] == PEM_BEGIN


class _Hashlib:
    """gmalg's Hash interface over hashlib (OpenSSL's SM3 and SHA-256, much faster than gmalg's
    pure-Python SM3): lets the SM2 arithmetic run with SHA-256 as BouncyCastle's SHA256withSM2."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._h = hashlib.new(name)

    def reset(self) -> None:
        self._h = hashlib.new(self.name)

    def update(self, data: bytes) -> None:
        self._h.update(data)

    def value(self) -> bytes:
        return self._h.digest()

    def hash_length(self) -> int:
        return self._h.digest_size


def _core(hash_name: str) -> gmalg.sm2.SM2Core:
    if hash_name == SM3 and SM3 not in hashlib.algorithms_available:
        return gmalg.sm2.SM2Core(gmalg.sm2._ecdlp, gmalg.SM3())  # an OpenSSL built without SM3
    return gmalg.sm2.SM2Core(gmalg.sm2._ecdlp, _Hashlib(hash_name))


def sm3(data: bytes) -> bytes:
    h = _core(SM3)._hash_obj
    h.reset()
    h.update(data)
    return bytes(h.value())


def _check_point(point: bytes) -> bytes:
    """A valid public key: coordinates in F_p on the curve. The cofactor is 1, so every such
    point has order n and the scalar multiplication gmalg's ``verify_pk`` adds (~12 ms of pure
    Python, which a record of 2,048 keys would turn into 25 s of the writer's time) proves
    nothing more."""
    if len(point) != POINT_SIZE or point[0] != 4:
        raise SM2Error("SM2 public key must be an uncompressed point (04 || x || y)")
    x, y = int.from_bytes(point[1:33], "big"), int.from_bytes(point[33:], "big")
    if not (x < SM2_P and y < SM2_P) or (y * y - (x * x * x + SM2_A * x + SM2_B)) % SM2_P:
        raise SM2Error("SM2 public key is not a point of the curve")
    return point


@dataclass(frozen=True, slots=True)
class SM2PublicKey:
    """An SM2 public key: the validated uncompressed curve point."""

    point: bytes

    def __post_init__(self) -> None:
        _check_point(self.point)

    @classmethod
    def from_der(cls, der: bytes) -> SM2PublicKey:
        """SubjectPublicKeyInfo DER; also a bare 65-byte point (what SDK helpers export raw)."""
        if len(der) == POINT_SIZE and der[0] == 4:
            return cls(der)
        if len(der) != len(_SPKI_HEADER) + POINT_SIZE or not der.startswith(_SPKI_HEADER):
            raise SM2Error("not an SM2 SubjectPublicKeyInfo (id-ecPublicKey, sm2p256v1, uncompressed)")
        return cls(der[len(_SPKI_HEADER) :])

    @classmethod
    def from_bytes(cls, data: bytes) -> SM2PublicKey:
        """DER (or a bare point), or the PEM text of the DER as id-pointer-sdk stores it."""
        return cls.from_der(pem_to_der(data) if is_pem(data) else data)

    def to_der(self) -> bytes:
        return _SPKI_HEADER + self.point

    def to_pem(self) -> bytes:
        """PEM as id-pointer-sdk's ``KeyConverter.toX509Pem`` writes it (76-column MIME base64, CRLF)."""
        b64 = base64.encodebytes(self.to_der()).replace(b"\n", b"\r\n")
        return PEM_BEGIN + b"\r\n" + b64 + PEM_END + b"\r\n"

    def verify(self, signature: bytes, data: bytes, uid: bytes = DEFAULT_UID, hash_name: str = SM3) -> bool:
        """True only for a good SM2 signature (DER, or plain 64-byte r || s) over ``data`` with
        user id ``uid`` and hash ``hash_name`` ("sm3", or "sha256" for SHA256withSM2)."""
        try:
            r, s = decode_dss_signature(signature)
        except ValueError:
            if len(signature) != 64:
                return False
            r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        if not (0 < r < SM2_N and 0 < s < SM2_N) or len(uid) >= 8192:
            return False
        point = gmalg.sm2.bytes_to_point(self.point)
        return bool(_core(hash_name).verify(data, r, s, uid, point))


@dataclass(frozen=True, slots=True)
class SM2PrivateKey:
    """An SM2 private key; the scalar is kept out of ``repr``."""

    secret: bytes = field(repr=False)
    _public: SM2PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        d = int.from_bytes(self.secret, "big")
        if len(self.secret) != 32 or not 1 <= d <= SM2_N - 2:
            raise SM2Error("SM2 private key must be 32 bytes in [1, n-2]")
        point = gmalg.SM2(uid=DEFAULT_UID).generate_pk(self.secret)
        object.__setattr__(self, "_public", SM2PublicKey(point))

    @classmethod
    def generate(cls) -> SM2PrivateKey:
        return cls((secrets.randbelow(SM2_N - 2) + 1).to_bytes(32, "big"))

    def public_key(self) -> SM2PublicKey:
        return self._public

    def sign(self, data: bytes, uid: bytes = DEFAULT_UID, hash_name: str = SM3) -> bytes:
        """SM2 over ``data`` with user id ``uid`` and hash ``hash_name``, DER-encoded (r, s);
        the per-signature k is from ``secrets``."""
        point = gmalg.sm2.bytes_to_point(self._public.point)
        d = int.from_bytes(self.secret, "big")
        r, s = _core(hash_name).sign(data, d, uid, point)
        return encode_dss_signature(r, s)

    @classmethod
    def from_pkcs8(cls, der: bytes) -> SM2PrivateKey:
        """Unencrypted PKCS#8 holding an ECPrivateKey on sm2p256v1; a public key in it must match."""
        top = _Der(der)
        outer = top.sequence()
        if top.remaining():
            raise SM2Error("bytes after the PKCS#8 structure")
        version = outer.integer()
        if version not in (0, 1):
            raise SM2Error(f"PKCS#8 version {version}")
        if outer.raw() != _ALG_ID:
            raise SM2Error("PKCS#8 key is not id-ecPublicKey on sm2p256v1")
        ec = _Der(outer.take(0x04)).sequence()  # attributes / public key after this are ignored
        if ec.integer() != 1:
            raise SM2Error("ECPrivateKey version is not 1")
        key = cls(ec.take(0x04).rjust(32, b"\0"))
        while ec.remaining():
            tag, body = ec.tlv()
            if tag == 0xA0 and body != _SM2_CURVE_OID:
                raise SM2Error("ECPrivateKey parameters name a curve other than sm2p256v1")
            if tag == 0xA1 and _Der(body).take(0x03) != b"\0" + key.public_key().point:
                raise SM2Error("ECPrivateKey public key does not match its private key")
        return key

    def to_pkcs8(self) -> bytes:
        """PKCS#8 v0 with the public key inside, byte-for-byte what OpenSSL 3 writes."""
        bitstring = _tlv(0x03, b"\0" + self._public.point)
        ec = _tlv(0x30, bytes.fromhex("020101") + _tlv(0x04, self.secret) + _tlv(0xA1, bitstring))
        return _tlv(0x30, bytes.fromhex("020100") + _ALG_ID + _tlv(0x04, ec))


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    length = (
        bytes([n])
        if n < 0x80
        else bytes([0x80 | (n.bit_length() + 7) // 8]) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    )
    return bytes([tag]) + length + body


class _Der:
    """Just enough strict DER reading for PKCS#8: every read is bounded by what remains."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def _header(self) -> tuple[int, int, int]:
        if self.remaining() < 2:
            raise SM2Error("truncated DER")
        tag, first = self.data[self.pos], self.data[self.pos + 1]
        pos = self.pos + 2
        if first < 0x80:
            length = first
        else:
            count = first & 0x7F
            if not 1 <= count <= 2 or pos + count > len(self.data):
                raise SM2Error("bad DER length")
            length = int.from_bytes(self.data[pos : pos + count], "big")
            pos += count
            if length < 0x80 or length.bit_length() <= 8 * (count - 1):
                raise SM2Error("non-minimal DER length")
        if pos + length > len(self.data):
            raise SM2Error("DER length past the end")
        return tag, pos, length

    def tlv(self) -> tuple[int, bytes]:
        tag, pos, length = self._header()
        self.pos = pos + length
        return tag, self.data[pos : pos + length]

    def raw(self) -> bytes:
        start = self.pos
        self.tlv()
        return self.data[start : self.pos]

    def take(self, tag: int) -> bytes:
        got, body = self.tlv()
        if got != tag:
            raise SM2Error(f"expected DER tag {tag:#x}, got {got:#x}")
        return body

    def sequence(self) -> _Der:
        return _Der(self.take(0x30))

    def integer(self) -> int:
        body = self.take(0x02)
        if not body or (len(body) > 1 and body[0] == 0 and body[1] < 0x80):
            raise SM2Error("bad DER INTEGER")
        return int.from_bytes(body, "big", signed=True)
