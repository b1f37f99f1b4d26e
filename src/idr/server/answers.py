"""Native protocol ⇄ core: a decoded request ``Message`` becomes a core ``Request``, and the core's
``Response`` becomes the response message(s) Handle.Net would send.

No rules live here (the core owns them); only the mapping, with the reference server's wire habits:
responses echo the request's ids, expiration and flags (RD dropped, AT added on a primary), carry
our site serial, and a HANDLE_NOT_FOUND has an empty message (``HandleServer`` sends ``null``).
Lists go out 50 names per message with CN on every part but the last
(``HandleServer.LIST_HANDLES_PER_MSG``, ``doListHandles``).
"""

from __future__ import annotations

from dataclasses import replace

from idr.codec.bodies import (
    AddValueRequest,
    Body,
    CreateHandleRequest,
    CreateHandleResponse,
    EmptyBody,
    ErrorResponse,
    GenericRequest,
    ListHandlesRequest,
    ListHandlesResponse,
    ListHomedNAsResponse,
    ModifyValueRequest,
    RemoveValueRequest,
    ResolutionRequest,
    ResolutionResponse,
    ServiceReferral,
    SiteInfoResponse,
)
from idr.codec.envelope import ENVELOPE_SIZE, HEADER_SIZE, PROTOCOL_MAJOR, PROTOCOL_MINOR, OpCode, OpFlag
from idr.codec.message import Message, encode_message, response_to
from idr.core.request import Op, Request, Response
from idr.model.errors import ResponseCode
from idr.model.handle import prefix_handle
from idr.model.site import SiteInfo
from idr.model.value import ValueReference

LIST_PER_MESSAGE = 50  # Handle.Net HandleServer.LIST_HANDLES_PER_MSG

# Opcodes Handle.Net counts as administration (``Interface.canProcessMsg``).
ADMIN_OPS = frozenset(
    {
        OpCode.GET_NEXT_TXN_ID,
        OpCode.HOME_NA,
        OpCode.UNHOME_NA,
        OpCode.LIST_HOMED_NAS,
        OpCode.BACKUP_SERVER,
        OpCode.CREATE_HANDLE,
        OpCode.DELETE_HANDLE,
        OpCode.ADD_VALUE,
        OpCode.REMOVE_VALUE,
        OpCode.MODIFY_VALUE,
        OpCode.LIST_HANDLES,
        OpCode.RETRIEVE_TXN_LOG,
        OpCode.DUMP_HANDLES,
    }
)
# Opcodes that stream several answers or set up per-connection state: never over UDP
# (``Interface.canHandleRequest``: "streaming" / "requiresConnection"). Session setup, key
# exchange and terminate are not among them: hdllib sends them to the first query interface,
# UDP, and the reference server answers them there.
CONNECTION_OPS = frozenset(
    {
        OpCode.LIST_HANDLES,
        OpCode.LIST_HOMED_NAS,
        OpCode.RETRIEVE_TXN_LOG,
        OpCode.DUMP_HANDLES,
        OpCode.LOGIN_ID_SYSTEM,  # its session belongs to the connection (server.native_sessions)
    }
)


_GENERIC_OPS: dict[int, Op] = {
    OpCode.GET_SITE_INFO: Op.GET_SITE_INFO,
    OpCode.DELETE_HANDLE: Op.DELETE_HANDLE,
    OpCode.HOME_NA: Op.HOME_NA,
    OpCode.UNHOME_NA: Op.UNHOME_NA,
}


def zero_na(handle: str) -> str:
    """A handle without a slash names a prefix: ``88.100`` → ``0.NA/88.100``, as Handle.Net's
    server reads it (``Util.convertSlashlessHandleToZeroNaHandle``; the core already takes bare
    prefixes for home, unhome and list). Teleinfo's SDK resolves prefixes that way."""
    return handle if "/" in handle or not handle else f"0.NA/{handle}"


def to_request(msg: Message, identity: ValueReference | None = None) -> Request | None:
    """The core request for ``msg``; None when the core has no such operation. Native clients
    pick a multi-server site's server by the hash themselves: never relayed (``Request.relay``)."""
    req = _request(msg, identity)
    return None if req is None else replace(req, relay=False)


def _request(msg: Message, identity: ValueReference | None) -> Request | None:
    body = msg.body
    flags = msg.opflags
    match body:
        case ResolutionRequest(handle=h, indexes=ix, types=ty) if msg.opcode == OpCode.RESOLUTION:
            return Request(
                Op.RESOLUTION,
                zero_na(h),
                ix,
                ty,
                identity=identity,
                public_only=bool(flags & OpFlag.PO),
                authoritative=bool(flags & OpFlag.AT),
            )
        case CreateHandleRequest(handle=h, values=vals):
            return Request(
                Op.CREATE_HANDLE,
                h,
                values=vals,
                identity=identity,
                overwrite=bool(flags & OpFlag.OVRW),
                mint=bool(flags & OpFlag.MINT),
            )
        case AddValueRequest(handle=h, values=vals):
            return Request(
                Op.ADD_VALUE, h, values=vals, identity=identity, overwrite=bool(flags & OpFlag.OVRW)
            )
        case ModifyValueRequest(handle=h, values=vals):
            return Request(Op.MODIFY_VALUE, h, values=vals, identity=identity)
        case RemoveValueRequest(handle=h, indexes=ix):
            return Request(Op.REMOVE_VALUE, h, indexes=ix, identity=identity)
        case ListHandlesRequest(handle=h):
            op = Op.LIST_HANDLES if msg.opcode == OpCode.LIST_HANDLES else Op.LIST_HOMED_NAS
            return Request(op, h, identity=identity)
        case GenericRequest(handle=h):
            simple = _GENERIC_OPS.get(msg.opcode)
            return None if simple is None else Request(simple, h, identity=identity)
    return None


