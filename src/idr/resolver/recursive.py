"""Recursive resolution: walk top → secondary → enterprise for a client, with caches and limits.

How a handle ``P/S`` is resolved (RFC 3652 §3.3, the reference notes §1.9):

1. Locate the service of ``P``: ask the top (root) service for ``0.NA/P``. The top answers it,
   or refers (``303 PREFIX_REFERRAL``: ``0.NA/88.118`` says its derived prefix handles live
   at the ``88.118`` secondary), and the question goes there; ``HS_SITE`` values of the
   answer are the service of ``P``; ``HS_SERV`` names a service handle resolved the same way;
   no site values means the service that answered serves ``P`` itself.
2. Ask that service for ``P/S``, following ``302``/``303`` referrals (a secondary delegating
   to an enterprise node).
3. In each site the server is chosen by the hash of the handle (``SiteInfo.server_for``);
   sites are tried primaries first, and a site that does not answer within a short timeout is
   skipped for the next (a mirror).

Identifiers of other schemes arrive in *root form* (``GS1/01/…``, ``ECODE/…``, ``OID/…``,
docs/schemes.md): the resolver asks the federation for the prefix handle of each candidate
prefix, most specific first (``0.NA/GS1.697531000152``, ``0.NA/GS1.69753100015``, …), and
resolves the identifier under the first one that exists, as DNS walks labels. Probes that
find nothing are cached like any negative answer.

Answers are cached for their TTL (the smallest of the values'), services for the TTL of
their ``HS_SITE`` values, and negative answers (not found, a prefix that does not exist) for a
bounded time; the three caches are bounded LRU maps sized apart (``[recursive]`` in idr.toml):
a federation has far fewer prefixes than identifiers, and each service missing costs a query at
the top. Prefixes served by one node share one decoded list of its sites.

Every request has a budget — referrals, queries, distinct servers,
``HS_SERV`` depth and a deadline — so a delegation loop or a hostile referral chain costs a
bounded amount of work and ends with ``RECURSION_COUNT_TOO_HIGH`` and a message naming the
loop. Identical lookups in flight at once share one walk (no amplification by a burst).
The network is behind :class:`Transport`; ``idr.resolver.transport`` speaks the Handle protocol.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from idr.core.federation import site_name, sites_of
from idr.core.request import Op, Request, Response
from idr.core.service import NodeService
from idr.core.templates import TEMPLATE_TYPE
from idr.model.errors import HandleError, ResponseCode
from idr.model.handle import Handle, normalize_key, prefix_handle
from idr.model.site import ServerInfo, SiteInfo, TransportProtocol
from idr.model.value import HandleValue, TtlType, ValueReference
from idr.schemes.detect import SchemeRoots, root_candidates
from idr.store.base import Store
from idr.store.cache import RecordCache

if TYPE_CHECKING:
    from idr.codec.keys import PublicKey

REFERRALS = (ResponseCode.SERVICE_REFERRAL, ResponseCode.PREFIX_REFERRAL)
NEGATIVE = (ResponseCode.HANDLE_NOT_FOUND, ResponseCode.VALUES_NOT_FOUND)
# Codes after which another site may still answer (busy, read-only mirror asked for…).
TRY_NEXT = (ResponseCode.SERVER_TOO_BUSY, ResponseCode.ERROR, ResponseCode.OUT_OF_DATE_SITE_INFO)
# Distinct site lists kept for sharing (one per service: secondaries, enterprise nodes, mirrors).
SHARED_SITE_LISTS = 4096


class Transport(Protocol):
    """Sends one request to one server and returns its answer (raises on no answer)."""

    async def query(self, server: ServerInfo, request: Request, timeout: float) -> Response: ...


@dataclass(frozen=True)
class Limits:
    """Per-request bounds (a resolution never does more than this) and cache bounds."""

    max_referrals: int = 8
    max_queries: int = 16
    max_servers: int = 8
    max_service_depth: int = 3  # HS_SERV indirections
    timeout: float = 0.7  # one query; short, so a dead primary costs little before the mirror
    deadline: float = 5.0  # the whole resolution
    negative_ttl: float = 30.0
    max_ttl: float = 86400.0
    cache_entries: int = 100_000  # whole answers (``[recursive] answers``)
    # Prefixes → the sites serving them (``[recursive] services``): every prefix of the
    # federation the load touches, or each miss costs a query at the top (the seeds' 40,000+).
    service_entries: int = 100_000
    # Prefixes known not to exist, for ``negative_ttl`` (``[recursive] missing_prefixes``): kept
    # apart, so random names cannot push real services out.
    missing_entries: int = 10_000
    max_candidates: int = 16  # root-form identifiers: prefixes probed (the least specific kept)
    down_for: float = 10.0  # a site that did not answer is asked last for this long

    @classmethod
    def uncached(cls) -> Limits:
        """No cache at all: a walk that sees the federation as it is now (核验, the console)."""
        return cls(cache_entries=0, service_entries=0, missing_entries=0)


@dataclass
class Hop:
    """One step of a resolution, for ``--trace``: who was asked what, the answer, how long."""

    node: str
    server: str
    handle: str
    code: int
    ms: float
    cached: bool = False
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        code = self.code
        name = ResponseCode(code).name if code in ResponseCode._value2member_map_ else str(code)
        return {
            "node": self.node,
            "server": self.server,
            "handle": self.handle,
            "code": code,
            "status": name,
            "ms": round(self.ms, 3),
            "cached": self.cached,
            "note": self.note,
        }


@dataclass
class Resolution:
    handle: str
    response: Response
    hops: list[Hop] = field(default_factory=list)
    cached: bool = False


class ResolutionFailed(Exception):
    def __init__(self, code: ResponseCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[V]):
    """A bounded LRU map whose entries expire at a time of the injected clock."""

    def __init__(self, capacity: int, clock: Callable[[], float]) -> None:
        self.capacity = capacity
        self.clock = clock
        self._data: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.on_drop: Callable[[str], None] | None = None

    def get(self, key: str) -> V | None:
        item = self._data.get(key)
        if item is None:
            self.misses += 1
            return None
        expires, value = item
        if expires <= self.clock():
            self._drop(key)
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: str, value: V, ttl: float) -> None:
        if ttl <= 0 or self.capacity <= 0:
            return
        self._data[key] = (self.clock() + ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._drop(next(iter(self._data)))

    def sweep(self, limit: int = 10_000) -> int:
        """Drop up to ``limit`` expired entries; returns how many."""
        now = self.clock()
        dead = [k for k, (exp, _) in self._data.items() if exp <= now][:limit]
        for k in dead:
            self._drop(k)
        return len(dead)

    def _drop(self, key: str) -> None:
        self._data.pop(key, None)
        if self.on_drop is not None:
            self.on_drop(key)

    def discard(self, key: str) -> bool:
        """Drop ``key``; whether it was there."""
        if key not in self._data:
            return False
        self._drop(key)
        return True

    def clear(self) -> None:
        for k in list(self._data):
            self._drop(k)

    def __len__(self) -> int:
        return len(self._data)


class _Budget:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.queries = 0
        self.referrals = 0
        self.servers: set[tuple[str, int]] = set()
        self.hops: list[Hop] = []

    def charge(self, addr: tuple[str, int]) -> None:
        self.queries += 1
        self.servers.add(addr)
        if self.queries > self.limits.max_queries:
            raise ResolutionFailed(
                ResponseCode.RECURSION_COUNT_TOO_HIGH, f"gave up after {self.limits.max_queries} queries"
            )
        if len(self.servers) > self.limits.max_servers:
            raise ResolutionFailed(
                ResponseCode.RECURSION_COUNT_TOO_HIGH,
                f"gave up: more than {self.limits.max_servers} distinct servers for one resolution",
            )


def server_address(server: ServerInfo) -> tuple[str, int]:
    """Where to send a query: the server's native (UDP/TCP) port, else its HTTP(S) port."""
    for proto in (
        TransportProtocol.UDP,
        TransportProtocol.TCP,
        TransportProtocol.HTTP,
        TransportProtocol.HTTPS,
    ):
        port = server.port_for(proto)
        if port:
            return server.host, port
    raise ResolutionFailed(
        ResponseCode.ERROR, f"server {server.server_id} at {server.host} has no usable interface"
    )


