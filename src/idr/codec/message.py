"""Whole Handle messages: ``decode_message(bytes) -> Message`` and ``encode_message(Message) -> bytes``.

A message is envelope (20) + header (24) + body + int4 credential length + credential
(RFC 3652 §2.2; the envelope's MessageLength counts everything after the envelope, the
4-byte credential length included — checked against the Handle.Net 9.2 captures).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

from idr.codec.bodies import (
    DIGEST_MD5,
    DIGEST_MD5_LEGACY,
    DIGEST_SHA1,
    DIGEST_SHA256,
    Body,
    RequestDigest,
    body_type,
    read_digest,
    write_digest,
)
from idr.codec.credential import Credential, read_credential
from idr.codec.envelope import (
    ENVELOPE_SIZE,
    HEADER_SIZE,
    MAX_MESSAGE_LENGTH,
    PROTOCOL_MAJOR,
    PROTOCOL_MINOR,
    Envelope,
    EnvFlag,
    Header,
    OpFlag,
    decode_envelope,
    read_header,
    version_at_least,
)
from idr.codec.wire import ProtocolError, Reader, Writer
from idr.model.errors import ResponseCode

DEFAULT_SITE_SERIAL = 0xFFFF


@dataclass(frozen=True, slots=True)
class Message:
    """One request or response. ``raw`` is the exact bytes it was decoded from (empty when built
    locally); request digests and signatures are computed over those bytes, not a re-encoding."""

    opcode: int
    body: Body
    response_code: int = 0
    opflags: int = 0
    request_id: int = 0
    session_id: int = 0
    major: int = PROTOCOL_MAJOR
    minor: int = PROTOCOL_MINOR
    suggested_major: int = PROTOCOL_MAJOR
    suggested_minor: int = PROTOCOL_MINOR
    env_flags: int = 0
    site_info_serial: int = DEFAULT_SITE_SERIAL
    recursion_count: int = 0
    expiration: int = 0
    request_digest: RequestDigest | None = None  # responses only
    credential: Credential | None = None
    raw: bytes = field(default=b"", compare=False, repr=False)

    @property
    def is_request(self) -> bool:
        return self.response_code == 0

    @property
    def version(self) -> tuple[int, int]:
        return (self.major, self.minor)

    @property
    def effective_suggested(self) -> tuple[int, int]:
        """The peer's best version; a suggested major of 0 means "the envelope's own"."""
        if self.suggested_major == 0:
            return self.version
        return (self.suggested_major, self.suggested_minor)

    def has_flag(self, flag: OpFlag) -> bool:
        return bool(self.opflags & flag)

    def header_and_body(self) -> bytes:
        """What request digests and credentials cover: header + body, from ``raw`` when decoded."""
        data = self.raw or encode_message(self)
        body_len = int.from_bytes(data[ENVELOPE_SIZE + 20 : ENVELOPE_SIZE + HEADER_SIZE], "big")
        return data[ENVELOPE_SIZE : ENVELOPE_SIZE + HEADER_SIZE + body_len]


def _legacy_challenge(opcode_rc: int, version: tuple[int, int]) -> bool:
    return opcode_rc == ResponseCode.AUTHENTICATION_NEEDED and not version_at_least(*version, 2, 1)


def encode_message(msg: Message, *, sequence_number: int = 0) -> bytes:
    """Bytes of ``msg``; for a response, RD is set exactly when ``request_digest`` is given."""
    w = Writer()
    flags = msg.opflags
    legacy = _legacy_challenge(msg.response_code, msg.version)
    if not msg.is_request:
        flags &= ~OpFlag.RD
        if msg.request_digest is not None and not legacy:
            flags |= OpFlag.RD
            write_digest(w, msg.request_digest)
    msg.body.write(w, msg.version)
    if legacy:
        if msg.request_digest is None:
            raise ValueError("a pre-2.1 challenge needs the request digest")
        w.blob(msg.request_digest.digest)
    body = w.getvalue()
    header = Header(
        msg.opcode,
        msg.response_code,
        flags,
        msg.site_info_serial,
        msg.recursion_count,
        msg.expiration,
        len(body),
    )
    cred = msg.credential.encode() if msg.credential is not None else b""
    length = HEADER_SIZE + len(body) + 4 + len(cred)
    if length > MAX_MESSAGE_LENGTH:
        raise ValueError(f"message of {length} bytes exceeds {MAX_MESSAGE_LENGTH}")
    env = Envelope(
        msg.major,
        msg.minor,
        msg.env_flags,
        msg.suggested_major,
        msg.suggested_minor,
        msg.session_id,
        msg.request_id,
        sequence_number,
        length,
    )
    return b"".join((env.encode(), header.encode(), body, len(cred).to_bytes(4, "big"), cred))


