"""A site of several servers: the Handle System's own way to spread one service over machines.

A site's HS_SITE lists N servers; a client sends a request about handle ``h`` to server
``SiteInfo.server_for(h)`` (RFC 3652 §3.3.2, Handle.Net ``SiteInfo.determineServerNum``), and
each server holds, in its own store, the handles that hash to it — its *share*. A server asked
about a handle outside its share answers ``301 SERVER_NOT_RESPONSIBLE`` "Request was hashed
incorrectly", as Handle.Net's ``HandleServer.errorIfNotHaveHandle`` does, unless the request
came from a front-end whose clients do not hash (HTTP): those requests are *relayed* to the
owning server over the site's link and its answer returned (see ``idr.site``).

What is hashed: handles under homed prefixes and prefix handles (``0.NA/…``). What is not:
a server's own records under reserved prefixes (``0.HOMED/…`` — every server homes the
site's prefixes, as every Handle.Net server of a site keeps its own ``haveNA`` —, the
prefix lifecycle's and statistics' records), which stay with the server that wrote them.

The rules only (no sockets): which server owns a handle, and the :class:`Peers` interface
through which the core reads another server's records (identities, admin groups, parent
prefix handles: authorisation needs them wherever the request lands) and relays requests.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from idr.core.request import Request, Response
from idr.model.site import (
    HashOption,
    InterfaceType,
    ServerInfo,
    ServerInterface,
    SiteInfo,
    TransportProtocol,
)
from idr.model.value import HandleRecord

WRONG_SERVER = "Request was hashed incorrectly"  # Handle.Net HandleServer.MSG_WRONG_SERVER_HASH
HASH_OPTIONS = {"whole": HashOption.WHOLE, "prefix": HashOption.PREFIX, "suffix": HashOption.SUFFIX}


class SpecError(ValueError):
    """A server of a site written wrongly (``HOST:PORT[,http=P][,https=P][,link=P]``)."""


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """One server of a site as idr.toml and ``idr init --site-server`` write it:
    ``HOST:NATIVE[,http=P][,https=P][,link=P]`` — its Handle protocol (UDP+TCP) address, its
    HTTP and HTTPS ports, and the port of the site link the site's servers talk over."""

    host: str
    native: int
    http: int = 0
    https: int = 0
    link: int = 0

    @classmethod
    def parse(cls, text: str) -> ServerSpec:
        head, *opts = [p.strip() for p in text.split(",")]
        host, sep, port = head.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit():
            raise SpecError(f"a site server is HOST:PORT[,http=P][,https=P][,link=P], not {text!r}")
        try:
            ipaddress.ip_address(host)
        except ValueError as e:
            raise SpecError(f"{text!r}: the host must be an IP address (HS_SITE holds addresses)") from e
        ports = {"native": int(port)}
        for opt in opts:
            name, eq, value = opt.partition("=")
            if not eq or name not in ("http", "https", "link") or not value.isdigit():
                raise SpecError(f"{text!r}: {opt!r} is not http=P, https=P or link=P")
            ports[name] = int(value)
        if any(not 0 < p < 65536 for p in ports.values()):
            raise SpecError(f"{text!r}: ports are 1–65535")
        return cls(host, **ports)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        opts = [f"{n}={p}" for n, p in (("http", self.http), ("https", self.https), ("link", self.link)) if p]
        return ",".join([f"{host}:{self.native}", *opts])


def server_info(
    server_id: int,
    host: str,
    *,
    native: int | None = None,
    http: int | None = None,
    https: int | None = None,
    public_key: bytes = b"",
) -> ServerInfo:
    """One server's HS_SITE entry, as Handle.Net's ``hdl-setup-server`` makes it: TCP for
    administration and queries, UDP for queries only (hdllib sends a request to the first
    interface that admits it, and idr refuses writes over UDP), HTTP for queries, HTTPS both."""
    ifaces: list[ServerInterface] = []
    if native:
        ifaces.append(ServerInterface(InterfaceType.ADMIN_AND_QUERY, TransportProtocol.TCP, native))
        ifaces.append(ServerInterface(InterfaceType.QUERY, TransportProtocol.UDP, native))
    if http:
        ifaces.append(ServerInterface(InterfaceType.QUERY, TransportProtocol.HTTP, http))
    if https:
        ifaces.append(ServerInterface(InterfaceType.ADMIN_AND_QUERY, TransportProtocol.HTTPS, https))
    packed = ipaddress.ip_address(host).packed
    addr = bytes(16 - len(packed)) + packed  # IPv4 right-aligned in 16 bytes, as on the wire
    return ServerInfo(server_id, addr, public_key, tuple(ifaces))


@dataclass(frozen=True, slots=True)
class SiteShare:
    """This server's place in its site: the site (every server, in HS_SITE order — the hash
    depends on the order) and which of them this server is."""

    site: SiteInfo
    index: int
    relay_native: bool = False  # relay native requests too (while clients hold an old HS_SITE)

    def __post_init__(self) -> None:
        if not 0 <= self.index < len(self.site.servers):
            raise ValueError(f"server index {self.index} is not in a site of {len(self.site.servers)}")

    @property
    def size(self) -> int:
        return len(self.site.servers)

    def owner(self, handle: str) -> int:
        """The index of the server holding ``handle`` (the protocol's hash: ``server_for``)."""
        return self.site.servers.index(self.site.server_for(handle))

    def owns(self, handle: str) -> bool:
        return self.owner(handle) == self.index


class Peers(Protocol):
    """The other servers of this site, as the core reaches them (``idr.site.SitePeers``).
    Calls block (network); the core makes them off the event loop, as it reads a store."""

    def cached(self, index: int, key: str) -> object:
        """A fresh copy of ``key`` read from server ``index`` earlier, None if it was absent,
        or ``idr.store.cache.MISSING`` when nothing fresh is held."""

    def get(self, index: int, keys: Sequence[str]) -> dict[str, HandleRecord | None]:
        """The records ``keys`` (normalised) as server ``index`` holds them (None: absent)."""

    def call(self, index: int, req: Request) -> Response:
        """``req`` answered by server ``index`` as its own (it does not relay it further)."""


__all__ = ["WRONG_SERVER", "Peers", "ServerSpec", "SiteShare", "SpecError", "server_info"]
