"""GS1-conformant resolver over HTTP: ``/{primary key AI}/{value}…`` and ``/.well-known/gs1resolver``.

Translation only, as every front-end: the Digital Link is parsed by ``schemes.gs1``, mapped
to a handle, resolved through the core (``Op.RESOLUTION``, public values), and the links
in that record are chosen by ``schemes.gs1_links``. Outcomes follow the GS1 resolver
standard and the GS1 community resolver:

* an identifier GS1's rules refuse → 400 ``{"error", "ai", "rule"}``, and nothing is looked up;
* compressed Digital Links (``/AQnYUc1gmg``, ``/01/05412345000013/EEarwSM``) are decoded first;
  ``?compress=true`` answers the compressed form of the request's link (200 JSON);
* ``linkType=linkset`` (or the deprecated ``all``), or ``Accept: application/linkset+json``
  → 200 with the RFC 9264 linkset, never a redirect;
* otherwise the wanted link type (``linkType``, else the record's default) → one link:
  307 with ``Location`` (the query string passed on); several: 300 with them; none: 404;
* a key with qualifiers falls back to less specific records (``/01/x/21/s`` → ``/01/x``)
  when the specific one has no links;
* every response, HEAD and errors included, carries a ``Link`` header.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import orjson
from aiohttp import web

from idr.core.interface import Core
from idr.core.request import Op, Request, Response
from idr.model.errors import ResponseCode
from idr.model.handle import Handle, normalize_key, prefix_handle
from idr.model.value import HandleValue
from idr.schemes import gs1
from idr.schemes import gs1_links as gl
from idr.schemes.common import SchemeError, longest_held
from idr.schemes.gs1_compress import compress
from idr.schemes.gs1_syntax import Gs1Error

ALLOWED_METHODS = "GET, HEAD, OPTIONS"
_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Link, Location, Content-Type",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ServiceHolds:
    """Whether a prefix is homed on this node; with ``delegated``, also whether this node has
    its prefix handle ``0.NA/<prefix>`` (the top node knows every delegated prefix that way).

    A plain function for the scheme code (``Holds``), so it cannot wait: :meth:`prefetch` the
    candidates first, and the prefix handles it asks about come from the record cache, read off
    the event loop (a PostgreSQL store is across a network)."""

    def __init__(self, service: Core, *, delegated: bool = False) -> None:
        self.service = service
        self.delegated = delegated

    def _homed(self, prefix: str) -> bool | None:
        """True/False when memory decides (homed, not ours to look up), None: the store does."""
        if self.service.role == "recursive":
            return False  # a recursive node holds nothing: it locates prefixes (root form)
        try:
            if self.service.is_responsible(Handle(prefix, "_")):
                return True
        except ValueError:  # a prefix that is not UTF-8 text (a lone surrogate) is nobody's
            return False
        return None if self.delegated else False

    async def prefetch(self, candidates: Iterable[str]) -> None:
        """Cache the prefix handles :meth:`__call__` would read for ``candidates``."""
        await self.service.preload([prefix_handle(p) for p in candidates if self._homed(p) is None])

    def __call__(self, prefix: str) -> bool:
        homed = self._homed(prefix)
        if homed is not None:
            return homed
        resp = self.service.answer_now(Request(Op.RESOLUTION, prefix_handle(prefix)))
        if resp is not None:
            return resp.ok
        # Not prefetched, or pushed out of the cache since: read it where we are.
        return self.service.store.get(normalize_key(prefix_handle(prefix))) is not None


def service_holds(service: Core, *, delegated: bool = False) -> ServiceHolds:
    return ServiceHolds(service, delegated=delegated)


MAX_ALIAS_HOPS = 4


async def resolve_following_aliases(service: Core, handle: str) -> Response:
    """Resolve ``handle``; a record that is an alias (``HS_ALIAS``) is replaced by its target's.

    A GS1 key or an Ecode often names a record that already has a handle of its own (the
    Yibin cell is ``88.168.6/CELL-…``); its scheme handle is then an alias, and converged
    resolution answers with the one record, as Handle.Net's proxy follows aliases. Bounded.
    """
    resp = await service.submit(Request(Op.RESOLUTION, handle))
    for _ in range(MAX_ALIAS_HOPS):
        alias = next((v for v in resp.values if v.type.upper() == "HS_ALIAS"), None) if resp.ok else None
        if alias is None:
            return resp
        target = alias.data.decode("utf-8", "replace")
        resp = await service.submit(Request(Op.RESOLUTION, target))
        if not resp.handle:
            resp = Response(resp.code, target, resp.values, resp.message)
    return Response(ResponseCode.ERROR, handle, message=f"more than {MAX_ALIAS_HOPS} aliases from {handle}")


@dataclass(frozen=True, slots=True)
class Found:
    """What a key resolved to: the handle that answered, its level of the key, its values."""

    code: ResponseCode
    handle: str = ""
    level: gs1.DigitalLink | None = None
    values: tuple[HandleValue, ...] = ()
    message: str = ""


async def lookup(
    service: Core, dl: gs1.DigitalLink, holds: ServiceHolds, root: str = gs1.DEFAULT_ROOT
) -> Found:
    """Resolve ``dl`` at the longest held prefix, falling back to less specific keys.

    A level whose record has no links gives way to the next (a serial's record may carry
    only data); the first record found is kept in case none of them has links.
    """
    candidates = gs1.candidate_prefixes(dl, root)
    await holds.prefetch(candidates)
    prefix = longest_held(candidates, holds)
    if prefix is None:
        if service.role != "recursive":
            return Found(
                ResponseCode.HANDLE_NOT_FOUND, message=f"no prefix held here for GS1 key {dl.path()}"
            )
        prefix = root  # root form: the recursive resolver locates the delegated prefix
    first: Found | None = None
    for level in dl.ancestors():
        resp = await resolve_following_aliases(service, gs1.to_handle(level, prefix))
        handle = resp.handle
        if resp.code in (ResponseCode.HANDLE_NOT_FOUND, ResponseCode.VALUES_NOT_FOUND):
            continue
        if not resp.ok:
            return Found(resp.code, handle, level, message=resp.message)
        found = Found(ResponseCode.SUCCESS, handle, level, resp.values)
        if gl.links_from_values(resp.values)[0]:
            return found
        first = first or found
    return first or Found(ResponseCode.HANDLE_NOT_FOUND, message=f"no record for GS1 key {dl.path()}")


def refusal(e: SchemeError) -> dict[str, str]:
    """The 400 body of a refused identifier: the reason, and for a GS1 rule its AI and name."""
    body = {"error": e.message}
    if isinstance(e, Gs1Error):
        if e.ai:
            body["ai"] = e.ai
        if e.rule:
            body["rule"] = e.rule
    return body


def _json(
    status: int, obj: object, headers: dict[str, str], content_type: str = "application/json"
) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(obj), content_type=content_type, headers=headers)


class GS1Resolver:
    def __init__(self, service: Core, root: str, resolver_root: str | None, name: str) -> None:
        self.service = service
        self.root = root
        self.resolver_root = resolver_root.rstrip("/") if resolver_root else None
        self.name = name
        self.holds = service_holds(service)

    def _base(self, request: web.Request) -> str:
        return self.resolver_root or f"{request.scheme}://{request.host}"

    async def resolve(self, request: web.Request) -> web.StreamResponse:
        headers = {**_CORS, "Vary": "Accept, Accept-Language"}
        if request.method == "OPTIONS":
            return web.Response(status=204, headers={**headers, **self._options_headers()})
        if request.method not in ("GET", "HEAD"):
            headers["Allow"] = ALLOWED_METHODS
            headers["Link"] = gl.link_header(None)
            return _json(405, {"error": f"method {request.method} not allowed"}, headers)
        url = request.rel_url
        try:
            dl = gs1.parse_path(url.raw_path, url.raw_query_string)
        except SchemeError as e:
            headers["Link"] = gl.link_header(None)
            return _json(400, refusal(e), headers)
        anchor = self._base(request) + dl.path()
        if request.query.get("compress", "").lower() in ("true", "1"):
            headers["Link"] = gl.link_header(anchor)
            base = self._base(request)
            body = {"uri": dl.uri(base), "compressed": f"{base}/{compress(dl.elements())}"}
            return _json(200, body, headers)
        found = await lookup(self.service, dl, self.holds, self.root)
        if found.code != ResponseCode.SUCCESS:
            headers["Link"] = gl.link_header(anchor)
            status = (
                404
                if found.code in (ResponseCode.HANDLE_NOT_FOUND, ResponseCode.SERVER_NOT_RESPONSIBLE)
                else 500
            )
            return _json(status, {"error": found.message or "not found", "anchor": anchor}, headers)
        assert found.level is not None
        links, declared = gl.links_from_values(found.values)
        values = dl.ai_values()
        links = [
            gl.Link(
                lk.link_type, gl.fill_templates(lk.href, values), lk.title, lk.hreflang, lk.type, lk.context
            )
            for lk in links
        ]
        headers["Link"] = gl.link_header(anchor, links)
        default = gl.default_link_type(links, declared)
        params = {k.lower(): v for k, v in request.query.items()}
        wanted = params.get("linktype")
        media = gl.parse_accept(request.headers.get("Accept"))
        if (
            (wanted is not None and wanted.strip().lower().removeprefix("gs1:") in gl.LINKSET_LINKTYPES)
            or gl.LINKSET_MEDIA in media
            or (wanted is None and gl.wants_linkset(media))
        ):
            ctype = gl.LINKSET_MEDIA if gl.LINKSET_MEDIA in media or wanted else "application/json"
            return _json(200, gl.linkset(anchor, links, default), headers, ctype)
        if not links:
            return _json(404, {"error": f"record {found.handle} has no links", "anchor": anchor}, headers)
        link_type = gl.expand_link_type(wanted) if wanted else default
        assert link_type is not None
        candidates = gl.of_type(links, link_type)
        if not candidates and gl.same_type(link_type, gl.DEFAULT_LINK) and default is not None:
            candidates = gl.of_type(links, default)
        if not candidates:
            available = sorted({gl.curie(lk.link_type) for lk in links})
            return _json(
                404,
                {"error": f"no link of type {gl.curie(link_type)}", "anchor": anchor, "linkTypes": available},
                headers,
            )
        chosen = gl.select(
            candidates,
            gl.parse_accept_language(request.headers.get("Accept-Language")),
            params.get("context"),
            media,
        )
        if len(chosen) == 1:
            headers["Location"] = gl.safe_uri(gl.with_query(chosen[0].href, url.raw_query_string))
            return web.Response(status=307, headers=headers)
        return _json(300, gl.linkset(anchor, chosen), headers)

    async def resolve_compressed(self, request: web.Request) -> web.StreamResponse:
        """``/{one base64url segment}``: a fully compressed Digital Link. A single segment is
        never a handle, so one that does not decode is refused with the reason (400); the
        reserved roots (``/console``, ``/metrics``… when not mounted) stay 404."""
        from idr.server.http import RESERVED_ROOTS

        if request.match_info["compressed"] in RESERVED_ROOTS:
            return _json(404, {"error": "not found"}, {**_CORS, "Link": gl.link_header(None)})
        return await self.resolve(request)

    @staticmethod
    def _options_headers() -> dict[str, str]:
        return {
            "Allow": ALLOWED_METHODS,
            "Access-Control-Allow-Methods": ALLOWED_METHODS,
            "Access-Control-Allow-Headers": "Accept, Accept-Language, Content-Type",
            "Link": gl.link_header(None),
        }

    async def well_known(self, request: web.Request) -> web.StreamResponse:
        headers = {**_CORS, "Link": gl.link_header(None)}
        if request.method == "OPTIONS":
            return web.Response(status=204, headers={**headers, **self._options_headers()})
        if request.method not in ("GET", "HEAD"):
            return _json(
                405, {"error": f"method {request.method} not allowed"}, {**headers, "Allow": ALLOWED_METHODS}
            )
        return _json(200, self.description(self._base(request)), headers)

    def description(self, base: str) -> dict[str, object]:
        """The resolver description file (GS1 resolver standard §3, as the community resolver serves it)."""
        return {
            "name": self.name,
            "resolverRoot": base,
            "supportedLinkType": [
                {"namespace": gl.GS1_VOC, "prefix": "gs1:"},
                {"namespace": gl.SCHEMA_ORG, "prefix": "schema:"},
            ],
            "supportedPrimaryKeys": list(gs1.PRIMARY_KEYS),
            "linkTypeDefaultCanBeAll": True,
            "linkTypeDefaultCanBeLinkset": True,
            "supportsLanguageVariants": True,
            "supportsSemanticInterpretation": False,
            "validatesAIcombinations": True,
            "jsonLdContextLocation": gl.LINKSET_CONTEXT,
            "activeLinkTypes": {
                "en": {
                    "gs1:defaultLink": {"title": "Default link", "url": gl.DEFAULT_LINK},
                    "gs1:pip": {"title": "Product Information Page", "url": gl.GS1_VOC + "pip"},
                    "gs1:masterData": {"title": "Master data", "url": gl.GS1_VOC + "masterData"},
                    "gs1:traceability": {
                        "title": "Traceability information",
                        "url": gl.GS1_VOC + "traceability",
                    },
                    "gs1:epcis": {"title": "EPCIS repository", "url": gl.GS1_VOC + "epcis"},
                    "gs1:certificationInfo": {
                        "title": "Certification information",
                        "url": gl.GS1_VOC + "certificationInfo",
                    },
                    "gs1:recallStatus": {"title": "Recall status", "url": gl.GS1_VOC + "recallStatus"},
                    "gs1:productPassport": {
                        "title": "Product passport",
                        "url": gl.GS1_VOC + "productPassport",
                    },
                }
            },
        }


def add_gs1_routes(
    app: web.Application,
    service: Core,
    *,
    root: str = gs1.DEFAULT_ROOT,
    resolver_root: str | None = None,
    name: str = "idr GS1 resolver",
) -> None:
    """Mount the resolver: one route per primary key AI (so ``/01/…`` never reaches the handle
    proxy) and the description file. ``root``: the prefix GS1 keys live under;
    ``resolver_root``: the public base URL used in anchors (default: from the request)."""
    r = GS1Resolver(service, root, resolver_root, name)
    for ai in gs1.PRIMARY_KEYS:
        app.router.add_route("*", f"/{ai}/{{tail:.*}}", r.resolve)
    app.router.add_route("*", "/.well-known/gs1resolver", r.well_known)
    # Plain routes (/metrics, /console…) always win over this one, whatever the order.
    app.router.add_route("*", "/{compressed:[A-Za-z0-9_-]{4,1024}}", r.resolve_compressed)