def decode_message(data: bytes | bytearray | memoryview) -> Message:
    """Parse one complete message (a TCP frame or a reassembled UDP message).

    Any malformed input raises ``ProtocolError`` carrying the response code to send back.
    """
    data = bytes(data)
    env = decode_envelope(data)
    if env.message_length != len(data) - ENVELOPE_SIZE:
        raise ProtocolError(f"envelope says {env.message_length} bytes, got {len(data) - ENVELOPE_SIZE}")
    if env.flags & (EnvFlag.CP | EnvFlag.EC):
        raise ProtocolError(
            "compressed or encrypted messages are not supported", ResponseCode.OPERATION_NOT_SUPPORTED
        )
    r = Reader(data, ENVELOPE_SIZE)
    if r.remaining < HEADER_SIZE:
        raise ProtocolError("message shorter than its header")
    h = read_header(r)
    version = (env.major, env.minor)
    digest: RequestDigest | None = None
    legacy = _legacy_challenge(h.response_code, version)
    # Like Handle.Net's ``Encoder.decodeMessage``: each body decoder reads its fields and whatever
    # follows them inside the body is ignored (id-pointer-sdk appends a field to resolutions,
    # ``bodies.ResolutionRequest.auth``), but no decoder may read past the declared body length.
    with r.restrict_to(h.body_length, "body", exact=False):
        if h.response_code != 0 and h.opflags & OpFlag.RD and not legacy:
            digest = read_digest(r)
        body = body_type(h.opcode, h.response_code, version).read(r, version)
        if legacy:
            digest = RequestDigest(DIGEST_MD5_LEGACY, r.blob("request digest", 64))
    credential = None
    if r.remaining >= 4:  # Handle.Net reads a credential only when its length fits; so do we
        n = r.u32()
        if n:
            with r.restrict_to(n, "credential"):
                credential = read_credential(r)
    # bytes after the credential are ignored, as by Handle.Net
    return Message(
        h.opcode,
        body,
        h.response_code,
        h.opflags,
        env.request_id,
        env.session_id,
        env.major,
        env.minor,
        env.suggested_major,
        env.suggested_minor,
        env.flags,
        h.site_info_serial,
        h.recursion_count,
        h.expiration,
        digest,
        credential,
        data,
    )


_HASHES = {DIGEST_MD5_LEGACY: "md5", DIGEST_MD5: "md5", DIGEST_SHA1: "sha1", DIGEST_SHA256: "sha256"}


def request_digest(message: bytes | Message, alg: int = DIGEST_SHA256) -> RequestDigest:
    """Digest of a request the way Handle.Net computes it (``Util.doDigest(alg,
    getEncodedMessageBody())``): over the 24-byte header and the body — not the envelope,
    not the credential. ``message`` is the complete request as received, envelope first."""
    if isinstance(message, Message):
        covered = message.header_and_body()
    else:
        if len(message) < ENVELOPE_SIZE + HEADER_SIZE:
            raise ProtocolError("message shorter than envelope and header")
        body_len = int.from_bytes(message[ENVELOPE_SIZE + 20 : ENVELOPE_SIZE + HEADER_SIZE], "big")
        covered = bytes(message[ENVELOPE_SIZE : ENVELOPE_SIZE + HEADER_SIZE + body_len])
    name = _HASHES.get(alg)
    if name is None:
        raise ValueError(f"unknown digest type {alg}")
    return RequestDigest(alg, hashlib.new(name, covered, usedforsecurity=False).digest())


def digest_alg_for(version: tuple[int, int]) -> int:
    """Handle.Net ``takeDigestOfRequest``: legacy MD5 before 2.1, SHA-256 from 2.7, else SHA-1."""
    if not version_at_least(*version, 2, 1):
        return DIGEST_MD5_LEGACY
    return DIGEST_SHA256 if version_at_least(*version, 2, 7) else DIGEST_SHA1


def answer_version(request: Message) -> tuple[int, int]:
    """The version to answer with: the lower of the client's suggested version and ours."""
    return min(request.effective_suggested, (PROTOCOL_MAJOR, PROTOCOL_MINOR))


def response_to(
    request: Message,
    response_code: int,
    body: Body,
    *,
    opflags: int | None = None,
    site_info_serial: int = 1,
    expiration: int | None = None,
) -> Message:
    """A response echoing the request's ids and version, with the request digest if RD was set.

    The default flags mirror Handle.Net: the request's flags (minus RD) with AT added."""
    major, minor = answer_version(request)
    flags = (request.opflags & ~OpFlag.RD) | OpFlag.AT if opflags is None else opflags
    # A challenge always carries the digest: the client signs nonce + digest.
    wants = request.has_flag(OpFlag.RD) or response_code == ResponseCode.AUTHENTICATION_NEEDED
    digest = request_digest(request, digest_alg_for((major, minor))) if wants else None
    return replace(
        Message(
            request.opcode,
            body,
            response_code,
            flags,
            request.request_id,
            request.session_id,
            major,
            minor,
            PROTOCOL_MAJOR,
            PROTOCOL_MINOR,
            0,
            site_info_serial,
            request.recursion_count,
            request.expiration if expiration is None else expiration,
        ),
        request_digest=digest,
    )
