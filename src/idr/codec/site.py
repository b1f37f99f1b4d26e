"""HS_SITE record bytes ⇄ :class:`idr.model.site.SiteInfo` (RFC 3651 §3.2.2).

Layout as Handle.Net 9 ``Encoder.encodeSiteInfoRecord``: the same bytes are an HS_SITE /
HS_SITE.6 / HS_SITE.PREFIX value's data and the body of a GET_SITE_INFO answer.
"""

from __future__ import annotations

from typing import TypeVar

from idr.codec.wire import ProtocolError, Reader, Writer
from idr.model.errors import ResponseCode
from idr.model.site import (
    MULTI_PRIMARY_MASK,
    PRIMARY_MASK,
    HashOption,
    InterfaceType,
    ServerInfo,
    ServerInterface,
    SiteInfo,
    TransportProtocol,
)

ADDRESS_LENGTH = 16
_MIN_SERVER_SIZE = 4 + ADDRESS_LENGTH + 4 + 4
_INTERFACE_SIZE = 6


def encode_site(site: SiteInfo) -> bytes:
    w = Writer().u16(site.data_format_version).u8(site.protocol_major).u8(site.protocol_minor)
    w.u16(site.serial)
    w.u8((PRIMARY_MASK if site.primary else 0) | (MULTI_PRIMARY_MASK if site.multi_primary else 0))
    w.u8(int(site.hash_option)).text(site.hash_filter)
    w.u32(len(site.attributes))
    for name, value in site.attributes:
        w.text(name).text(value)
    w.u32(len(site.servers))
    for s in site.servers:
        if len(s.address) > ADDRESS_LENGTH:
            raise ValueError(f"server address of {len(s.address)} bytes")
        # Right-aligned, as Handle.Net writes a 4-byte IPv4 address.
        w.i32(s.server_id).raw(bytes(ADDRESS_LENGTH - len(s.address)) + s.address).blob(s.public_key)
        w.u32(len(s.interfaces))
        for i in s.interfaces:
            w.u8(int(i.type)).u8(int(i.protocol)).i32(i.port)
    return w.getvalue()


_E = TypeVar("_E", InterfaceType, TransportProtocol, HashOption)


def _enum(cls: type[_E], v: int, what: str) -> _E:
    try:
        return cls(v)
    except ValueError:
        raise ProtocolError(f"unknown {what} {v}", ResponseCode.INVALID_VALUE) from None


def _read_server(r: Reader) -> ServerInfo:
    server_id = r.i32()
    address = r.raw(ADDRESS_LENGTH, "server address")
    public_key = r.blob("server public key")
    interfaces = tuple(
        ServerInterface(
            _enum(InterfaceType, r.u8(), "interface type"),
            _enum(TransportProtocol, r.u8(), "interface protocol"),
            r.i32(),
        )
        for _ in range(r.count("interfaces", _INTERFACE_SIZE))
    )
    return ServerInfo(server_id, address, public_key, interfaces)


def decode_site(data: bytes) -> SiteInfo:
    """Strict: every byte accounted for; a malformed record is INVALID_VALUE."""
    r = Reader(data)
    try:
        fmt, major, minor, serial, mask, hash_opt = r.u16(), r.u8(), r.u8(), r.u16(), r.u8(), r.u8()
        hash_filter = r.text("hash filter", 1024)
        attributes = tuple(
            (r.text("attribute name"), r.text("attribute value")) for _ in range(r.count("attributes", 8))
        )
        servers = tuple(_read_server(r) for _ in range(r.count("servers", _MIN_SERVER_SIZE)))
        r.expect_end("site info")
    except ProtocolError as e:
        raise ProtocolError(f"malformed HS_SITE data: {e.message}", ResponseCode.INVALID_VALUE) from e
    return SiteInfo(
        serial=serial,
        primary=bool(mask & PRIMARY_MASK),
        multi_primary=bool(mask & MULTI_PRIMARY_MASK),
        hash_option=_enum(HashOption, hash_opt, "hash option"),
        hash_filter=hash_filter,
        attributes=attributes,
        servers=servers,
        protocol_major=major,
        protocol_minor=minor,
        data_format_version=fmt,
    )
