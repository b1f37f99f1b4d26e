"""Handle record signatures (Handle.Net 9 ``HS_SIGNATURE`` and ``HS_CERT`` values): JSON Web
Signatures over claims about a handle's values or about a key's permissions. Pure functions.

What hdllib's ``net.handle.hdllib.trust`` reads and writes (the layout tests check byte by byte
against vectors hdllib made, tests/vectors/trust):

* A JWS in compact serialization ``b64url(header).b64url(payload).b64url(signature)`` (no
  padding); hdllib also parses the JSON serialization ``{"payload", "signatures": [{"protected",
  "signature"}]}``. The header is exactly ``{"alg":"RS256"}`` (RSA PKCS#1 v1.5, SHA-256) or
  ``{"alg":"DS256"}`` (DSA with SHA-256, the signature DER-encoded as Java writes it, not JOSE's
  r‖s); the signed bytes are ``b64url(header) "." b64url(payload)``.
* The payload is the JSON of a claims set: ``iss`` (signer, ``index:handle``), ``sub`` (the
  handle signed, or the ``index:handle`` a certificate is about), ``iat``/``nbf``/``exp``
  (seconds), ``chain`` (where the issuer's certificates are), and either ``digests``
  (``{"alg": "SHA-256", "digests": [{"index", "digest"}]}``: per value, base64 of the hash of
  its wire encoding after index and timestamp — so a server restamping it changes nothing) or,
  for a certificate, ``perms`` (``[{"handle", "perm"}]``, perm ``everything``, ``thisHandle``,
  ``derivedPrefixes`` or ``handlesUnderThisPrefix``) and ``publicKey`` (a JWK: ``kty`` RSA with
  ``n``/``e`` or DSA with ``y``/``p``/``q``/``g``, unsigned big-endian, base64url).

idr extensions, which hdllib does not verify: ``alg`` ``SM2SM3`` (SM2 with SM3 and the default
user id, DER r, s; JWK ``{"kty": "EC", "crv": "SM2", "x", "y"}``) and ``EdDSA`` (Ed25519, RFC 8037;
JWK ``{"kty": "OKP", "crv": "Ed25519", "x"}``), for China's national algorithms and idr's keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ed25519, padding, rsa

from idr.codec.keys import PrivateKey, PublicKey
from idr.codec.sm2 import SM2Error, SM2PrivateKey, SM2PublicKey
from idr.codec.values import write_value
from idr.codec.wire import Writer
from idr.model.value import HandleValue

DIGEST_ALG = "SHA-256"  # what HandleSigner digests with
MAX_JWS = 64 * 1024  # a signature value larger than this is not read
# Permission names (hdllib trust.Permission).
EVERYTHING = "everything"
THIS_HANDLE = "thisHandle"
DERIVED_PREFIXES = "derivedPrefixes"
HANDLES_UNDER_THIS_PREFIX = "handlesUnderThisPrefix"
PERMISSIONS = (EVERYTHING, THIS_HANDLE, DERIVED_PREFIXES, HANDLES_UNDER_THIS_PREFIX)

_RSA_HASHES: dict[str, hashes.HashAlgorithm] = {
    "256": hashes.SHA256(),
    "384": hashes.SHA384(),
    "512": hashes.SHA512(),
}


class JwsError(ValueError):
    """Not a JWS, or claims that are not a Handle claims set: what is wrong."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    """Base64url with or without padding (commons-codec reads both, and standard base64 too)."""
    t = text.strip().replace("+", "-").replace("/", "_")
    try:
        return base64.urlsafe_b64decode(t + "=" * (-len(t) % 4))
    except (binascii.Error, ValueError) as e:
        raise JwsError(f"not base64url: {e}") from e


# --------------------------------------------------------------------------- JWS


@dataclass(frozen=True)
class Jws:
    """One signature: the three encoded parts exactly as signed (so re-serialising never alters them)."""

    header_b64: str
    payload_b64: str
    signature_b64: str

    @property
    def header(self) -> dict[str, Any]:
        try:
            obj = json.loads(unb64url(self.header_b64))
        except (ValueError, UnicodeDecodeError) as e:
            raise JwsError(f"JWS header is not JSON: {e}") from e
        if not isinstance(obj, dict):
            raise JwsError("JWS header is not a JSON object")
        return obj

    @property
    def alg(self) -> str:
        alg = self.header.get("alg")
        if not isinstance(alg, str):
            raise JwsError("JWS header has no alg")
        return alg

    @property
    def payload(self) -> bytes:
        return unb64url(self.payload_b64)

    @property
    def signature(self) -> bytes:
        return unb64url(self.signature_b64)

    @property
    def signing_input(self) -> bytes:
        return f"{self.header_b64}.{self.payload_b64}".encode("ascii")

    def serialize(self) -> str:
        return f"{self.header_b64}.{self.payload_b64}.{self.signature_b64}"


def parse_jws(text: str | bytes) -> Jws:
    """Compact serialization, or hdllib's JSON serialization (first signature)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise JwsError("a JWS is ASCII text") from e
    if len(text) > MAX_JWS:
        raise JwsError(f"JWS longer than {MAX_JWS} characters")
    text = text.strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
            sig = obj["signatures"][0]
            return Jws(str(sig["protected"]), str(obj["payload"]), str(sig["signature"]))
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise JwsError(f"not a JWS JSON serialization: {e}") from e
    parts = text.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise JwsError("a compact JWS has three dot-separated parts")
    for p in parts:
        unb64url(p)
    return Jws(*parts)


