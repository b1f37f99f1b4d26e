"""Signing and verifying whole messages with a credential section (Handle.Net
``AbstractMessage.signMessage/verifyMessage``).

What is covered depends on the message's version:
- before 2.6: header + body;
- 2.6: a 14-byte prefix that Handle.Net builds with an offset bug (major, minor, the first two
  bytes of the session id, the session counter, six zero bytes) + header + body;
- from 2.7: major, minor, [suggested major, suggested minor from 2.8], session id, request id,
  session counter + header + body.
HS_MAC (session) credentials are supported before 2.5 and from 2.7; Handle.Net's 2.5/2.6 MAC
layout is not implemented.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace

from idr.codec.credential import CREDENTIAL_MAC, CREDENTIAL_OLD_SIGNED, CREDENTIAL_SIGNED, Credential
from idr.codec.envelope import version_at_least
from idr.codec.keys import PrivateKey, PublicKey, default_hash_alg, sign, verify
from idr.codec.message import Message
from idr.model.value import ValueReference


def _at_least(msg: Message, minor: int) -> bool:
    return version_at_least(msg.major, msg.minor, 2, minor)


def covered_bytes(msg: Message, session_counter: int) -> bytes:
    """The exact bytes a credential of ``msg`` signs or MACs."""
    hb = msg.header_and_body()
    if not _at_least(msg, 6):
        return hb
    head = bytes([msg.major & 0xFF, msg.minor & 0xFF])
    ints = [x.to_bytes(4, "big", signed=x < 0) for x in (msg.session_id, msg.request_id, session_counter)]
    if not _at_least(msg, 7):
        buf = bytearray(head + bytes(12))
        buf[2:6], buf[4:8], buf[4:8] = ints  # each write landed at offset 4 after the first
        return bytes(buf) + hb
    if _at_least(msg, 8):
        head += bytes(v & 0xFF for v in msg.effective_suggested)
    return head + b"".join(ints) + hb


def sign_message(
    msg: Message, key: PrivateKey, hash_alg: str | None = None, session_counter: int = 0
) -> Message:
    """``msg`` with an HS_SIGNED credential (what a server sends when asked to certify)."""
    alg = hash_alg or default_hash_alg(key, msg.version)
    unsigned = replace(msg, credential=None, raw=b"")
    signature = sign(key, covered_bytes(unsigned, session_counter), alg)
    return replace(
        unsigned,
        credential=Credential(CREDENTIAL_SIGNED, alg, signature, ValueReference("", session_counter)),
    )


def verify_message(msg: Message, key: PublicKey) -> bool:
    cred = msg.credential
    if cred is None or cred.type not in (CREDENTIAL_SIGNED, CREDENTIAL_OLD_SIGNED):
        return False
    return verify(key, cred.signature, covered_bytes(msg, cred.session_counter), cred.digest_alg)


def _normal(name: str) -> str:
    return "".join(ch for ch in name.upper() if ch.isalnum())


def _mac(alg: str, data: bytes, key: bytes) -> bytes | None:
    """Handle.Net ``Util.doMac`` by name (or by one-byte code, as pre-2.6 peers write it)."""
    if len(alg) == 1:
        alg = {1: "MD5", 2: "SHA1", 3: "SHA256", 0x12: "HMACSHA1", 0x13: "HMACSHA256"}.get(ord(alg), "")
    n = _normal(alg)
    if n in ("MD5", "SHA1", "SHA256"):
        return hashlib.new(n.lower(), key + data + key, usedforsecurity=False).digest()
    if n in ("HMACSHA1", "HMACSHA256"):
        return hmac.digest(key, data, n[4:].lower())
    return None


def mac_message(msg: Message, session_key: bytes, session_counter: int) -> Message:
    """``msg`` with an HS_MAC credential: HMAC-SHA256 from 2.7, SHA1(key‖data‖key) before 2.5."""
    if _at_least(msg, 7):
        alg = "HMAC-SHA256"
    elif not _at_least(msg, 5):
        alg = "\x02"
    else:
        raise ValueError("HS_MAC for protocol 2.5/2.6 is not supported")
    unsigned = replace(msg, credential=None, raw=b"")
    mac = _mac(alg, covered_bytes(unsigned, session_counter), session_key)
    assert mac is not None
    cred = Credential(CREDENTIAL_MAC, alg, mac, ValueReference("", session_counter))
    return replace(unsigned, credential=cred)


def verify_mac(msg: Message, session_key: bytes) -> bool:
    cred = msg.credential
    if cred is None or cred.type != CREDENTIAL_MAC:
        return False
    if _at_least(msg, 5) and not _at_least(msg, 7):
        return False  # Handle.Net's 2.5/2.6 layout, unsupported
    expected = _mac(cred.digest_alg, covered_bytes(msg, cred.session_counter), session_key)
    return expected is not None and hmac.compare_digest(expected, cred.signature)