def _site_key(site: SiteInfo) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(server_address(s) for s in site.servers))


def answer_ttl(values: Sequence[HandleValue], now: float, limits: Limits) -> float:
    """How long an answer may be reused: the shortest TTL among its values, capped."""
    ttl = limits.max_ttl
    for v in values:
        t = float(v.ttl) - now if v.ttl_type == TtlType.ABSOLUTE else float(v.ttl)
        ttl = min(ttl, max(t, 0.0))
    return ttl


class RecursiveResolver:
    """The recursion engine of a recursive node (and of ``idr`` clients in recursive mode)."""

    def __init__(
        self,
        root: Sequence[SiteInfo],
        transport: Transport,
        *,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.time,
        roots: SchemeRoots | None = None,
    ) -> None:
        if not root:
            raise ValueError("a recursive resolver needs the top service's site(s)")
        self.root = sorted(root, key=lambda s: not s.primary)
        self.transport = transport
        self.limits = limits or Limits()
        self.clock = clock
        self.roots = roots or SchemeRoots()
        # Sites that did not answer, until when they are asked last (monotonic time): after a
        # primary dies, one timeout is paid, not one per query, until it is tried again.
        self._down: dict[tuple[tuple[str, int], ...], float] = {}
        self.answers: TtlCache[Response] = TtlCache(self.limits.cache_entries, clock)
        self.services: TtlCache[list[SiteInfo]] = TtlCache(self.limits.service_entries, clock)
        self.missing: TtlCache[str] = TtlCache(self.limits.missing_entries, clock)
        # Decoded site lists by the HS_SITE bytes they came from: the prefixes one secondary
        # hosts (thousands) share one list of SiteInfo instead of a decoded copy each.
        self._site_lists: dict[tuple[bytes, ...], list[SiteInfo]] = {}
        self._inflight: dict[str, asyncio.Future[Resolution]] = {}
        self.counters = {"resolutions": 0, "cache_hits": 0, "queries": 0, "failures": 0}
        # Looks at every fresh answer before it is cached and may replace it (RecursiveService
        # checks record signatures with it); answers from the cache were checked when fetched.
        self.check: Callable[[str, Response], Awaitable[Response]] | None = None

    # ------------------------------------------------------------------ entry

    async def resolve(self, handle: str) -> Resolution:
        """The whole public record of ``handle`` (or why not), with every hop taken."""
        h = Handle.parse(handle)
        self.counters["resolutions"] += 1
        key = h.key
        hit = self.answers.get(key)
        if hit is not None:
            self.counters["cache_hits"] += 1
            return Resolution(handle, hit, [Hop("cache", "", handle, int(hit.code), 0.0, cached=True)], True)
        pending = self._inflight.get(key)
        if pending is not None:
            shared = await asyncio.shield(pending)
            hops = [Hop("in flight", "", handle, int(shared.response.code), 0.0, True, "shared lookup")]
            return Resolution(handle, shared.response, hops, True)
        fut: asyncio.Future[Resolution] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            res = await self._resolve_fresh(h)
            fut.set_result(res)
            return res
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: a waiter-less failure must not warn
            raise
        finally:
            self._inflight.pop(key, None)

    async def follow(self, handle: str, referral: Response) -> Resolution:
        """Continue a resolution from a referral (302/303) another server gave for ``handle``:
        the sites its values name are asked, and further referrals followed, exactly as in a
        walk from the root (same budget, loop detection, failover). Not cached: the referral
        came from outside the engine. How a node that holds part of the federation itself (the
        top's console) resolves what it refers."""
        h = Handle.parse(handle)
        budget = _Budget(self.limits)

        async def walk() -> Response:
            sites, _ = await self._sites_in(referral.values, budget, 0)
            if not sites:
                raise ResolutionFailed(ResponseCode.ERROR, f"the referral for {h} names no site")
            resp, _ = await self._ask_following(sites, str(h), budget)
            return resp

        return Resolution(str(h), await self._bounded(h, walk(), budget), budget.hops)

    async def _bounded(self, h: Handle, walk: Coroutine[Any, Any, Response], budget: _Budget) -> Response:
        """``walk`` within the deadline; a failure becomes the answer that says why."""
        try:
            resp = await asyncio.wait_for(walk, self.limits.deadline)
        except ResolutionFailed as e:
            self.counters["failures"] += 1
            resp = Response(e.code, str(h), message=e.message)
        except TimeoutError:
            self.counters["failures"] += 1
            resp = Response(
                ResponseCode.ERROR, str(h), message=f"no answer within {self.limits.deadline:g} s"
            )
        self.counters["queries"] += budget.queries
        return resp

    async def _resolve_fresh(self, h: Handle) -> Resolution:
        budget = _Budget(self.limits)
        resp = await self._bounded(h, self._walk(h, budget), budget)
        if resp.ok and self.check is not None:
            resp = await self.check(str(h), resp)  # e.g. its signatures: before it is cached
        if resp.ok:
            self.answers.put(h.key, resp, answer_ttl(resp.values, self.clock(), self.limits))
        elif resp.code in NEGATIVE:
            self.answers.put(h.key, resp, self.limits.negative_ttl)
        return Resolution(str(h), resp, budget.hops)

    # ------------------------------------------------------------------ the walk

    async def _walk(self, h: Handle, budget: _Budget) -> Response:
        if h.is_prefix_handle:
            resp, _ = await self._ask_following(self.root, str(h), budget)
            return resp
        candidates = root_candidates(str(h), self.roots)
        if candidates:
            located = await self._locate(candidates, budget)
            if located is None:
                raise ResolutionFailed(
                    ResponseCode.HANDLE_NOT_FOUND,
                    f"no prefix for {h} in this federation (tried {candidates[0]} … {candidates[-1]})",
                )
            prefix, sites = located
            handle = f"{prefix}/{h.suffix}"
            resp, _ = await self._ask_following(sites, handle, budget)
            # Answers say which handle the identifier was found under (front-ends echo it).
            return Response(resp.code, handle, resp.values, resp.message, extra={"located": handle})
        for attempt in range(2):
            try:
                sites = await self._service_for(h.prefix, budget, 0)
            except ResolutionFailed as e:
                if e.code in NEGATIVE:
                    raise ResolutionFailed(
                        ResponseCode.HANDLE_NOT_FOUND, f"prefix {h.prefix} is not known"
                    ) from e
                raise
            resp, site = await self._ask_following(sites, str(h), budget)
            if resp.code != ResponseCode.SERVER_NOT_RESPONSIBLE:
                return resp
            # 301: the service we had for the prefix no longer serves it (moved): forget it
            # and walk from the root once more; a second 301 is the answer.
            if attempt == 0 and self.services.discard(normalize_key(h.prefix)):
                budget.hops[-1].note = (
                    "stale service, walking again from the root; " + budget.hops[-1].note
                ).strip("; ")
                continue
            return Response(
                resp.code,
                str(h),
                message=f"{site_name(site)} is not responsible for {h.prefix}: {resp.message}",
            )
        raise AssertionError("unreachable")

    async def _locate(self, candidates: Sequence[str], budget: _Budget) -> tuple[str, list[SiteInfo]] | None:
        """The most specific candidate prefix the federation has a prefix handle for, and its
        sites. The probes share one budget of their own (bounded by ``max_candidates``)."""
        cands = list(candidates)[-self.limits.max_candidates :]
        probe = _Budget(replace(self.limits, max_queries=self.limits.max_queries + len(cands)))
        try:
            for prefix in cands:
                ph = normalize_key(prefix_handle(prefix))
                known = self.answers.get(ph)
                if known is not None and known.code in NEGATIVE:
                    continue
                try:
                    sites = await self._service_for(prefix, probe, 0)
                except ResolutionFailed as e:
                    if e.code not in NEGATIVE:
                        raise
                    absent = Response(ResponseCode.HANDLE_NOT_FOUND, ph, message=e.message)
                    self.answers.put(ph, absent, self.limits.negative_ttl)
                    continue
                return prefix, sites
            return None
        finally:
            for hop in probe.hops:
                hop.note = ("locate; " + hop.note).strip("; ")
            budget.hops.extend(probe.hops)
            self.counters["queries"] += probe.queries

    async def _service_for(self, prefix: str, budget: _Budget, depth: int) -> list[SiteInfo]:
        """The sites serving handles under ``prefix`` (cached by the TTL of its HS_SITE values)."""
        key = normalize_key(prefix)
        cached = self.services.get(key)
        if cached is not None:
            budget.hops.append(
                Hop(site_name(cached[0]), "", prefix_handle(prefix), 1, 0.0, True, "service of prefix")
            )
            return cached
        why = self.missing.get(key)
        if why is not None:
            budget.hops.append(
                Hop("cache", "", prefix_handle(prefix), int(ResponseCode.HANDLE_NOT_FOUND), 0.0, True, why)
            )
            raise ResolutionFailed(ResponseCode.HANDLE_NOT_FOUND, why)
        resp, answered_by = await self._ask_following(self.root, prefix_handle(prefix), budget)
        if resp.code in NEGATIVE:
            why = resp.message or f"{prefix_handle(prefix)}: {resp.code.name}"
            self.missing.put(key, why, self.limits.negative_ttl)
            raise ResolutionFailed(resp.code, why)
        if not resp.ok:
            raise ResolutionFailed(resp.code, resp.message or f"{prefix_handle(prefix)}: {resp.code.name}")
        sites, ttl = await self._sites_in(resp.values, budget, depth)
        if not sites:
            sites, ttl = [answered_by], self.limits.max_ttl
        self.services.put(key, sites, ttl)
        return sites

    async def _sites_in(
        self, values: Sequence[HandleValue], budget: _Budget, depth: int
    ) -> tuple[list[SiteInfo], float]:
        """Sites named by HS_SITE values, or by the service handle of an HS_SERV value."""
        site_vals = [v for v in values if v.type.upper() in ("HS_SITE", "HS_SITE.6", "HS_SITE.PREFIX")]
        ttl = answer_ttl(site_vals, self.clock(), self.limits) if site_vals else self.limits.max_ttl
        sites = self._shared_sites(site_vals)
        if sites:
            return sites, ttl
        serv = next((v for v in values if v.type.upper() in ("HS_SERV", "HS_SERV.PREFIX")), None)
        if serv is None:
            return [], ttl
        if depth >= self.limits.max_service_depth:
            raise ResolutionFailed(ResponseCode.RECURSION_COUNT_TOO_HIGH, "too many HS_SERV indirections")
        service_handle = Handle.parse(serv.data.decode("utf-8", "replace"))
        sites = await self._service_for(service_handle.prefix, budget, depth + 1)
        resp, _ = await self._ask_following(sites, str(service_handle), budget)
        if not resp.ok:
            raise ResolutionFailed(resp.code, f"service handle {service_handle}: {resp.message}")
        found, ttl2 = await self._sites_in(resp.values, budget, depth + 1)
        return found, min(ttl, ttl2)

    def _shared_sites(self, site_vals: Sequence[HandleValue]) -> list[SiteInfo]:
        """``sites_of(site_vals)``, one list per distinct set of HS_SITE bytes (never mutated)."""
        if not site_vals:
            return []
        key = tuple(v.data for v in site_vals)
        sites = self._site_lists.get(key)
        if sites is None:
            sites = sites_of(site_vals)
            if len(self._site_lists) >= SHARED_SITE_LISTS:
                self._site_lists.clear()  # bounded: lists in the service cache stay valid
            self._site_lists[key] = sites
        return sites

    async def _ask_following(
        self, sites: list[SiteInfo], handle: str, budget: _Budget
    ) -> tuple[Response, SiteInfo]:
        """Ask ``sites`` for ``handle``, following referrals; never the same site twice for it."""
        asked: list[SiteInfo] = []
        current = sites
        for _ in range(self.limits.max_referrals + 1):
            resp, site = await self._ask_sites(current, handle, budget)
            asked.append(site)
            if resp.code not in REFERRALS:
                return resp, site
            budget.referrals += 1
            if budget.referrals > self.limits.max_referrals:
                break
            nxt, _ = await self._sites_in(resp.values, budget, 0)
            if not nxt:
                raise ResolutionFailed(ResponseCode.ERROR, f"{site_name(site)} referred {handle} nowhere")
            seen = {_site_key(s) for s in asked}
            if all(_site_key(s) in seen for s in nxt):
                path = " → ".join(site_name(s) for s in [*asked, nxt[0]])
                raise ResolutionFailed(
                    ResponseCode.RECURSION_COUNT_TOO_HIGH, f"referral loop for {handle}: {path}"
                )
            current = [s for s in nxt if _site_key(s) not in seen]
        raise ResolutionFailed(
            ResponseCode.RECURSION_COUNT_TOO_HIGH,
            f"more than {self.limits.max_referrals} referrals for {handle}",
        )

    async def _ask_sites(
        self, sites: list[SiteInfo], handle: str, budget: _Budget
    ) -> tuple[Response, SiteInfo]:
        """Primary first; on no answer (or busy) the next site — a mirror — is asked."""
        failures: list[str] = []
        last: tuple[Response, SiteInfo] | None = None
        now = time.monotonic()
        for site in sorted(sites, key=lambda s: (self._down.get(_site_key(s), 0.0) > now, not s.primary)):
            if not site.servers:
                continue
            server = site.server_for(handle)
            addr = server_address(server)
            budget.charge(addr)
            name = site_name(site)
            where = f"{addr[0]}:{addr[1]}"
            t0 = time.perf_counter()
            try:
                resp = await self.transport.query(server, Request(Op.RESOLUTION, handle), self.limits.timeout)
            except (TimeoutError, OSError, HandleError, ConnectionError, EOFError) as e:
                ms = (time.perf_counter() - t0) * 1000
                why = type(e).__name__ if isinstance(e, TimeoutError) else str(e) or type(e).__name__
                budget.hops.append(
                    Hop(name, where, handle, int(ResponseCode.ERROR), ms, note=f"no answer: {why}")
                )
                failures.append(f"{name} ({where}): {why}")
                if len(self._down) < 10_000:
                    self._down[_site_key(site)] = time.monotonic() + self.limits.down_for
                continue
            self._down.pop(_site_key(site), None)
            ms = (time.perf_counter() - t0) * 1000
            note = "referral" if resp.code in REFERRALS else ""
            if failures and resp.code not in TRY_NEXT:
                note = ("failover; " + note).strip("; ")
            budget.hops.append(Hop(name, where, handle, int(resp.code), ms, note=note))
            if resp.code in TRY_NEXT:
                failures.append(f"{name}: {resp.code.name}")
                last = (resp, site)
                continue
            return resp, site
        if last is not None:
            return last
        raise ResolutionFailed(
            ResponseCode.ERROR, "no server answered: " + "; ".join(failures or ["no servers"])
        )


