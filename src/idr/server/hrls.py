"""``/hrls/…``: reverse lookup as Handle.Net's reverse-lookup service (B2HANDLE HRLS) answers it,
so pyhandle's ``search_handle`` and scripts written for that service work unchanged.

``GET /hrls/handles?URL=https://example.org/*&CHECKSUM=c0ffee`` → ``["88.100/a", …]``: every
query parameter is a search field (a value type) and its value a pattern where ``*`` matches
anything; all fields must hold. Reserved parameters, as that service's: ``limit`` (default
1000, at most 10000), ``page`` (results to skip), ``retrieverecords=true`` (a JSON object
``{handle: [{"type", "value"}…]}`` with each handle's public values instead of a list) and
``enforcesql`` (accepted, meaningless here); and idr's ``pretty``/``callback`` as everywhere.
``GET /hrls/ping`` answers ``OK``. Who may search is ``[search] access`` (core); credentials
as the REST API's (Basic over HTTPS, or an ``Authorization: Handle`` session).
"""

from __future__ import annotations

import base64

from aiohttp import web

from idr.codec import rest
from idr.core.interface import Core
from idr.core.request import Op, Request
from idr.model.errors import HandleError, ResponseCode
from idr.model.value import HandleValue
from idr.server.http import SERVICE_KEY, _flag, _from_response, _identity, _json

RESERVED = frozenset({"limit", "page", "retrieverecords", "enforcesql", "pretty", "callback"})


def _int(params: web.Request, name: str) -> int | None:
    text = params.query.get(name)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise HandleError(ResponseCode.PROTOCOL_ERROR, f"{name}={text!r} is not a number") from None


def _value_json(v: HandleValue) -> dict[str, str]:
    value = v.data.decode("utf-8") if rest.looks_like_text(v.data) else base64.b64encode(v.data).decode()
    return {"type": v.type, "value": value}


async def _records(service: Core, handles: tuple[str, ...]) -> dict[str, list[dict[str, str]]]:
    """Each found handle's public values, as a resolution gives them."""
    out: dict[str, list[dict[str, str]]] = {}
    for h in handles:
        resp = await service.submit(Request(Op.RESOLUTION, h, public_only=True))
        out[h] = [_value_json(v) for v in resp.values] if resp.ok else []
    return out


async def hrls_handles(request: web.Request) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD"):
        raise HandleError(
            ResponseCode.OPERATION_NOT_SUPPORTED, "reverse lookup is GET /hrls/handles?TYPE=VALUE"
        )
    params = request.query
    terms = tuple((k, v) for k, v in params.items() if k.lower() not in RESERVED)
    identity = _identity(request)
    service = request.app[SERVICE_KEY]
    req = Request(
        Op.SEARCH,
        identity=identity,
        terms=terms,
        page_size=_int(request, "limit"),
        offset=_int(request, "page") or 0,
    )
    resp = await service.submit(req)
    if not resp.ok:
        return _from_response(request, resp, "")
    if _flag(params, "retrieverecords", False):
        return _json(request, 200, await _records(service, resp.handles))
    return _json(request, 200, list(resp.handles))


async def hrls_ping(request: web.Request) -> web.StreamResponse:
    return web.Response(text="OK\n")


ROUTES = (("/hrls/handles", hrls_handles), ("/hrls/handles/", hrls_handles), ("/hrls/ping", hrls_ping))
