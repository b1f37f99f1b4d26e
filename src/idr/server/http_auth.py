"""``Authorization: Handle`` over HTTPS: the header, and checking its signature (Handle.Net 9
manual §14.6; ``HandleAuthorizationHeader``, ``StandardHandleAuthenticator``).

The client signs ``nonce || cnonce`` (the session's nonce, its own cnonce) and sends
``Handle sessionId="…", id="300:0.NA/88.100", type="HS_SECKEY"|"HS_PUBKEY", cnonce="…",
alg="…", signature="…"`` (base64 values). Handle.Net turns that into the native
OC_RESPONSE_TO_CHALLENGE answer with ``nonce`` as the nonce and ``cnonce`` as the request
digest (``verifyIdentityViaServer``) and checks it as it checks a native answer; so does idr,
reusing ``idr.codec.auth``:

* HS_SECKEY: the answer is ``alg code || signature``; ``alg`` names the MAC (MD5 / SHA1 /
  SHA-256 sandwiches ``H(key || nonce || cnonce || key)``, HMAC-SHA1, HMAC-SHA256, or
  PBKDF2-HMAC-SHA1, whose ``salt``/``iterations``/``length`` travel as header fields).
* HS_PUBKEY: ``alg`` is the signature's hash (SHA1, SHA-256, MD5; idr also accepts "Ed25519"
  and "SM3" for the key types Handle.Net does not have) and the signature is checked against
  each HS_PUBKEY of the identity (index 0: any of them), as ``verifyPublicKeyIdentity``.

Pure functions, no I/O: ``http.py`` owns sessions, the store and the event loop.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, fields
from urllib.parse import unquote_to_bytes

from idr.codec.auth import (
    MAC_HMAC_SHA1,
    MAC_HMAC_SHA256,
    MAC_MD5,
    MAC_PBKDF2_HMAC_SHA1,
    MAC_SHA1,
    MAC_SHA256,
    verify_secret_answer,
    verify_signature_answer,
)
from idr.codec.keys import ED25519_SIG_ALG, SM2_SIG_ALG, decode_public_key
from idr.codec.wire import ProtocolError, Writer
from idr.model.value import HandleValue, ValueReference

PUBKEY = "HS_PUBKEY"
SECKEY = "HS_SECKEY"
MAX_HEADER = 16 * 1024  # an RSA-16384 signature in base64 is ~2.8 kB; anything far bigger is abuse

# HandleAuthorizationHeader's grammar: ``Handle`` then token=(token|quoted-string), commas.
_TOKEN = r"[-A-Za-z0-9!#$%&'*+.`^_|~]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_SCHEME = re.compile(r"\s*Handle\s+(.*)", re.IGNORECASE | re.DOTALL)
_PARAM = re.compile(rf"\s*({_TOKEN})\s*=\s*({_TOKEN}|{_QUOTED})\s*((?:,\s*)*)", re.DOTALL)
_UNESCAPE = re.compile(r"\\(.)", re.DOTALL)


@dataclass(slots=True)
class HandleAuth:
    """The fields of an ``Authorization: Handle`` header (or the sessions API's JSON form)."""

    version: str | None = None
    sessionId: str | None = None  # Handle.Net's field names, as on the wire
    id: str | None = None
    cnonce: str | None = None
    type: str | None = None
    alg: str | None = None
    signature: str | None = None
    salt: str | None = None
    iterations: str | None = None
    length: str | None = None
    clientCert: str | None = None
    renegotiate: str | None = None

    @property
    def authenticating(self) -> bool:
        """HN ``isAuthenticating``: any of the fields of a login attempt is present."""
        return any(x is not None for x in (self.id, self.type, self.alg, self.signature))

    @property
    def incomplete(self) -> bool:
        return any(x is None for x in (self.id, self.cnonce, self.type, self.alg, self.signature))

    def put(self, key: str, value: str, *, only_if_absent: bool = False) -> None:
        """Set a field by its case-insensitive name; unknown names are ignored, as in HN."""
        name = _FIELDS.get(key.lower())
        if name is not None and not (only_if_absent and getattr(self, name) is not None):
            setattr(self, name, value)


_FIELDS = {f.name.lower(): f.name for f in fields(HandleAuth)}


def parse_header(header: str) -> HandleAuth | None:
    """``Authorization: Handle …`` → fields, or None when it is not a well-formed Handle header.

    As HN: keys are case-insensitive, quoted values are unescaped, and ``id`` alone is
    percent-decoded (``+`` stays) because an identity may contain ``,`` or ``"``.
    """
    if len(header) > MAX_HEADER:
        return None
    m = _SCHEME.fullmatch(header)
    if m is None or not m.group(1):
        return None
    rest, pos, comma = m.group(1), 0, True
    out = HandleAuth()
    while pos < len(rest):
        p = _PARAM.match(rest, pos)
        if p is None or not comma:
            return None
        key, value = p.group(1), p.group(2)
        if value.startswith('"'):
            value = _UNESCAPE.sub(r"\1", value[1:-1])
        if key.lower() == "id":
            try:
                value = unquote_to_bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                return None
        out.put(key, value)
        comma = bool(p.group(3))
        pos = p.end()
    return out


def parse_identity(text: str) -> ValueReference:
    """HN ``extractHandleValueReferenceFromString``: ``300:0.NA/x``; no numeric index → 0."""
    idx, sep, handle = text.partition(":")
    if sep and idx.isdigit() and handle:
        return ValueReference(handle, int(idx))
    return ValueReference(text, 0)


def _alg_key(alg: str) -> str:
    # HN Util.equalsIgnoreCaseAndPunctuation: compare letters and digits only, any case.
    return "".join(c for c in alg.upper() if c.isalnum())


_SECKEY_ALGS = {
    "MD5": MAC_MD5,
    "SHA": MAC_SHA1,
    "SHA1": MAC_SHA1,
    "SHA2": MAC_SHA256,
    "SHA256": MAC_SHA256,
    "HMACSHA1": MAC_HMAC_SHA1,
    "HMACSHA256": MAC_HMAC_SHA256,
    "PBKDF2HMACSHA1": MAC_PBKDF2_HMAC_SHA1,
    "PBKDF2WITHHMACSHA1": MAC_PBKDF2_HMAC_SHA1,
}
# the hash-name strings the native answer carries (Common.HASH_ALG_*), as codec.keys reads them
_PUBKEY_ALGS = {
    "MD5": "MD5",
    "SHA": "SHA1",
    "SHA1": "SHA1",
    "SHA2": "SHA-256",
    "SHA256": "SHA-256",
    "ED25519": ED25519_SIG_ALG,
    "SM3": SM2_SIG_ALG,
}


class AuthFailed(Exception):
    """The attempt is refused; the message goes into the challenge's ``error``."""


def _b64(text: str | None, what: str) -> bytes:
    try:
        return base64.b64decode((text or "").strip(), validate=True)
    except (binascii.Error, ValueError):
        raise AuthFailed(f"{what} is not base64") from None


def signed_response(auth: HandleAuth) -> tuple[str, bytes]:
    """(type, the native challenge answer) for a complete header (HN ``constructSignedResponse``)."""
    assert auth.type is not None and auth.alg is not None
    signature = _b64(auth.signature, "signature")
    key = _alg_key(auth.alg)
    if auth.type == SECKEY:
        code = _SECKEY_ALGS.get(key)
        if code is None:
            raise AuthFailed(f"unknown HS_SECKEY algorithm {auth.alg!r}")
        if code == MAC_PBKDF2_HMAC_SHA1 and None not in (auth.salt, auth.iterations, auth.length):
            try:
                iterations, bits = int(auth.iterations or ""), int(auth.length or "")
            except ValueError:
                raise AuthFailed("PBKDF2 iterations and length must be integers") from None
            salt = _b64(auth.salt, "salt")
            # Util.constructPbkdf2Encoding: salt, iterations, key length, MAC
            signature = Writer().blob(salt).i32(iterations).i32(bits).blob(signature).getvalue()
        return SECKEY, bytes([code]) + signature
    if auth.type == PUBKEY:
        name = _PUBKEY_ALGS.get(key)
        if name is None:
            raise AuthFailed(f"unknown HS_PUBKEY algorithm {auth.alg!r}")
        return PUBKEY, Writer().text(name).blob(signature).getvalue()
    raise AuthFailed(f"unknown authentication type {auth.type!r}")


def verify(
    claimed: ValueReference,
    auth_type: str,
    values: list[HandleValue],
    nonce: bytes,
    cnonce: bytes,
    answer: bytes,
) -> ValueReference:
    """The identity (with the index of the key that matched) or AuthFailed. CPU-heavy (RSA,
    PBKDF2): run it off the event loop."""
    for v in sorted(values, key=lambda v: v.index):
        try:
            if auth_type == PUBKEY:
                ok = verify_signature_answer(decode_public_key(v.data), nonce, cnonce, answer)
            else:
                ok = verify_secret_answer(v.data, nonce, cnonce, answer)
        except ProtocolError:
            ok = False
        if ok:
            return ValueReference(claimed.handle, v.index)
    raise AuthFailed("identity not verified")


__all__ = ["AuthFailed", "HandleAuth", "parse_header", "parse_identity", "signed_response", "verify"]