# ---------------------------------------------------------------------- the recursive node's core


class RecursiveService:
    """A recursive node's core (``idr.core.interface.Core``): holds no identifiers and answers
    resolutions from the engine; the other implementation of the interface beside the
    authoritative ``NodeService``, not a kind of it.

    It plugs into the same front-ends as any node (they call ``answer_now``/``submit``). Its
    answer cache is the engine's; when an entry expires or is evicted the listeners hear of
    it, so the front-ends' pre-encoded answer caches never outlive the TTL (``sweep`` runs each
    second). What the node itself keeps — its data directory's store, the identities of its
    admins (console login), its site — is an authoritative core of its own (``local``).
    """

    role = "recursive"

    def __init__(
        self,
        store: Store,
        resolver: RecursiveResolver,
        *,
        trust_roots: Sequence[PublicKey] = (),
        trust_enforce: bool = False,
        **kwargs: Any,
    ) -> None:
        self.local = NodeService(store, **kwargs)
        self.resolver = resolver
        resolver.answers.on_drop = self._dropped
        self._listeners: list[Callable[[Sequence[str]], None]] = []
        self.counters: dict[str, int] = {"resolutions": 0, "registrations": 0, "writes": 0, "errors": 0}
        self._sweeper: asyncio.Task[None] | None = None
        self.trust_roots = list(trust_roots)
        self.trust_enforce = trust_enforce
        if self.trust_roots:
            resolver.check = self._check_signatures

    async def _check_signatures(self, handle: str, resp: Response) -> Response:
        """``[trust]``: a signed record's HS_SIGNATURE values checked back to the trust roots
        (certificates resolved through this engine, within one deadline); the report travels
        with the answer (``extra["trust"]``); with ``enforce`` a failed check replaces it."""
        from idr.resolver.trust import SIGNATURE_TYPE, verify_record

        if not any(v.type.upper() == SIGNATURE_TYPE for v in resp.values):
            return resp

        async def lookup(h: str) -> Sequence[HandleValue] | None:
            found = (await self.resolver.resolve(h)).response
            return found.values if found.ok else None

        try:
            report = await asyncio.wait_for(
                verify_record(handle, resp.values, lookup, self.trust_roots), self.resolver.limits.deadline
            )
        except TimeoutError:
            why = f"signature check of {handle} took longer than {self.resolver.limits.deadline:g} s"
            if self.trust_enforce:
                return Response(ResponseCode.ERROR, handle, message=why)
            return replace(resp, extra={**resp.extra, "trust": {"ok": False, "messages": [why]}})
        self.counters["signature_checks"] = self.counters.get("signature_checks", 0) + 1
        if self.trust_enforce and not report.ok:
            self.counters["signature_failures"] = self.counters.get("signature_failures", 0) + 1
            failed = "; ".join(line for line in report.lines() if not line.startswith(handle))
            return Response(ResponseCode.ERROR, handle, message=f"signature check failed: {failed}")
        return replace(resp, extra={**resp.extra, "trust": report.to_json()})

    # ------------------------------------------------------------- what the node itself holds

    @property
    def store(self) -> Store:
        return self.local.store

    @property
    def cache(self) -> RecordCache:
        return self.local.cache

    @property
    def site_info(self) -> SiteInfo | None:
        return self.local.site_info

    @site_info.setter
    def site_info(self, site: SiteInfo | None) -> None:
        self.local.site_info = site

    def is_responsible(self, h: Handle) -> bool:
        return self.local.is_responsible(h)

    def homed_prefixes(self) -> list[str]:
        return self.local.homed_prefixes()

    async def preload(self, handles: Sequence[str]) -> None:
        await self.local.preload(handles)

    def authenticate_secret(self, identity: ValueReference, secret: bytes) -> bool:
        return self.local.authenticate_secret(identity, secret)

    def identity_values(self, identity: ValueReference, type_: str) -> list[HandleValue]:
        return self.local.identity_values(identity, type_)

    def add_listener(self, fn: Callable[[Sequence[str]], None]) -> None:
        self._listeners.append(fn)

    def _dropped(self, key: str) -> None:
        for fn in self._listeners:
            fn([key])

    # ------------------------------------------------------------- answers

    def answer_now(self, req: Request) -> Response | None:
        """A cached answer (or this node's own site info, or a refusal); None when the
        federation must be asked (``submit``)."""
        resp = self.handle(req)
        return None if resp.code == ResponseCode.SERVER_TOO_BUSY else resp

    def handle(self, req: Request) -> Response:
        """Synchronous callers get cached answers only; a miss needs ``submit``."""
        if req.op == Op.RESOLUTION:
            try:
                key = Handle.parse(req.handle).key
            except HandleError as e:
                return Response(e.code, req.handle, message=e.message)
            hit = self.resolver.answers.get(key)
            if hit is not None:
                return self._shape(req, hit)
            return Response(
                ResponseCode.SERVER_TOO_BUSY, req.handle, message="not cached; resolve asynchronously"
            )
        if req.op == Op.GET_SITE_INFO:
            return self.local.answer_now(req) or Response(ResponseCode.ERROR, req.handle)
        return Response(
            ResponseCode.OPERATION_NOT_SUPPORTED, req.handle, message="a recursive node holds no identifiers"
        )

    async def submit(self, req: Request) -> Response:
        if req.op != Op.RESOLUTION:
            return self.handle(req)
        self._ensure_sweeper()
        try:
            res = await self.resolver.resolve(req.handle)
        except HandleError as e:
            return Response(e.code, req.handle, message=e.message)
        self.counters["resolutions"] += 1
        return self._shape(req, res.response, res.hops)

    async def trace(self, handle: str) -> Resolution:
        self._ensure_sweeper()
        return await self.resolver.resolve(handle)

    @staticmethod
    def _shape(req: Request, resp: Response, hops: list[Hop] | None = None) -> Response:
        """The cached whole record, filtered to what this request asked for."""
        extra: dict[str, object] = {"hops": hops} if hops is not None else {}
        handle = str(resp.extra.get("located") or req.handle)
        if not resp.ok:
            return Response(resp.code, handle, message=resp.message, extra=extra)
        values = [v for v in resp.values if v.public_read]
        if req.indexes or req.types:
            idx = set(req.indexes)
            values = [v for v in values if v.index in idx or any(v.type_matches(t) for t in req.types)]
        if not values:
            return Response(ResponseCode.VALUES_NOT_FOUND, handle, message="no values match", extra=extra)
        return Response(ResponseCode.SUCCESS, handle, tuple(values), extra=extra)

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.resolver.answers.sweep()
            self.resolver.services.sweep()
            self.resolver.missing.sweep()

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        close = getattr(self.resolver.transport, "close", None)  # its shared UDP socket
        if close is not None:
            close()
        self.local.close()


