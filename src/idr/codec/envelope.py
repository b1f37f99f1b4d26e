"""The fixed-size parts of a Handle message: the 20-byte envelope and the 24-byte header.

RFC 3652 §2.2.1–2.2.2, with Handle.Net 9 extensions (``Encoder.encodeEnvelope``,
``Encoder.writeHeader``): the envelope's flag byte carries a "suggested major version" in its
low two bits and the next byte a suggested minor, and four op flags (OVRW, MINT, DNRF, and the
RD request-digest flag) that RFC 3652 does not name.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

from idr.codec.wire import ProtocolError, Reader, Writer

ENVELOPE_SIZE = 20
HEADER_SIZE = 24
MAX_MESSAGE_LENGTH = 262144  # Handle.Net Common.MAX_MESSAGE_LENGTH
PROTOCOL_MAJOR = 2
PROTOCOL_MINOR = 11  # what Handle.Net 9 speaks; idr answers with min(client, this)


class EnvFlag(IntFlag):
    """Envelope flag byte (byte 2); the low two bits are the suggested major version."""

    CP = 0x80  # compressed
    EC = 0x40  # encrypted
    TC = 0x20  # truncated (client: multi-packet UDP request)


class OpFlag(IntFlag):
    """Header op flags (RFC 3652 §2.2.2.3; OVRW…DNRF are Handle.Net extensions, RECU_AUTH the
    Teleinfo SDK's)."""

    AT = 0x80000000  # authoritative: no caches, primaries only
    CT = 0x40000000  # certify: server must sign the response
    ENC = 0x20000000  # encrypt the response
    REC = 0x10000000  # recursive
    CA = 0x08000000  # cache should certify
    CN = 0x04000000  # continuous: more parts follow
    KA = 0x02000000  # keep the connection alive
    PO = 0x01000000  # public values only
    RD = 0x00800000  # response must carry a digest of the request
    OVRW = 0x00400000  # overwrite existing handle/values
    MINT = 0x00200000  # create: server mints the suffix
    DNRF = 0x00100000  # do not refer
    # id-pointer-sdk (Teleinfo) ``Encoder.MSG_FLAG_RECU_AUTH``: a resolution carries the caller's
    # identity token in its auth field (``bodies.ResolutionRequest.auth``), to be passed on.
    RECU_AUTH = 0x00000004


class OpCode(IntEnum):
    RESERVED = 0
    RESOLUTION = 1
    GET_SITE_INFO = 2
    CREATE_HANDLE = 100
    DELETE_HANDLE = 101
    ADD_VALUE = 102
    REMOVE_VALUE = 103
    MODIFY_VALUE = 104
    LIST_HANDLES = 105
    RESPONSE_TO_CHALLENGE = 200
    VERIFY_CHALLENGE = 201
    HOME_NA = 300
    UNHOME_NA = 301
    LIST_HOMED_NAS = 302
    SESSION_SETUP = 400
    SESSION_TERMINATE = 401
    SESSION_EXCHANGEKEY = 402
    GET_NEXT_TXN_ID = 1000
    RETRIEVE_TXN_LOG = 1001
    DUMP_HANDLES = 1002
    BACKUP_SERVER = 1003
    LOGIN_ID_SYSTEM = 2001  # Teleinfo id-pointer-sdk (``AbstractMessage.OC_LOGIN_ID_SYSTEM``)


def version_at_least(major: int, minor: int, want_major: int, want_minor: int) -> bool:
    """Handle.Net ``hasEqualOrGreaterVersion`` for major 2 peers (major 5 was an old typo for 2.0)."""
    if major == 5:
        major, minor = 2, 0
    return (major, minor) >= (want_major, want_minor)


@dataclass(frozen=True, slots=True)
class Envelope:
    major: int = PROTOCOL_MAJOR
    minor: int = PROTOCOL_MINOR
    flags: int = 0  # EnvFlag bits (unknown bits 0x1C are kept so re-encoding is exact)
    suggested_major: int = 0  # 0..3; 0 means "same as major" (kept raw for exact re-encoding)
    suggested_minor: int = 0
    session_id: int = 0
    request_id: int = 0
    sequence_number: int = 0
    message_length: int = 0

    @property
    def truncated(self) -> bool:
        return bool(self.flags & EnvFlag.TC)

    def encode(self) -> bytes:
        w = Writer().u8(self.major).u8(self.minor)
        w.u8((self.flags & 0xFC) | (self.suggested_major & 0x03)).u8(self.suggested_minor)
        w.u32(self.session_id).u32(self.request_id).u32(self.sequence_number).u32(self.message_length)
        return w.getvalue()


def decode_envelope(data: bytes | bytearray | memoryview) -> Envelope:
    """The first 20 bytes; refuses a version other than 2.x and an impossible length."""
    r = Reader(data)
    if r.remaining < ENVELOPE_SIZE:
        raise ProtocolError(f"message of {r.remaining} bytes is shorter than an envelope")
    major, minor, flags, sminor = r.u8(), r.u8(), r.u8(), r.u8()
    if major != PROTOCOL_MAJOR:
        raise ProtocolError(f"unsupported protocol version {major}.{minor}")
    env = Envelope(major, minor, flags & 0xFC, flags & 0x03, sminor, r.u32(), r.u32(), r.u32(), r.u32())
    if env.message_length > MAX_MESSAGE_LENGTH:
        raise ProtocolError(f"message length {env.message_length} exceeds {MAX_MESSAGE_LENGTH}")
    return env


@dataclass(frozen=True, slots=True)
class Header:
    opcode: int
    response_code: int = 0  # 0 = request
    opflags: int = 0
    site_info_serial: int = 0xFFFF  # Handle.Net clients send -1 when they know no site
    recursion_count: int = 0
    expiration: int = 0
    body_length: int = 0

    def encode(self) -> bytes:
        w = Writer().u32(self.opcode).u32(self.response_code).u32(self.opflags)
        w.u16(self.site_info_serial).u8(self.recursion_count).u8(0)
        return w.u32(self.expiration).u32(self.body_length).getvalue()


def read_header(r: Reader) -> Header:
    opcode, rc, flags = r.u32(), r.u32(), r.u32()
    serial, recursion, _reserved = r.u16(), r.u8(), r.u8()
    return Header(opcode, rc, flags, serial, recursion, r.u32(), r.u32())
