"""Converged resolution over HTTP: ``GET /api/resolve?id=…`` for any scheme.

``id`` may be a Handle, a GS1 Digital Link (URI or path, compressed or not), a GS1
element string, raw scanner data (symbology identifier, GS/FNC1 separators), a GTIN, an
OID (dotted or ``urn:oid:``) or an Ecode; ``schemes.detect`` decides which. An identifier
a scheme's rules refuse answers 400 with the reason (for GS1 also ``ai`` and ``rule``). The answer
is the Handle.Net REST record of the handle it maps to (same JSON and status codes as
``GET /api/handles/{handle}``) plus ``scheme`` and ``details`` saying what was recognised.
GS1 keys fall back from the most specific record (``/01/x/21/s``) to less specific ones.
Prefixes are matched against what this node homes or, on the top node, has delegated
(``0.NA/<prefix>``); following a delegation to another node is the recursive resolver's job:
a recursive node holds nothing, so it sends the identifier in root form (``GS1/01/…``) and
its resolver locates the prefix across the federation. A scheme identifier whose record is
an alias (``HS_ALIAS``) answers with the target's record.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from idr.codec import rest
from idr.core.interface import Core
from idr.core.request import Op, Request, Response
from idr.model.errors import ResponseCode
from idr.schemes import ecode, gs1
from idr.schemes.common import SchemeError
from idr.schemes.detect import Recognised, SchemeRoots, recognise
from idr.schemes.gs1_syntax import Gs1Error
from idr.server.gs1 import lookup, resolve_following_aliases, service_holds

_HEADERS = {"Access-Control-Allow-Origin": "*"}


def _reply(status: int, obj: object) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(obj), content_type="application/json", headers=_HEADERS
    )


async def resolve_recognised(service: Core, rec: Recognised, roots: SchemeRoots) -> Response:
    """Resolve what ``recognise`` found; GS1 keys (and V0 Ecodes) with the qualifier fallback."""
    dl = rec.key.gs1 if isinstance(rec.key, ecode.Ecode) else rec.key
    if isinstance(dl, gs1.DigitalLink):
        found = await lookup(service, dl, service_holds(service, delegated=True), roots.gs1)
        return Response(found.code, found.handle or rec.handle, found.values, found.message)
    if rec.scheme == "handle":
        return await service.submit(Request(Op.RESOLUTION, rec.handle))
    return await resolve_following_aliases(service, rec.handle)


def add_converged_routes(app: web.Application, service: Core, *, roots: SchemeRoots | None = None) -> None:
    """Mount ``/api/resolve``; ``roots``: the prefixes GS1, OID and Ecode identifiers live under."""
    scheme_roots = roots or SchemeRoots()
    holds = service_holds(service, delegated=True)

    async def resolve(request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            out = rest.error_json(ResponseCode.PROTOCOL_ERROR, f"method {request.method} not allowed")
            resp = _reply(405, out)
            resp.headers["Allow"] = "GET, HEAD"
            return resp
        text = request.query.get("id")
        if not text:
            return _reply(400, rest.error_json(ResponseCode.PROTOCOL_ERROR, "missing query parameter id"))
        try:
            # the prefix handles ``holds`` may ask about, read off the loop first
            await holds.prefetch(recognise(text, None, scheme_roots).candidates)
            rec = recognise(text, holds, scheme_roots)
        except SchemeError as e:
            out = rest.error_json(ResponseCode.INVALID_HANDLE, e.message)
            out["scheme"] = e.scheme
            if isinstance(e, Gs1Error):  # which AI, which GS1 rule
                out.update({k: v for k, v in (("ai", e.ai), ("rule", e.rule)) if v})
            return _reply(400, out)
        answer = await resolve_recognised(service, rec, scheme_roots)
        handle = answer.handle or rec.handle
        if answer.ok:
            out = rest.resolution_json(handle, answer.values)
        else:
            out = rest.error_json(answer.code, answer.message, handle, resolution=True)
        out["scheme"] = rec.scheme
        out["details"] = dict(rec.details)
        return _reply(rest.http_status(answer.code, resolution=True), out)

    app.router.add_route("*", "/api/resolve", resolve)