# ---------------------------------------------------------------------- supply-chain trace

# What a value's data must look like to be followed as a reference to another identifier: a
# numeric-rooted Handle prefix (88.100, 88.118.8, …) and a suffix — not a URL or an e-mail.
_HANDLE_TEXT = re.compile(r"^(?:hdl:)?([0-9]+(?:\.[0-9A-Za-z_-]+)*/\S+)$")
_NOT_REFERENCES = ("URL", "EMAIL", "DESC", TEMPLATE_TYPE)


def reference_of(v: HandleValue) -> str | None:
    """The identifier a value's data names (``battery_pack`` → ``88.168.2/PACK-…``), or None."""
    t = v.type.upper()
    if t.startswith("HS_") or t in _NOT_REFERENCES:
        return None
    m = _HANDLE_TEXT.match(v.data.decode("utf-8", "replace").strip())
    return m.group(1) if m else None


def references_in(values: Sequence[HandleValue]) -> list[tuple[str, str]]:
    """``(value type, handle)`` for values that point at other identifiers (battery_pack, cell…)."""
    out: list[tuple[str, str]] = []
    for v in sorted(values, key=lambda v: v.index):
        for ref in v.references:
            out.append((v.type, ref.handle))
        target = reference_of(v)
        if target is not None:
            out.append((v.type, target))
    return out


