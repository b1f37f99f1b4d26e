"""Resolution as the console shows it: values made readable, the trace across nodes, the supply chain.

The trace follows the Handle System's own referrals (302 service / 303 prefix referral with
``HS_SITE`` values) from this node to the node that holds the answer, timing each hop, so
an operator sees *where* an answer came from and what each step cost. Remote hops use the
target node's public HTTP resolution API (read-only, no credentials sent).
"""

from __future__ import annotations

import re
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from idr.codec import rest
from idr.codec.site import decode_site
from idr.codec.values import decode_admin, decode_vlist
from idr.console.fedmap import site_urls
from idr.core.federation import site_name, sites_of
from idr.core.interface import Core
from idr.core.request import Op, Request
from idr.model.errors import HandleError, ResponseCode
from idr.model.handle import Handle
from idr.model.site import SiteInfo
from idr.model.value import AdminPermission, HandleValue

MAX_HOPS = 8
HOP_TIMEOUT = 3.0
REFERRALS = (ResponseCode.SERVICE_REFERRAL, ResponseCode.PREFIX_REFERRAL)
# What a value's data must look like to be followed as a reference to another identifier:
# a numeric-rooted Handle prefix (88.100, 88.118.8, …) and a suffix — not a URL or an email.
_HANDLE_REF = re.compile(r"^(?:hdl:)?(\d+(?:\.[0-9A-Za-z_-]+)*)/(\S+)$")
_NOT_REFERENCES = {"URL", "EMAIL", "DESC", "HS_ADMIN", "HS_SITE", "HS_SITE.6", "HS_SERV", "HS_VLIST"}


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


def reference_in(v: HandleValue) -> str | None:
    """The identifier a value points at (its data is a handle), or None."""
    if v.type.upper() in _NOT_REFERENCES or v.type.upper().startswith("HS_"):
        return None
    try:
        text = v.data.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    m = _HANDLE_REF.match(text)
    if m is None:
        return None
    return f"{m.group(1)}/{m.group(2)}"


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
    target = reference_in(v)
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
    query: str
    handle: str
    scheme: str = "handle"
    details: dict[str, object] = field(default_factory=dict)
    code: int = int(ResponseCode.ERROR)
    message: str = ""
    values: tuple[HandleValue, ...] = ()
    hops: list[Hop] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.code == ResponseCode.SUCCESS

    @property
    def total_ms(self) -> float:
        return sum(h.ms for h in self.hops)

    @property
    def answered_by(self) -> str:
        """The node the answer came from ("" when it came from a cache, which knows no node)."""
        last = self.hops[-1] if self.hops else None
        return last.node if last is not None and last.node not in ("cache", "in flight") else ""


RemoteFetch = Callable[[str, str], Awaitable[tuple[int, str, tuple[HandleValue, ...]]]]


async def fetch_remote(base: str, handle: str) -> tuple[int, str, tuple[HandleValue, ...]]:
    """One public resolution at another node's REST API: (response code, message, values)."""
    url = f"{base}/api/handles/{quote(handle, safe='/')}"
    # Reads only and no credentials: a peer's self-signed certificate is accepted here, the
    # answer is displayed, never trusted for a write.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    timeout = aiohttp.ClientTimeout(total=HOP_TIMEOUT)
    async with (
        aiohttp.ClientSession(timeout=timeout, trust_env=False) as http,
        http.get(url, ssl=ctx if base.startswith("https") else True) as resp,
    ):
        doc = await resp.json(content_type=None)
    if not isinstance(doc, dict):
        return int(ResponseCode.ERROR), "answer is not a JSON object", ()
    code = int(doc.get("responseCode", ResponseCode.ERROR))
    values: tuple[HandleValue, ...] = ()
    if isinstance(doc.get("values"), list) and doc["values"]:
        values = rest.values_from_json(doc["values"])
    return code, str(doc.get("message", "")), values


async def resolve_traced(
    service: Core, node_name: str, handle: str, fetch: RemoteFetch = fetch_remote
) -> Resolution:
    """Resolve ``handle`` here, then follow referrals node by node, timing every hop."""
    res = Resolution(query=handle, handle=handle)
    t0 = time.perf_counter()
    resp = await service.submit(Request(Op.RESOLUTION, handle))
    res.hops.append(Hop(node_name, "local", int(resp.code), resp.message, (time.perf_counter() - t0) * 1000))
    code, message, values = int(resp.code), resp.message, resp.values
    seen: set[str] = set()
    while code in REFERRALS and len(res.hops) < MAX_HOPS:
        answered = False
        for site in sites_of(values):
            for base in site_urls(site):
                if base in seen:
                    continue
                seen.add(base)
                t0 = time.perf_counter()
                try:
                    code, message, values = await fetch(base, handle)
                except (TimeoutError, aiohttp.ClientError, ValueError, HandleError) as e:
                    ms = (time.perf_counter() - t0) * 1000
                    res.hops.append(
                        Hop(site_name(site), base, int(ResponseCode.ERROR), str(e) or "failed", ms)
                    )
                    continue
                ms = (time.perf_counter() - t0) * 1000
                res.hops.append(Hop(site_name(site), base, code, message, ms))
                answered = True
                break
            if answered:
                break
        if not answered:
            code, message, values = int(ResponseCode.ERROR), "no site of the referral answered", ()
            break
    res.code, res.message = code, message
    res.values = values if code == ResponseCode.SUCCESS else ()
    return res


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


MAX_CHAIN_NODES = 200
MAX_CHAIN_DEPTH = 8
_SUMMARY_TYPES = ("DESC", "MODEL", "NAME", "IDR.TEMPLATE")


def _summary(values: tuple[HandleValue, ...]) -> str:
    by_type = {v.type.upper(): v for v in values}
    parts = []
    for t in _SUMMARY_TYPES:
        v = by_type.get(t)
        if v is not None and rest.looks_like_text(v.data):
            parts.append(v.data.decode("utf-8")[:120])
    return " · ".join(parts)


def references(values: tuple[HandleValue, ...]) -> list[tuple[str, str]]:
    """``(value type, target handle)`` for every value that points at another identifier."""
    out: list[tuple[str, str]] = []
    for v in values:
        target = reference_in(v)
        if target is not None:
            out.append((v.type, target))
        for ref in v.references:
            out.append((v.type, ref.handle))
    return out


async def supply_chain(resolve: Callable[[str], Awaitable[Resolution]], root: str) -> tuple[ChainNode, int]:
    """Walk references breadth-first from ``root``; returns the tree and how many identifiers it holds."""
    seen: set[str] = set()
    count = 0

    async def visit(handle: str, via: str, depth: int) -> ChainNode:
        nonlocal count
        key = handle.upper()
        if key in seen:
            return ChainNode(handle, via, True, "", "", repeated=True)
        seen.add(key)
        count += 1
        try:
            Handle.parse(handle)
        except HandleError as e:
            return ChainNode(handle, via, False, "", e.message)
        r = await resolve(handle)
        node = ChainNode(handle, via, r.ok, r.answered_by, _summary(r.values) if r.ok else r.message)
        if not r.ok:
            return node
        for vtype, target in references(r.values):
            if depth >= MAX_CHAIN_DEPTH or count >= MAX_CHAIN_NODES:
                node.truncated = True
                break
            node.children.append(await visit(target, vtype, depth + 1))
        return node

    tree = await visit(root, "", 0)
    return tree, count
