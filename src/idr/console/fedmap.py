"""The federation as the dashboard draws it: this node, the nodes it delegates to, theirs, with health.

Delegations are the Handle System's own records (``0.NA/<P>`` with ``HS_SITE`` values) held
in this node's store; a delegated node's health is whether its console answers
``/console/api/node`` (which also lists *its* delegations, so a top node sees enterprise
nodes through their secondary without holding their records). Probes run concurrently with
a short timeout and the result is cached briefly, so a dead node slows nothing down much.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from idr.core.federation import site_name, sites_of
from idr.core.interface import Core
from idr.model.handle import normalize_key
from idr.model.site import SiteInfo, TransportProtocol

PROBE_TIMEOUT = 1.5
MAP_TTL = 10.0
MAX_DELEGATIONS = 500
MAX_DEPTH = 2


@dataclass
class SiteView:
    name: str
    primary: bool
    urls: list[str]
    up: bool | None = None  # None: not probed (this node) or nothing to probe
    ms: float = 0.0


@dataclass
class MapNode:
    name: str
    role: str
    prefixes: list[str]
    sites: list[SiteView] = field(default_factory=list)
    children: list[MapNode] = field(default_factory=list)
    is_self: bool = False

    @property
    def up(self) -> bool | None:
        probed = [s.up for s in self.sites if s.up is not None]
        if self.is_self:
            return True
        if not probed:
            return None
        return any(probed)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "prefixes": self.prefixes,
            "up": self.up,
            "sites": [s.__dict__ for s in self.sites],
            "children": [c.to_json() for c in self.children],
        }


def site_urls(site: SiteInfo) -> list[str]:
    """Base URLs of a site's HTTP(S) interfaces (plain HTTP first: nothing to trust for a read)."""
    out: list[str] = []
    for srv in site.servers:
        host = srv.host if ":" not in srv.host else f"[{srv.host}]"
        for proto, scheme in ((TransportProtocol.HTTP, "http"), (TransportProtocol.HTTPS, "https")):
            port = srv.port_for(proto)
            if port:
                out.append(f"{scheme}://{host}:{port}")
    return out


def site_view(site: SiteInfo) -> SiteView:
    return SiteView(site_name(site), site.primary, site_urls(site))


def _decoded_sites(values: Any) -> list[SiteInfo]:
    out = sites_of(values)
    # One entry per distinct site: HS_SITE.PREFIX usually repeats the HS_SITE values.
    seen: set[tuple[str, ...]] = set()
    uniq = []
    for s in sorted(out, key=lambda s: not s.primary):
        key = tuple(site_urls(s)) or (s.attribute("desc") or "",)
        if key not in seen:
            seen.add(key)
            uniq.append(s)
    return uniq


def delegations(service: Core) -> list[tuple[str, list[SiteInfo]]]:
    """``(prefix, sites)`` for every prefix this node delegates to another service."""
    homed = {normalize_key(p) for p in service.homed_prefixes()}
    out: list[tuple[str, list[SiteInfo]]] = []
    for name in service.store.list_handles("0.NA", None, MAX_DELEGATIONS):
        prefix = name.partition("/")[2]
        if not prefix or normalize_key(prefix) in homed or normalize_key(prefix) == "0.NA":
            continue
        rec = service.store.get(normalize_key(name))
        if rec is None:
            continue
        sites = _decoded_sites(rec.values)
        if sites:
            out.append((prefix, sites))
    return out


def own_sites(service: Core) -> list[SiteInfo]:
    """This service's sites as it publishes them (``0.NA/<own prefix>`` or ``0.NA/0.NA``)."""
    for p in ["0.NA", *service.homed_prefixes()]:
        rec = service.store.get(normalize_key(f"0.NA/{p}"))
        if rec is not None:
            sites = _decoded_sites(rec.values)
            if sites:
                return sites
    return []


def node_info(service: Core, name: str, role: str) -> dict[str, Any]:
    """What ``/console/api/node`` publishes: public facts only (names, prefixes, where nodes live)."""
    return {
        "name": name,
        "role": role,
        "prefixes": sorted(p for p in service.homed_prefixes() if not p.startswith("0.")),
        "delegations": [
            {
                "prefix": prefix,
                "sites": [
                    {"name": v.name, "primary": v.primary, "urls": v.urls} for v in map(site_view, sites)
                ],
            }
            for prefix, sites in delegations(service)
        ],
    }