async def supply_chain(
    resolve: Callable[[str], Awaitable[Resolution]], handle: str, *, max_depth: int = 6, max_nodes: int = 64
) -> dict[str, Any]:
    """The tree of identifiers reachable from ``handle`` by references, each resolved by
    ``resolve`` (a recursive node's engine, or the console's walk through the federation);
    depth- and size-bounded, and a handle seen before is not followed again."""
    seen: set[str] = set()
    budget = [max_nodes]

    async def visit(h: str, via: str, depth: int) -> dict[str, Any]:
        node: dict[str, Any] = {"handle": h, "via": via}
        try:
            key = Handle.parse(h).key
        except HandleError as e:
            node.update(code=int(e.code), status=e.code.name, message=e.message)
            return node
        if key in seen:
            node["cycle"] = True
            return node
        if budget[0] <= 0:
            node["truncated"] = "node limit"
            return node
        seen.add(key)
        budget[0] -= 1
        try:
            res = await resolve(h)
        except HandleError as e:
            node.update(code=int(e.code), status=e.code.name, message=e.message)
            return node
        resp = res.response
        node.update(code=int(resp.code), status=resp.code.name, cached=res.cached)
        node["hops"] = [hop.to_json() for hop in res.hops]
        if not resp.ok:
            node["message"] = resp.message
            return node
        node["values"] = {
            v.type: v.data.decode("utf-8", "replace")
            for v in resp.values
            if not v.type.upper().startswith("HS_")
        }
        refs = references_in(resp.values)
        if refs and depth >= max_depth:
            node["truncated"] = "depth limit"
            return node
        node["children"] = [await visit(ref, t, depth + 1) for t, ref in refs]
        return node

    return await visit(handle, "", 0)