class Answerer:
    """Builds response messages for one node (its site serial and primary flag)."""

    def __init__(self, site: SiteInfo | None) -> None:
        self.serial = (
            site.serial if site is not None else 1
        )  # HN: response.siteInfoSerial = thisSite.serialNumber
        self.primary = site is None or site.primary

    def _flags(self, request: Message, extra: int = 0) -> int:
        flags = request.opflags & ~(OpFlag.RD | OpFlag.CN | OpFlag.AT)
        if self.primary:
            flags |= OpFlag.AT
        return flags | extra

    def message(self, request: Message, code: int, body: Body, *, extra_flags: int = 0) -> Message:
        return response_to(
            request, code, body, opflags=self._flags(request, extra_flags), site_info_serial=self.serial
        )

    def error(self, request: Message, code: int, text: str = "") -> Message:
        if code == ResponseCode.HANDLE_NOT_FOUND:
            text = ""  # byte-exact with the reference: HandleServer sends a null message
        return self.message(request, code, ErrorResponse(text))

    def answer(self, request: Message, resp: Response) -> list[Message]:
        """Response message(s) for the core's answer to ``request`` (several only for lists)."""
        code = int(resp.code)
        if code in (ResponseCode.SERVICE_REFERRAL, ResponseCode.PREFIX_REFERRAL):
            return [self.message(request, code, ServiceReferral(resp.handle, resp.values or None))]
        if code != ResponseCode.SUCCESS:
            return [self.error(request, code, resp.message)]
        op = request.opcode
        if op == OpCode.RESOLUTION:
            # the handle as asked (``88.100`` stays ``88.100``), as HandleServer answers
            asked = request.body.handle if isinstance(request.body, ResolutionRequest) else resp.handle
            return [self.message(request, code, ResolutionResponse(asked, resp.values))]
        if op == OpCode.GET_SITE_INFO:
            site = resp.extra.get("site")
            if not isinstance(site, SiteInfo):
                return [self.error(request, ResponseCode.ERROR, "no site info")]
            return [self.message(request, code, SiteInfoResponse(site))]
        if op == OpCode.CREATE_HANDLE:
            minted = resp.handle if request.opflags & OpFlag.MINT else None
            return [self.message(request, code, CreateHandleResponse(minted))]
        if op in (OpCode.LIST_HANDLES, OpCode.LIST_HOMED_NAS):
            names = resp.handles
            if op == OpCode.LIST_HOMED_NAS:
                names = tuple(prefix_handle(p) for p in names)
            return self._parts(request, names)
        return [self.message(request, code, EmptyBody())]

    def _parts(self, request: Message, names: tuple[str, ...]) -> list[Message]:
        cls = ListHandlesResponse if request.opcode == OpCode.LIST_HANDLES else ListHomedNAsResponse
        chunks = [names[i : i + LIST_PER_MESSAGE] for i in range(0, len(names), LIST_PER_MESSAGE)] or [()]
        out = []
        for i, chunk in enumerate(chunks):
            more = OpFlag.CN if i < len(chunks) - 1 else 0
            body = ListHandlesResponse(chunk) if cls is ListHandlesResponse else ListHomedNAsResponse(chunk)
            out.append(self.message(request, ResponseCode.SUCCESS, body, extra_flags=more))
        return out


def bare_error(data: bytes, code: int, text: str) -> bytes | None:
    """An OC_RESERVED error for bytes that did not decode (``HdlUdpRequestHandler``: decode
    failures answer with opcode 0). None when not even the envelope is usable: drop it."""
    if len(data) < ENVELOPE_SIZE or data[0] != PROTOCOL_MAJOR:
        return None
    request_id = int.from_bytes(data[8:12], "big")
    minor = data[1]
    smajor, sminor = data[2] & 0x03, data[3]
    theirs = (smajor, sminor) if smajor else (PROTOCOL_MAJOR, minor)
    major, minor = min(theirs, (PROTOCOL_MAJOR, PROTOCOL_MINOR))
    expiration = int.from_bytes(data[36:40], "big") if len(data) >= ENVELOPE_SIZE + HEADER_SIZE else 0
    msg = Message(
        OpCode.RESERVED,
        ErrorResponse(text),
        code,
        0,
        request_id,
        0,
        major,
        minor,
        expiration=expiration,
        site_info_serial=1,
    )
    return encode_message(msg)
