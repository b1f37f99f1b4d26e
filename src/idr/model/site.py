"""Site information (RFC 3651 §3.2.2 HS_SITE): where a handle service's servers are.

A service is one or more sites (one primary, any number of mirrors); a site is one or
more servers, and handles are spread over a site's servers by hash.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum


class InterfaceType(IntEnum):
    OUT_OF_SERVICE = 0
    ADMIN = 1
    QUERY = 2
    ADMIN_AND_QUERY = 3


class TransportProtocol(IntEnum):
    UDP = 0
    TCP = 1
    HTTP = 2
    HTTPS = 3


class HashOption(IntEnum):
    PREFIX = 0
    SUFFIX = 1
    WHOLE = 2


PRIMARY_MASK = 0x80
MULTI_PRIMARY_MASK = 0x40


@dataclass(frozen=True, slots=True)
class ServerInterface:
    type: InterfaceType
    protocol: TransportProtocol
    port: int


@dataclass(frozen=True, slots=True)
class ServerInfo:
    server_id: int
    address: bytes  # 16 bytes: IPv6, or IPv4 right-aligned in the last four
    public_key: bytes = b""  # HS_PUBKEY-format bytes of the server's signing key
    interfaces: tuple[ServerInterface, ...] = ()

    @property
    def host(self) -> str:
        """Dotted IPv4 when the address is IPv4 (right-aligned or IPv4-mapped), else IPv6 text."""
        import ipaddress

        a = self.address
        if a[:10] == bytes(10) and a[10:12] in (b"\x00\x00", b"\xff\xff"):
            return str(ipaddress.IPv4Address(a[12:]))
        return str(ipaddress.IPv6Address(a))

    def port_for(self, protocol: TransportProtocol) -> int | None:
        for i in self.interfaces:
            if i.protocol == protocol and i.type != InterfaceType.OUT_OF_SERVICE:
                return i.port
        return None


@dataclass(frozen=True, slots=True)
class SiteInfo:
    serial: int = 1
    primary: bool = True
    multi_primary: bool = False
    hash_option: HashOption = HashOption.WHOLE
    hash_filter: str = ""
    attributes: tuple[tuple[str, str], ...] = ()
    servers: tuple[ServerInfo, ...] = ()
    protocol_major: int = 2
    protocol_minor: int = 1
    data_format_version: int = 1

    def attribute(self, name: str) -> str | None:
        for k, v in self.attributes:
            if k == name:
                return v
        return None

    def server_for(self, handle: str) -> ServerInfo:
        """The server of this site responsible for ``handle`` (RFC 3652 §3.3.2, Handle.Net
        ``SiteInfo.determineServerNum``): ``handle_hash`` modulo the number of servers."""
        if not self.servers:
            raise ValueError("site has no servers")
        if len(self.servers) == 1:
            return self.servers[0]
        return self.servers[handle_hash(handle, self.hash_option) % len(self.servers)]


_ASCII_UPPER = bytes.maketrans(b"abcdefghijklmnopqrstuvwxyz", b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def handle_hash(handle: str, option: HashOption = HashOption.WHOLE) -> int:
    """Handle.Net ``SiteInfo.getHandleHash``: MD5 of the hashed part's UTF-8 bytes with ASCII
    letters upper-cased (only those: ``ß`` stays ``ß``), the digest's last four bytes as a
    signed big-endian int, Java ``Math.abs``. A handle without ``/`` has prefix ``0.NA`` and
    is all suffix, as ``Util.getPrefixPart``/``getSuffixPart`` split it.

    Java's ``Math.abs(Integer.MIN_VALUE)`` stays negative (and its modulo then fails in Java);
    for that one hash in 2**32 this returns 2**31, which at least picks a server."""
    prefix, slash, suffix = handle.partition("/")
    if not slash:
        prefix, suffix = "0.NA", handle
    part = {HashOption.PREFIX: prefix, HashOption.SUFFIX: suffix}.get(option, handle)
    digest = hashlib.md5(part.encode("utf-8").translate(_ASCII_UPPER), usedforsecurity=False).digest()
    return abs(int.from_bytes(digest[-4:], "big", signed=True))