def _alg_for(key: PrivateKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, dsa.DSAPrivateKey):
        return "DS256"
    if isinstance(key, SM2PrivateKey):
        return "SM2SM3"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    raise JwsError(f"cannot sign with a {type(key).__name__}")


def sign_jws(payload: bytes, key: PrivateKey) -> Jws:
    """The JWS of ``payload`` by ``key``, with the header hdllib writes for its key type."""
    alg = _alg_for(key)
    header_b64 = b64url(json.dumps({"alg": alg}, separators=(",", ":")).encode())
    payload_b64 = b64url(payload)
    data = f"{header_b64}.{payload_b64}".encode("ascii")
    if isinstance(key, rsa.RSAPrivateKey):
        sig = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(key, dsa.DSAPrivateKey):
        sig = key.sign(data, hashes.SHA256())  # DER (r, s), as Java's SHA256withDSA
    elif isinstance(key, SM2PrivateKey):
        sig = key.sign(data)
    else:
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        sig = key.sign(data)
    return Jws(header_b64, payload_b64, b64url(sig))


def verify_jws(jws: Jws, key: PublicKey) -> bool:
    """Whether ``jws`` was signed by ``key`` with the algorithm its header names (the key type
    must match the algorithm, as hdllib checks)."""
    try:
        alg = jws.alg
        data, sig = jws.signing_input, jws.signature
        if alg.startswith("RS") and isinstance(key, rsa.RSAPublicKey):
            h = _RSA_HASHES.get(alg[2:])
            if h is None:
                return False
            key.verify(sig, data, padding.PKCS1v15(), h)
            return True
        if alg.startswith("DS") and isinstance(key, dsa.DSAPublicKey):
            dh: hashes.HashAlgorithm = _RSA_HASHES.get(alg[2:]) or hashes.SHA1()
            key.verify(sig, data, dh)
            return True
        if alg == "SM2SM3" and isinstance(key, SM2PublicKey):
            return key.verify(sig, data)
        if alg == "EdDSA" and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(sig, data)
            return True
    except (InvalidSignature, JwsError, SM2Error, ValueError):
        return False
    return False


# --------------------------------------------------------------------------- JWK


