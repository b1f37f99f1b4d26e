"""Typed message bodies, one small class per layout, and which layout an (opcode, code) pair uses.

Layouts as in RFC 3652 §3 and Handle.Net 9 ``Encoder.encode*/decode*``. Each class reads and
writes only its own bytes; the optional request-digest prefix of responses and the legacy (<2.1)
challenge layout are handled in :mod:`idr.codec.message`, which knows the header.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol, Self

from idr.codec.envelope import OpCode
from idr.codec.site import decode_site, encode_site
from idr.codec.values import read_values, write_values
from idr.codec.wire import ProtocolError, Reader, Writer
from idr.model.errors import ResponseCode
from idr.model.handle import MAX_HANDLE_LENGTH
from idr.model.site import SiteInfo
from idr.model.value import HandleValue

Version = tuple[int, int]

# Request digest hash codes (Handle.Net Common.HASH_CODE_*): code -> digest size.
DIGEST_MD5_LEGACY = 0  # length-prefixed MD5, pre-2.1 peers
DIGEST_MD5 = 1
DIGEST_SHA1 = 2
DIGEST_SHA256 = 3
DIGEST_SIZES = {DIGEST_MD5: 16, DIGEST_SHA1: 20, DIGEST_SHA256: 32}


@dataclass(frozen=True, slots=True)
class RequestDigest:
    """A hash of the request's header and body, echoed so the client knows what was answered."""

    alg: int
    digest: bytes


def read_digest(r: Reader) -> RequestDigest:
    alg = r.u8()
    if alg == DIGEST_MD5_LEGACY:  # that byte was the top of a 4-byte length
        r.pos -= 1
        return RequestDigest(alg, r.blob("request digest", 64))
    size = DIGEST_SIZES.get(alg)
    if size is None:
        raise ProtocolError(f"unknown request digest type {alg}")
    return RequestDigest(alg, r.raw(size, "request digest"))


def write_digest(w: Writer, d: RequestDigest) -> None:
    if d.alg == DIGEST_MD5_LEGACY:
        w.blob(d.digest)
        return
    if DIGEST_SIZES.get(d.alg) != len(d.digest):
        raise ValueError(f"digest of {len(d.digest)} bytes does not fit hash type {d.alg}")
    w.u8(d.alg).raw(d.digest)


