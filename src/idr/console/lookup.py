"""Resolution as the console shows it: values made readable, the trace across nodes, the supply chain.

The console resolves the way the federation does, with the recursive node's own engine
(:class:`idr.resolver.recursive.RecursiveResolver`) — there is one referral walker in the
code base. A recursive node's console uses its engine directly; any other node answers
from its own store first and, when it refers (302/303) or holds nothing for the identifier
(301), the engine continues from that referral or from the top service, timing every hop,
so an operator sees *where* an answer came from and what each step cost. Queries to this
node's own listeners are answered in-process (:class:`LocalFirst`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from idr.codec import rest
from idr.codec.site import decode_site
from idr.codec.values import decode_admin, decode_vlist
from idr.core.interface import Core
from idr.core.request import Op, Request, Response
from idr.model.errors import HandleError, ResponseCode
from idr.model.site import ServerInfo, SiteInfo
from idr.model.value import AdminPermission, HandleValue
from idr.resolver.recursive import REFERRALS, RecursiveResolver, Transport, reference_of, server_address
from idr.resolver.recursive import Hop as WalkHop
from idr.resolver.recursive import Resolution as Walked

MAX_ALIAS_HOPS = 4  # as converged resolution and ``idr resolve`` follow a scheme name's HS_ALIAS


# --------------------------------------------------------------------------- display of values


@dataclass
class ShownValue:
    """One value as the values table renders it; ``kind`` picks the cell's layout."""

    index: int
    type: str
    kind: str  # url | handle | admin | site | vlist | text | binary
    text: str
    ttl: int
    timestamp: int
    detail: dict[str, Any] = field(default_factory=dict)


def _perm_names(mask: int) -> list[str]:
    return [p.name.lower() for p in AdminPermission if p != AdminPermission.ALL and mask & p and p.name]


def _site_detail(site: SiteInfo) -> dict[str, Any]:
    servers = []
    for srv in site.servers:
        ports = [f"{i.protocol.name.lower()}:{i.port}" for i in srv.interfaces]
        servers.append({"id": srv.server_id, "host": srv.host, "ports": ", ".join(ports)})
    return {
        "primary": site.primary,
        "serial": site.serial,
        "desc": site.attribute("desc") or "",
        "servers": servers,
    }


def show_value(v: HandleValue) -> ShownValue:
    t = v.type.upper()

    def shown(kind: str, text: str, detail: dict[str, Any] | None = None) -> ShownValue:
        return ShownValue(v.index, v.type, kind, text, v.ttl, v.timestamp, detail or {})

    try:
        if t == "HS_ADMIN":
            a = decode_admin(v.data)
            perms = {"perms": _perm_names(a.permissions), "mask": f"{a.permissions:012b}"}
            return shown("admin", f"{a.index}:{a.handle}", perms)
        if t.startswith("HS_SITE"):
            return shown("site", "", _site_detail(decode_site(v.data)))
        if t == "HS_VLIST":
            return shown("vlist", ", ".join(str(r) for r in decode_vlist(v.data)))
    except HandleError:  # undecodable structured data is shown as bytes below, as the REST API does
        pass
    if t == "HS_SECKEY":
        return shown("text", "••••••")
    if not rest.looks_like_text(v.data):
        return shown("binary", v.data[:64].hex() + ("…" if len(v.data) > 64 else ""))
    text = v.data.decode("utf-8")
    if t.startswith("URL") and text.lower().startswith(("http://", "https://")):
        return shown("url", text)
    target = reference_of(v)
    if target is not None:
        return shown("handle", text, {"target": target})
    return shown("text", text)


# --------------------------------------------------------------------------- resolution with a trace


@dataclass
class Hop:
    node: str
    address: str
    code: int
    message: str
    ms: float


@dataclass
class Resolution:
    """One resolution as the resolve page shows it (``aliases``: (alias, target) followed)."""

    query: str
    handle: str
    scheme: str = "handle"
    details: dict[str, str] = field(default_factory=dict)
    code: int = int(ResponseCode.ERROR)
    message: str = ""
    values: tuple[HandleValue, ...] = ()
    hops: list[Hop] = field(default_factory=list)
    aliases: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.code == ResponseCode.SUCCESS

    @property
    def total_ms(self) -> float:
        return sum(h.ms for h in self.hops)

    @classmethod
    def of(cls, query: str, walked: Walked) -> Resolution:
        resp = walked.response
        return cls(
            query=query,
            handle=resp.handle or walked.handle,
            code=int(resp.code),
            message=resp.message,
            values=tuple(v for v in resp.values if v.public_read) if resp.ok else (),
            hops=[
                Hop(h.node, h.server or ("cache" if h.cached else ""), h.code, h.note, h.ms)
                for h in walked.hops
            ],
        )


Walk = Callable[[str], Awaitable[Walked]]