def _uint(n: int) -> str:
    return b64url(n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big"))


def _int(obj: dict[str, Any], name: str) -> int:
    v = obj.get(name)
    if not isinstance(v, str):
        raise JwsError(f"JWK has no {name}")
    return int.from_bytes(unb64url(v), "big")


def public_key_to_jwk(key: PublicKey) -> dict[str, str]:
    """The key as hdllib's ``GsonUtility`` writes a ``PublicKey`` (plus idr's SM2 and Ed25519)."""
    if isinstance(key, rsa.RSAPublicKey):
        rn = key.public_numbers()
        return {"kty": "RSA", "n": _uint(rn.n), "e": _uint(rn.e)}
    if isinstance(key, dsa.DSAPublicKey):
        dn = key.public_numbers()
        p = dn.parameter_numbers
        return {"kty": "DSA", "y": _uint(dn.y), "p": _uint(p.p), "q": _uint(p.q), "g": _uint(p.g)}
    if isinstance(key, SM2PublicKey):
        return {"kty": "EC", "crv": "SM2", "x": b64url(key.point[1:33]), "y": b64url(key.point[33:])}
    if isinstance(key, ed25519.Ed25519PublicKey):
        from cryptography.hazmat.primitives import serialization

        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
    raise JwsError(f"no JWK for a {type(key).__name__}")


def public_key_from_jwk(obj: Any) -> PublicKey:
    if not isinstance(obj, dict):
        raise JwsError("publicKey is not a JSON object")
    kty = str(obj.get("kty", "")).upper()
    try:
        if kty == "RSA":
            return rsa.RSAPublicNumbers(_int(obj, "e"), _int(obj, "n")).public_key()
        if kty == "DSA":
            params = dsa.DSAParameterNumbers(_int(obj, "p"), _int(obj, "q"), _int(obj, "g"))
            return dsa.DSAPublicNumbers(_int(obj, "y"), params).public_key()
        if kty == "EC" and obj.get("crv") == "SM2":
            x, y = _int(obj, "x"), _int(obj, "y")
            return SM2PublicKey(b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big"))
        if kty == "OKP" and obj.get("crv") == "Ed25519":
            return ed25519.Ed25519PublicKey.from_public_bytes(unb64url(str(obj.get("x", ""))))
    except (ValueError, OverflowError, SM2Error) as e:
        raise JwsError(f"publicKey is not a usable {kty} key: {e}") from e
    raise JwsError(f"publicKey type {kty or '?'} is not RSA, DSA, EC/SM2 or OKP/Ed25519")


def same_key(a: PublicKey, b: PublicKey) -> bool:
    try:
        return public_key_to_jwk(a) == public_key_to_jwk(b)
    except JwsError:
        return False


# --------------------------------------------------------------------------- claims


def value_digest(v: HandleValue, alg: str = DIGEST_ALG) -> str:
    """hdllib ``HandleValueDigester``: base64 of the hash of the value's wire encoding without
    its index and timestamp (the first eight bytes)."""
    w = Writer()
    write_value(w, v)
    name = alg.replace("-", "").lower()
    if name not in ("sha256", "sha1", "sha384", "sha512"):
        raise JwsError(f"digest algorithm {alg!r} is not SHA-1/256/384/512")
    return base64.b64encode(hashlib.new(name, w.getvalue()[8:]).digest()).decode("ascii")


@dataclass(frozen=True)
class Permission:
    handle: str
    perm: str


@dataclass(frozen=True)
class Claims:
    """A Handle claims set (hdllib ``HandleClaimsSet``)."""

    iss: str
    sub: str
    iat: int | None = None
    nbf: int | None = None
    exp: int | None = None
    chain: tuple[str, ...] | None = None
    digest_alg: str | None = None
    digests: tuple[tuple[int, str], ...] | None = None  # (value index, base64 digest)
    perms: tuple[Permission, ...] | None = None
    public_key: PublicKey | None = field(default=None, compare=False)
    content: str | None = None

    @property
    def self_issued(self) -> bool:
        return self.sub == self.iss

    def in_range(self, now: int) -> bool:
        if self.exp is not None and now > self.exp:
            return False
        return not (self.nbf is not None and now < self.nbf)

    def to_json(self) -> bytes:
        """Fields in the order Gson writes a ``HandleClaimsSet`` (its own fields, then
        ``JwtClaimsSet``'s), absent ones left out as Gson leaves out nulls."""
        out: dict[str, Any] = {}
        if self.perms is not None:
            out["perms"] = [{"handle": p.handle, "perm": p.perm} for p in self.perms]
        if self.digests is not None:
            out["digests"] = {
                "alg": self.digest_alg or DIGEST_ALG,
                "digests": [{"index": i, "digest": d} for i, d in self.digests],
            }
        if self.chain is not None:
            out["chain"] = list(self.chain)
        if self.public_key is not None:
            out["publicKey"] = public_key_to_jwk(self.public_key)
        if self.content is not None:
            out["content"] = self.content
        out["iss"] = self.iss
        out["sub"] = self.sub
        for name in ("exp", "nbf", "iat"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _opt_int(obj: dict[str, Any], name: str) -> int | None:
    v = obj.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise JwsError(f"claim {name} is not a number")
    return int(v)


def parse_claims(payload: bytes) -> Claims:
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise JwsError(f"the signed payload is not JSON: {e}") from e
    if not isinstance(obj, dict):
        raise JwsError("the signed payload is not a JSON object")
    iss, sub = obj.get("iss"), obj.get("sub")
    if not isinstance(iss, str) or not isinstance(sub, str):
        raise JwsError("the claims have no iss or sub")
    digests = alg = None
    if obj.get("digests") is not None:
        d = obj["digests"]
        try:
            alg = str(d["alg"])
            digests = tuple((int(x["index"]), str(x["digest"])) for x in d["digests"])
        except (KeyError, TypeError, ValueError) as e:
            raise JwsError(f"unreadable digests: {e}") from e
    perms = None
    if obj.get("perms") is not None:
        try:
            perms = tuple(Permission(str(p["handle"]), str(p["perm"])) for p in obj["perms"])
        except (KeyError, TypeError) as e:
            raise JwsError(f"unreadable perms: {e}") from e
    chain = obj.get("chain")
    if chain is not None and not (isinstance(chain, list) and all(isinstance(c, str) for c in chain)):
        raise JwsError("chain is not a list of strings")
    key = public_key_from_jwk(obj["publicKey"]) if obj.get("publicKey") is not None else None
    content = obj.get("content")
    return Claims(
        iss,
        sub,
        _opt_int(obj, "iat"),
        _opt_int(obj, "nbf"),
        _opt_int(obj, "exp"),
        tuple(chain) if chain is not None else None,
        alg,
        digests,
        perms,
        key,
        content if isinstance(content, str) else None,
    )