def read_handle(r: Reader, what: str = "handle") -> str:
    """A UTF8-String of at most 2048 bytes; a bad one is INVALID_HANDLE, a short message is not."""
    n = r.u32()
    if n > MAX_HANDLE_LENGTH:
        raise ProtocolError(f"{what} of {n} bytes exceeds {MAX_HANDLE_LENGTH}", ResponseCode.INVALID_HANDLE)
    data = r.raw(n, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError(f"{what} is not valid UTF-8", ResponseCode.INVALID_HANDLE) from e


def _handles(r: Reader, what: str) -> tuple[str, ...]:
    return tuple(read_handle(r, what) for _ in range(r.count(what, 4)))


class Body(Protocol):
    def write(self, w: Writer, version: Version) -> None: ...


@dataclass(frozen=True, slots=True)
class _Handle:
    """Shared layout: the body is one handle."""

    handle: str

    def write(self, w: Writer, version: Version) -> None:
        w.text(self.handle)

    @classmethod
    def read(cls, r: Reader, version: Version) -> Self:
        return cls(read_handle(r))


class GenericRequest(_Handle):
    """GET_SITE_INFO, DELETE_HANDLE, HOME_NA, UNHOME_NA, SESSION_TERMINATE, txn-id, backup."""

    __slots__ = ()


class ListHandlesRequest(_Handle):
    """LIST_HANDLES (handle = the prefix handle ``0.NA/x``) and LIST_HOMED_NAS."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class ResolutionRequest:
    """Handle, index filter, type filter; then, from Teleinfo's id-pointer-sdk only, ``auth``.

    The SDK (``Encoder.encodeResolutionRequest``) appends one more length-prefixed field to every
    resolution: empty (four zero bytes), or the UTF-8 identity token of ``resolveHandle(…,
    authString)``, which also sets the RECU_AUTH op flag. Handle.Net's decoder stops after the
    types and ignores the rest; we read the field when the rest is exactly one such field, and
    otherwise ignore the rest too. ``auth`` is None when there was no such field."""

    handle: str
    indexes: tuple[int, ...] = ()
    types: tuple[str, ...] = ()
    auth: bytes | None = None

    def write(self, w: Writer, version: Version) -> None:
        w.text(self.handle).int_array(self.indexes).text_array(self.types)
        if self.auth is not None:
            w.blob(self.auth)

    @classmethod
    def read(cls, r: Reader, version: Version) -> Self:
        handle = read_handle(r)
        indexes = tuple(r.int_array("requested indexes"))
        types = tuple(r.text("requested type", 1024) for _ in range(r.count("requested types", 4)))
        auth = None
        if r.remaining >= 4:
            start = r.pos
            n = r.u32()
            if n == r.remaining:
                auth = r.raw(n, "auth field")
            else:
                r.pos = start  # not the SDK's field: ignored, like any other trailing bytes
        return cls(handle, indexes, types, auth)


def is_sdk_resolution(data: bytes) -> bool:
    """Whether a complete request message (envelope first) is a resolution carrying
    id-pointer-sdk's auth field: how a server tells that client apart without decoding the rest
    (it pools TCP channels and reuses them without the KA flag)."""
    if len(data) < 48 or data[20:24] != b"\0\0\0\x01" or data[24:28] != bytes(4):
        return False
    end = 44 + int.from_bytes(data[40:44], "big")
    try:
        return ResolutionRequest.read(Reader(data, 44, min(end, len(data))), (2, 11)).auth is not None
    except ProtocolError:
        return False


@dataclass(frozen=True, slots=True)
class _HandleAndValues:
    handle: str
    values: tuple[HandleValue, ...] = ()

    def write(self, w: Writer, version: Version) -> None:
        w.text(self.handle)
        write_values(w, self.values)

    @classmethod
    def read(cls, r: Reader, version: Version) -> Self:
        return cls(read_handle(r), read_values(r))


class CreateHandleRequest(_HandleAndValues):
    __slots__ = ()


class AddValueRequest(_HandleAndValues):
    __slots__ = ()


class ModifyValueRequest(_HandleAndValues):
    __slots__ = ()


class ResolutionResponse(_HandleAndValues):
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class RemoveValueRequest:
    handle: str
    indexes: tuple[int, ...] = ()

    def write(self, w: Writer, version: Version) -> None:
        w.text(self.handle).int_array(self.indexes)

    @classmethod
    def read(cls, r: Reader, version: Version) -> Self:
        return cls(read_handle(r), tuple(r.int_array("indexes")))


@dataclass(frozen=True, slots=True)
class ChallengeAnswerRequest:
    """OC_RESPONSE_TO_CHALLENGE: who the client claims to be and its answer to the nonce."""

    auth_type: str  # "HS_PUBKEY" or "HS_SECKEY"
    identity_handle: str
    identity_index: int
    signed_response: bytes

    def write(self, w: Writer, version: Version) -> None:
        w.text(self.auth_type).text(self.identity_handle).i32(self.identity_index).blob(self.signed_response)

    @classmethod
    def read(cls, r: Reader, version: Version) -> Self:
        return cls(r.text("auth type", 64), read_handle(r, "identity handle"), r.i32(), r.blob("answer"))


@dataclass(frozen=True, slots=True)
class LoginRequest:
    """OC_LOGIN_ID_SYSTEM (2001, Teleinfo SDK ``MsgConverter.convertLoginIDSystemReqToBytes``):
    the identity handle and its index; the server answers with a challenge for that identity."""

    handle: str
    index: int

    def write(self, w: Writer, version: Version) -> None:
        w.text(self.handle).i32(self.index)

    @classmethod
    def read(cls, r: Reader, version: Version) -> Self:
        return cls(read_handle(r, "identity handle"), r.i32())


@dataclass(frozen=True, slots=True)
class VerifyChallengeRequest:
    """OC_VERIFY_CHALLENGE: ask the identity's home server whether an HS_SECKEY answer is right."""

    handle: str
    index: int
    nonce: bytes
    digest: RequestDigest  # Handle.Net sends it length-prefixed (alg 0)
    signed_response: bytes

    def write(self, w: Writer, version: Version) -> None:
        w.text(self.handle).i32(self.index).blob(self.nonce)
        write_digest(w, self.digest)
        w.blob(self.signed_response)

    @classmethod
    def read(cls, r: Reader, version: Version) -> Self:
        return cls(read_handle(r), r.i32(), r.blob("nonce", 1024), read_digest(r), r.blob("answer"))


@dataclass(frozen=True, slots=True)
class VerifyChallengeResponse:
    valid: bool

    def write(self, w: Writer, version: Version) -> None:
        w.u8(1 if self.valid else 0)

    @classmethod
    def read(cls, r: Reader, version: Version) -> Self:
        b = r.u8()
        if b > 1:
            raise ProtocolError(f"verify response byte {b:#x} is neither 0 nor 1")
        return cls(b == 1)


# Session key-exchange modes (Handle.Net Common.KEY_EXCHANGE_*).
KEY_EXCHANGE_CIPHER_CLIENT = 1
KEY_EXCHANGE_CIPHER_SERVER = 2
KEY_EXCHANGE_CIPHER_HDL = 3
KEY_EXCHANGE_DH = 4


def _skip_session_pad(r: Reader) -> None:
    """Handle.Net counts the int2 mode as 4 bytes in the body length, so its session bodies end
    in 2 zero bytes; accept them (and their absence) so both its and our bodies decode."""
    if r.remaining == 2:
        pad = r.raw(2)
        if pad != b"\0\0":
            raise ProtocolError("trailing bytes after session body")


@dataclass(frozen=True, slots=True)
class SessionSetupRequest:
    mode: int
    timeout: int
    identity_handle: str = ""
    identity_index: int = 0
    public_key: bytes = b""  # modes 1 and 4: the client's key (HS_PUBKEY format)
    exchange_key_handle: str = ""  # mode 3
    exchange_key_index: int = 0

    def write(self, w: Writer, version: Version) -> None:
        w.u16(self.mode).i32(self.timeout).text(self.identity_handle).i32(self.identity_index)
        if self.mode in (KEY_EXCHANGE_CIPHER_CLIENT, KEY_EXCHANGE_DH):
            w.blob(self.public_key)
        elif self.mode == KEY_EXCHANGE_CIPHER_HDL:
            w.text(self.exchange_key_handle).i32(self.exchange_key_index)
        w.raw(b"\0\0")  # Handle.Net's body length quirk, reproduced

    @classmethod
    def read(cls, r: Reader, version: Version) -> Self:
        mode, timeout = r.u16(), r.i32()
        ident, index = read_handle(r, "identity handle"), r.i32()
        key, xh, xi = b"", "", 0
        if mode in (KEY_EXCHANGE_CIPHER_CLIENT, KEY_EXCHANGE_DH):
            key = r.blob("exchange key")
        elif mode == KEY_EXCHANGE_CIPHER_HDL:
            xh, xi = read_handle(r, "exchange key handle"), r.i32()
        elif mode != KEY_EXCHANGE_CIPHER_SERVER:
            raise ProtocolError(
                f"unknown key exchange mode {mode}", ResponseCode.INVALID_SESSIONSETUP_REQUEST
            )
        _skip_session_pad(r)
        return cls(mode, timeout, ident, index, key, xh, xi)


@dataclass(frozen=True, slots=True)
class SessionSetupResponse:
    mode: int
    data: bytes

    def write(self, w: Writer, version: Version) -> None:
        w.u16(self.mode).blob(self.data).raw(b"\0\0")

    @classmethod
    def read(cls, r: Reader, version: Version) -> Self:
        body = cls(r.u16(), r.blob("session data"))
        _skip_session_pad(r)
        return body


@dataclass(frozen=True, slots=True)
class SessionExchangeKeyRequest:
    encrypted_key: bytes | None = None

    def write(self, w: Writer, version: Version) -> None:
        if self.encrypted_key is not None:
            w.blob(self.encrypted_key)

    @classmethod
    def read(cls, r: Reader, version: Version) -> Self:
        return cls(r.blob("session key") if r.remaining else None)


@dataclass(frozen=True, slots=True)
class SiteInfoResponse:
    site: SiteInfo

    def write(self, w: Writer, version: Version) -> None:
        w.raw(encode_site(self.site))

    @classmethod
    def read(cls, r: Reader, version: Version) -> Self:
        return cls(decode_site(r.raw(r.remaining, "site info")))


@dataclass(frozen=True, slots=True)
class CreateHandleResponse:
    """Success of CREATE_HANDLE; carries the handle when the server minted its suffix."""

    handle: str | None = None

    def write(self, w: Writer, version: Version) -> None:
        if self.handle is not None:
            w.text(self.handle)

    @classmethod
    def read(cls, r: Reader, version: Version) -> Self:
        return cls(read_handle(r) if r.remaining else None)


@dataclass(frozen=True, slots=True)
class ListHandlesResponse:
    handles: tuple[str, ...] = ()

    def write(self, w: Writer, version: Version) -> None:
        w.text_array(self.handles)

    @classmethod
    def read(cls, r: Reader, version: Version) -> Self:
        return cls(_handles(r, "handles"))


@dataclass(frozen=True, slots=True)
class ListHomedNAsResponse:
    prefixes: tuple[str, ...] = ()

    def write(self, w: Writer, version: Version) -> None:
        w.text_array(self.prefixes)

    @classmethod
    def read(cls, r: Reader, version: Version) -> Self:
        return cls(_handles(r, "prefixes"))


@dataclass(frozen=True, slots=True)
class NextTxnIdResponse:
    txn_id: int

    def write(self, w: Writer, version: Version) -> None:
        w.u32(self.txn_id >> 32).u32(self.txn_id)

    @classmethod
    def read(cls, r: Reader, version: Version) -> Self:
        return cls((r.u32() << 32) | r.u32())


@dataclass(frozen=True, slots=True)
class OpaqueBody:
    """Handle.Net replication bodies (RETRIEVE_TXN_LOG, DUMP_HANDLES): carried, not interpreted."""

    data: bytes = b""

    def write(self, w: Writer, version: Version) -> None:
        w.raw(self.data)

    @classmethod
    def read(cls, r: Reader, version: Version) -> Self:
        return cls(r.raw(r.remaining))


@dataclass(frozen=True, slots=True)
class EmptyBody:
    """A success with nothing to say (delete, add/modify/remove value, home/unhome, …)."""

    def write(self, w: Writer, version: Version) -> None:
        pass

    @classmethod
    def read(cls, r: Reader, version: Version) -> Self:
        return cls()


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    message: str = ""

    def write(self, w: Writer, version: Version) -> None:
        w.text(self.message)

    @classmethod
    def read(cls, r: Reader, version: Version) -> Self:
        if version < (2, 1) and r.remaining < 4:  # old peers may omit it
            return cls("")
        return cls(r.text("error message"))


@dataclass(frozen=True, slots=True)
class ServiceReferral:
    """302/303: where to go instead; the values (HS_SITE/HS_SERV) are optional on the wire."""

    handle: str
    values: tuple[HandleValue, ...] | None = None

    def write(self, w: Writer, version: Version) -> None:
        w.text(self.handle)
        if self.values is not None:
            write_values(w, self.values)

    @classmethod
    def read(cls, r: Reader, version: Version) -> Self:
        handle = read_handle(r)
        return cls(handle, read_values(r) if r.remaining else None)


@dataclass(frozen=True, slots=True)
class ChallengeResponse:
    """402 AUTHENTICATION_NEEDED: the nonce; the request digest rides in ``Message.request_digest``."""

    nonce: bytes
    NONCE_SIZE: ClassVar[int] = 16

    def write(self, w: Writer, version: Version) -> None:
        w.blob(self.nonce)

    @classmethod
    def read(cls, r: Reader, version: Version) -> Self:
        return cls(r.blob("nonce", 1024))


BodyType = type[
    GenericRequest
    | ListHandlesRequest
    | ResolutionRequest
    | CreateHandleRequest
    | AddValueRequest
    | ModifyValueRequest
    | ResolutionResponse
    | RemoveValueRequest
    | ChallengeAnswerRequest
    | LoginRequest
    | VerifyChallengeRequest
    | VerifyChallengeResponse
    | SessionSetupRequest
    | SessionSetupResponse
    | SessionExchangeKeyRequest
    | SiteInfoResponse
    | CreateHandleResponse
    | ListHandlesResponse
    | ListHomedNAsResponse
    | NextTxnIdResponse
    | OpaqueBody
    | EmptyBody
    | ErrorResponse
    | ServiceReferral
    | ChallengeResponse
]

REQUEST_BODIES: dict[int, BodyType] = {
    OpCode.RESOLUTION: ResolutionRequest,
    OpCode.GET_SITE_INFO: GenericRequest,
    OpCode.CREATE_HANDLE: CreateHandleRequest,
    OpCode.DELETE_HANDLE: GenericRequest,
    OpCode.ADD_VALUE: AddValueRequest,
    OpCode.REMOVE_VALUE: RemoveValueRequest,
    OpCode.MODIFY_VALUE: ModifyValueRequest,
    OpCode.LIST_HANDLES: ListHandlesRequest,
    OpCode.RESPONSE_TO_CHALLENGE: ChallengeAnswerRequest,
    OpCode.VERIFY_CHALLENGE: VerifyChallengeRequest,
    OpCode.HOME_NA: GenericRequest,
    OpCode.UNHOME_NA: GenericRequest,
    OpCode.LIST_HOMED_NAS: ListHandlesRequest,
    OpCode.SESSION_SETUP: SessionSetupRequest,
    OpCode.SESSION_TERMINATE: GenericRequest,
    OpCode.SESSION_EXCHANGEKEY: SessionExchangeKeyRequest,
    OpCode.GET_NEXT_TXN_ID: GenericRequest,
    OpCode.RETRIEVE_TXN_LOG: OpaqueBody,
    OpCode.DUMP_HANDLES: OpaqueBody,
    OpCode.BACKUP_SERVER: GenericRequest,
    OpCode.LOGIN_ID_SYSTEM: LoginRequest,
}

SUCCESS_BODIES: dict[int, BodyType] = {
    OpCode.RESOLUTION: ResolutionResponse,
    OpCode.GET_SITE_INFO: SiteInfoResponse,
    OpCode.CREATE_HANDLE: CreateHandleResponse,
    OpCode.DELETE_HANDLE: EmptyBody,
    OpCode.ADD_VALUE: EmptyBody,
    OpCode.REMOVE_VALUE: EmptyBody,
    OpCode.MODIFY_VALUE: EmptyBody,
    OpCode.LIST_HANDLES: ListHandlesResponse,
    OpCode.VERIFY_CHALLENGE: VerifyChallengeResponse,
    OpCode.HOME_NA: EmptyBody,
    OpCode.UNHOME_NA: EmptyBody,
    OpCode.LIST_HOMED_NAS: ListHomedNAsResponse,
    OpCode.SESSION_SETUP: SessionSetupResponse,
    OpCode.SESSION_TERMINATE: EmptyBody,
    OpCode.SESSION_EXCHANGEKEY: EmptyBody,
    OpCode.GET_NEXT_TXN_ID: NextTxnIdResponse,
    OpCode.RETRIEVE_TXN_LOG: OpaqueBody,
    OpCode.DUMP_HANDLES: OpaqueBody,
    OpCode.BACKUP_SERVER: EmptyBody,
    OpCode.LOGIN_ID_SYSTEM: EmptyBody,  # the SDK reads nothing from it
}


def body_type(opcode: int, response_code: int, version: Version) -> BodyType:
    """The body layout of a message, or ProtocolError for an opcode no layout exists for."""
    if response_code == 0:
        table, what = REQUEST_BODIES, "request"
    elif response_code == ResponseCode.SUCCESS:
        table, what = SUCCESS_BODIES, "response"
    elif response_code == ResponseCode.SERVICE_REFERRAL or (
        response_code == ResponseCode.PREFIX_REFERRAL and version >= (2, 5)
    ):
        return ServiceReferral  # before 2.5, 303 was SERVER_BACKUP, an error
    elif response_code == ResponseCode.AUTHENTICATION_NEEDED:
        return ChallengeResponse
    else:
        return ErrorResponse
    found = table.get(opcode)
    if found is None:
        raise ProtocolError(f"unknown opcode {opcode} in {what}", ResponseCode.OPERATION_NOT_SUPPORTED)
    return found