class LocalFirst:
    """A transport that answers queries to this node's own listeners in-process (the top's
    console walking from its own site needs no socket, nor a native listener) and sends
    every other query on through ``inner``."""

    def __init__(self, service: Core, own: Callable[[], set[tuple[str, int]]], inner: Transport) -> None:
        self.service = service
        self.own = own
        self.inner = inner

    async def query(self, server: ServerInfo, request: Request, timeout: float) -> Response:
        if server_address(server) in self.own():
            return await self.service.submit(request)
        return await self.inner.query(server, request, timeout)


def walk_from(service: Core, name: str, engine: RecursiveResolver | None) -> Walk:
    """How a node's console resolves one handle: a recursive node's own walk; any other node
    answers here first, and ``engine`` continues what it refers (302/303) or does not hold (301)."""
    trace = getattr(service, "trace", None)
    if trace is not None:
        recursive: Walk = trace
        return recursive

    async def walk(handle: str) -> Walked:
        t0 = time.perf_counter()
        try:
            resp = await service.submit(Request(Op.RESOLUTION, handle))
        except HandleError as e:
            resp = Response(e.code, handle, message=e.message)
        here = WalkHop(name, "local", handle, int(resp.code), (time.perf_counter() - t0) * 1000)
        here.note = (
            "referral"
            if resp.code in REFERRALS
            else "not held here"
            if resp.code == ResponseCode.SERVER_NOT_RESPONSIBLE
            else ""
        )
        if engine is None or resp.code not in (*REFERRALS, ResponseCode.SERVER_NOT_RESPONSIBLE):
            return Walked(handle, resp, [here])
        if resp.code in REFERRALS:
            onward = await engine.follow(handle, resp)
        else:
            onward = await engine.resolve(handle)
        return Walked(onward.handle, onward.response, [here, *onward.hops], onward.cached)

    return walk


async def following_aliases(walk: Walk, handle: str) -> tuple[Walked, list[tuple[str, str]]]:
    """Resolve ``handle``; a record that is an alias (HS_ALIAS) gives way to its target's
    (bounded), every hop kept. A GS1 key or an Ecode often names a record that has a handle
    of its own: its scheme handle is an alias, and the console shows the one record."""
    res = await walk(handle)
    hops = list(res.hops)
    followed: list[tuple[str, str]] = []
    for _ in range(MAX_ALIAS_HOPS):
        resp = res.response
        alias = next((v for v in resp.values if v.type.upper() == "HS_ALIAS"), None) if resp.ok else None
        if alias is None:
            return Walked(res.handle, resp, hops, res.cached), followed
        target = alias.data.decode("utf-8", "replace").strip()
        followed.append((resp.handle or res.handle, target))
        res = await walk(target)
        hops += res.hops
    message = f"more than {MAX_ALIAS_HOPS} aliases from {handle}"
    return Walked(handle, Response(ResponseCode.ERROR, handle, message=message), hops), followed


# --------------------------------------------------------------------------- supply chain


@dataclass
class ChainNode:
    handle: str
    via: str  # the value type that pointed here ("" for the root)
    ok: bool
    node: str  # which node answered
    summary: str
    children: list[ChainNode] = field(default_factory=list)
    repeated: bool = False
    truncated: bool = False


_SUMMARY_TYPES = ("DESC", "MODEL", "NAME", "IDR.TEMPLATE")


def chain_view(tree: dict[str, Any]) -> tuple[ChainNode, int]:
    """The page's view of :func:`idr.resolver.recursive.supply_chain`'s tree, and how many
    identifiers it holds (each counted once)."""
    count = 0

    def view(n: dict[str, Any]) -> ChainNode:
        nonlocal count
        if n.get("cycle"):
            return ChainNode(str(n["handle"]), str(n.get("via", "")), True, "", "", repeated=True)
        count += 1
        ok = n.get("code") == ResponseCode.SUCCESS
        answered = [h["node"] for h in n.get("hops", []) if h.get("node") not in ("cache", "in flight")]
        by_type = {str(k).upper(): str(v) for k, v in (n.get("values") or {}).items()}
        summary = " · ".join(by_type[t][:120] for t in _SUMMARY_TYPES if t in by_type)
        return ChainNode(
            str(n["handle"]),
            str(n.get("via", "")),
            ok,
            answered[-1] if answered and ok else "",
            summary if ok else str(n.get("message", "")),
            [view(c) for c in n.get("children", [])],
            truncated=bool(n.get("truncated")),
        )

    root = view(tree)
    return root, count


def site_of(service: Core) -> list[SiteInfo]:
    """This node's own site(s) as published, else the one it listens as."""
    from idr.console.fedmap import own_sites

    sites = own_sites(service)
    if not sites and service.site_info is not None:
        sites = [service.site_info]
    return sites