def _insecure_ctx() -> ssl.SSLContext:
    # Health probes read public facts only: a peer's self-signed certificate is accepted.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _probe(http: aiohttp.ClientSession, view: SiteView) -> dict[str, Any] | None:
    """Ask the site's console for its node info; marks the site up/down and times it."""
    for base in view.urls:
        t0 = time.perf_counter()
        try:
            async with http.get(
                f"{base}/console/api/node", ssl=_insecure_ctx() if base.startswith("https") else True
            ) as resp:
                doc = await resp.json(content_type=None) if resp.status == 200 else None
        except (TimeoutError, aiohttp.ClientError, ValueError):
            continue
        view.ms = (time.perf_counter() - t0) * 1000
        view.up = True
        return doc if isinstance(doc, dict) else {}
    view.up = False if view.urls else None
    return None


async def _child(http: aiohttp.ClientSession, prefix: str, views: list[SiteView], depth: int) -> MapNode:
    infos = await asyncio.gather(*(_probe(http, v) for v in views))
    info = next((i for i in infos if i), None) or {}
    node = MapNode(
        name=str(info.get("name") or (views[0].name if views else prefix)),
        role=str(info.get("role") or "?"),
        prefixes=[str(p) for p in info.get("prefixes", [prefix])] or [prefix],
        sites=views,
    )
    if depth < MAX_DEPTH:
        kids = []
        for d in info.get("delegations", [])[:MAX_DELEGATIONS]:
            sv = [
                SiteView(str(s.get("name", "?")), bool(s.get("primary")), [str(u) for u in s.get("urls", [])])
                for s in d.get("sites", [])
            ]
            kids.append(_child(http, str(d.get("prefix", "?")), sv, depth + 1))
        node.children = list(await asyncio.gather(*kids))
    return node


async def build_map(service: Core, name: str, role: str, extra_sites: list[SiteView]) -> MapNode:
    """This node and what hangs below it, probed now (its records read off the event loop: up
    to ``MAX_DELEGATIONS`` of them, across a network on PostgreSQL)."""
    own, delegated = await asyncio.to_thread(lambda: (own_sites(service), delegations(service)))
    root = MapNode(
        name=name,
        role=role,
        prefixes=sorted(p for p in service.homed_prefixes() if not p.startswith("0.")),
        sites=[site_view(s) for s in own] or extra_sites,
        is_self=True,
    )
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as http:
        # The other sites of this very service (the backup of "one top, one backup").
        await asyncio.gather(*(_probe(http, s) for s in root.sites[1:]))
        root.children = list(
            await asyncio.gather(
                *(_child(http, p, [site_view(s) for s in sites], 1) for p, sites in delegated)
            )
        )
    return once_each(root)


def _identity(node: MapNode) -> tuple[str, ...]:
    """What makes two map entries one node: the addresses of its sites (else its name)."""
    urls = sorted(u for s in node.sites for u in s.urls)
    return tuple(urls) if urls else (node.name,)


def once_each(root: MapNode) -> MapNode:
    """Every node once. A node reached by several delegations (the Yibin plant: ``88.168.6``
    through its secondary, ``GS1.6975310`` and ``ECODE.1.3206`` straight from the top) keeps
    its deepest place — under the node that allocated its prefix — with every prefix merged."""
    seen: dict[tuple[str, ...], list[tuple[int, MapNode, MapNode]]] = {}

    def walk(parent: MapNode, depth: int) -> None:
        for child in parent.children:
            seen.setdefault(_identity(child), []).append((depth, parent, child))
            walk(child, depth + 1)

    walk(root, 1)
    for key, places in seen.items():
        keep = root if key == _identity(root) else max(places, key=lambda p: p[0])[2]
        prefixes = set(keep.prefixes)
        for _, parent, child in places:
            if child is keep:
                continue
            prefixes.update(child.prefixes)
            parent.children = [c for c in parent.children if c is not child]
            keep.children += [c for c in child.children if c not in keep.children]
        keep.prefixes = sorted(prefixes)
    return root


class MapCache:
    """The last map, rebuilt at most every ``MAP_TTL`` seconds (one build at a time)."""

    def __init__(self) -> None:
        self._at = 0.0
        self._map: MapNode | None = None
        self._lock = asyncio.Lock()

    async def get(self, service: Core, name: str, role: str, extra: list[SiteView]) -> MapNode:
        async with self._lock:
            if self._map is None or time.monotonic() - self._at > MAP_TTL:
                self._map = await build_map(service, name, role, extra)
                self._at = time.monotonic()
            return self._map

    def counts(self) -> tuple[int, int]:
        """(secondary, enterprise) nodes that answered, as of the last map, each counted once."""
        if self._map is None:
            return 0, 0
        up: dict[tuple[str, ...], str] = {}

        def walk(n: MapNode) -> None:
            for c in n.children:
                if c.up:
                    up[_identity(c)] = c.role
                walk(c)

        walk(self._map)
        roles = list(up.values())
        return roles.count("secondary"), roles.count("enterprise")
