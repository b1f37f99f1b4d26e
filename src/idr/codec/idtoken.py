"""The identity token of Teleinfo's id-pointer-sdk, carried in a resolution's auth field.

``IDClient.resolveHandle(handle, types, indexes, authString)`` sets the RECU_AUTH op flag and
puts ``authString`` in the resolution's extra field (:class:`idr.codec.bodies.ResolutionRequest`
``auth``), so that a recursive node can pass the caller's identity on to the server that holds
the handle. The string is what ``ValueHelper.generateUserToken`` makes: a JWT (RFC 7519) signed
RS256 with the user's RSA private key, with the claims ``user_handle``, ``user_index``,
``nonce`` and ``timestamp`` (milliseconds since the epoch). The server checks it against the
user's HS_PUBKEY, like a challenge answer, and answers as that identity.

Decoding and verification use PyJWT with the algorithm pinned to RS256 (no "none", no HMAC
confusion); the freshness rule is ours: the token's timestamp must lie within ``window``
seconds of the server's clock, since the token is a bearer credential and the SDK makes a new
one per call.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from idr.codec.keys import PublicKey
from idr.codec.wire import ProtocolError
from idr.model.errors import ResponseCode
from idr.model.value import ValueReference

ALGORITHM = "RS256"  # what generateUserToken signs with (java-jwt Algorithm.RSA256)
MAX_TOKEN = 8192  # bytes; an RS256 token of a 16384-bit key is ~2.9 KB
WINDOW = 300.0  # seconds either side of now


@dataclass(frozen=True, slots=True)
class UserToken:
    identity: ValueReference
    nonce: int
    timestamp: float  # seconds since the epoch
    raw: str


def is_jwt(data: bytes) -> bool:
    """Whether ``data`` is shaped as a JWT at all (three dot-separated parts, a JSON header).
    Anything else in the auth field is not the SDK's token and is ignored, as Handle.Net's
    server ignores the whole field."""
    if len(data) > MAX_TOKEN or data.count(b".") != 2:
        return False
    head = data.split(b".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(head + b"=" * (-len(head) % 4)))
    except (ValueError, binascii.Error):
        return False
    return isinstance(header, dict) and "alg" in header


def _fail(message: str) -> ProtocolError:
    return ProtocolError(f"identity token: {message}", ResponseCode.INVALID_CREDENTIAL)


def decode_user_token(data: bytes) -> UserToken:
    """The token's claims, not yet verified; INVALID_CREDENTIAL when it is not such a token."""
    if len(data) > MAX_TOKEN:
        raise _fail(f"{len(data)} bytes is longer than {MAX_TOKEN}")
    try:
        raw = data.decode("ascii")
        header = jwt.get_unverified_header(raw)
        claims = jwt.decode(raw, options={"verify_signature": False})
    except (UnicodeDecodeError, jwt.PyJWTError) as e:
        raise _fail(f"not a JWT ({e})") from None
    if header.get("alg") != ALGORITHM:
        raise _fail(f"algorithm {header.get('alg')!r}, expected {ALGORITHM}")
    handle, index, nonce, stamp = (claims.get(k) for k in ("user_handle", "user_index", "nonce", "timestamp"))
    if not isinstance(handle, str) or not handle:
        raise _fail("no user_handle claim")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= 0x7FFFFFFF:
        raise _fail("no valid user_index claim")
    if not isinstance(stamp, int) or isinstance(stamp, bool):
        raise _fail("no timestamp claim")
    if not isinstance(nonce, int) or isinstance(nonce, bool):
        nonce = 0
    return UserToken(ValueReference(handle, index), nonce, stamp / 1000.0, raw)


def verify_user_token(token: UserToken, key: PublicKey) -> bool:
    """True when ``key`` (an RSA HS_PUBKEY) made the token's signature."""
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        jwt.decode(token.raw, key=key, algorithms=[ALGORITHM], options={"verify_exp": False})
    except jwt.PyJWTError:
        return False
    return True


def is_fresh(token: UserToken, now: float, window: float = WINDOW) -> bool:
    return abs(now - token.timestamp) <= window


def make_user_token(identity: ValueReference, nonce: int, timestamp: float, key: rsa.RSAPrivateKey) -> bytes:
    """The token ``ValueHelper.generateUserToken`` makes (for tests and idr's own client)."""
    claims = {
        "user_index": identity.index,
        "user_handle": identity.handle,
        "nonce": nonce,
        "timestamp": int(timestamp * 1000),
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM).encode("ascii")
