"""HTTP front-end: the Handle.Net 9 REST API (``/api/…``) and the hdl.handle.net-style proxy.

This layer only translates: HTTP request → ``core.Request`` → ``NodeService`` →
``core.Response`` → HTTP. Every rule about who may do what lives in the core. What is
decided here is HTTP's own business, following Handle.Net's servlets so its clients
(pyhandle, the HN tools) work unchanged:

* The handle is taken from the *raw* request path and percent-decoded exactly once, so
  ``%2F`` inside a suffix and the handle's case survive; it is echoed as requested
  (pyhandle compares the echo with ``==``).
* Credentials and writes need TLS (manual §14.6): Basic credentials over plain HTTP are
  refused, and any 401 over plain HTTP becomes 403, as Handle.Net's auth filter does.
* Wrong Basic credentials get 401 + ``WWW-Authenticate`` (Handle.Net answers the same way,
  before the request reaches the handle server).
* Nothing escapes as a traceback: a middleware turns any unexpected exception into
  ``500 {"responseCode":2}`` and logs it.

Routes live in one table (``API_ROUTES``); anything the router does not know under a
non-reserved root is a handle for the proxy, so other front-ends (``/metrics``, the
console) can be added to the application without touching this file.
"""

from __future__ import annotations

import base64
import binascii
import html
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

from aiohttp import hdrs, web
from multidict import MultiDict, MultiMapping

from idr.codec import rest
from idr.core.request import Op, Request, Response
from idr.core.service import NodeService
from idr.model.errors import HandleError, ResponseCode
from idr.model.handle import Handle, normalize_key
from idr.model.value import HandleValue, ValueReference

log = logging.getLogger("idr.http")

SERVICE_KEY = web.AppKey("idr.service", NodeService)
SETTINGS_KEY = web.AppKey("idr.http.settings", dict[str, Any])

DEFAULT_MAX_BODY = 1024 * 1024
MAX_ALIAS_HOPS = 20  # Handle.Net HandleResolver's alias limit
# Path roots that are never handles: the proxy leaves them to their own routes (or 404).
RESERVED_ROOTS = frozenset({"api", "metrics", "static", "console", ".well-known"})
_CALLBACK = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]{0,127}$")
_API_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Params = MultiMapping[str]


class _Reply(Exception):
    """Stop handling and send this Handle-style JSON error (status chosen by the caller)."""

    def __init__(
        self, status: int, code: ResponseCode, message: str, headers: Mapping[str, str] | None = None
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


# --------------------------------------------------------------------------- helpers


def _service(request: web.Request) -> NodeService:
    return request.app[SERVICE_KEY]


def _raw_path(request: web.Request) -> str:
    return request.raw_path.partition("?")[0]


def decode_path(raw: str) -> str:
    """Percent-decode a raw path once, as Handle.Net's ``decodeURLIgnorePlus`` (``+`` stays).

    Rejects what can only be an attack or a broken client: bytes that are not UTF-8,
    control characters and ``..`` segments (RC 102, INVALID_HANDLE).
    """
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise HandleError(ResponseCode.INVALID_HANDLE, "path contains a control character")
    try:
        text = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError as e:
        raise HandleError(ResponseCode.INVALID_HANDLE, "path is not valid UTF-8 once percent-decoded") from e
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise HandleError(ResponseCode.INVALID_HANDLE, "handle contains a control character")
    if ".." in text.split("/"):
        raise HandleError(ResponseCode.INVALID_HANDLE, "handle contains a '..' path segment")
    return text


def _flag(params: Params, name: str, default: bool) -> bool:
    """Handle.Net booleans: absent → default, bare ``?x`` / ``true`` / ``yes`` → True."""
    if name not in params:
        return default
    value = params.get(name, "").strip().lower()
    return value in ("", "true", "yes")


def _int_param(params: Params, name: str) -> int | None:
    if name not in params:
        return None
    text = params.get(name, "")
    try:
        return int(text)
    except ValueError:
        raise HandleError(
            ResponseCode.PROTOCOL_ERROR, f"parameter {name}={text!r} is not an integer"
        ) from None


def _indexes(params: Params) -> tuple[int, ...]:
    out = []
    for text in params.getall("index", []):
        try:
            out.append(int(text))
        except ValueError:
            raise HandleError(ResponseCode.PROTOCOL_ERROR, f"index={text!r} is not an integer") from None
    return tuple(out)


def _has_json_entity(request: web.Request) -> bool:
    return request.content_type.strip().lower() == "application/json"


async def _body(request: web.Request) -> bytes:
    limit = request.app[SETTINGS_KEY]["max_body"]
    if request.content_length is not None and request.content_length > limit:
        raise _Reply(413, ResponseCode.PROTOCOL_ERROR, f"request body larger than {limit} bytes")
    return await request.read()  # aiohttp enforces client_max_size while reading (413)


async def _params(request: web.Request) -> Params:
    """Query parameters; for POST/DELETE with a JSON object body, the body's fields too
    (Handle.Net: "POST defaults to GET-with-parameters-in-body")."""
    if request.method not in ("POST", "DELETE") or not _has_json_entity(request):
        return request.query
    doc = rest.loads(await _body(request))
    if not isinstance(doc, dict):
        raise HandleError(ResponseCode.PROTOCOL_ERROR, "POST body must be a JSON object of parameters")
    params: MultiDict[str] = MultiDict(request.query)
    for key, value in doc.items():
        for item in value if isinstance(value, list) else [value]:
            params.add(key, "true" if item is True else "false" if item is False else str(item))
    return params


def _json(
    request: web.Request, status: int, obj: Any, headers: Mapping[str, str] | None = None
) -> web.Response:
    """Serialise with ``pretty`` and JSONP ``callback`` honoured; 401 over plain HTTP → 403."""
    params = request.query
    hdrs_out = dict(headers or {})
    if status == 401:
        if request.secure:
            hdrs_out.setdefault("WWW-Authenticate", 'Basic realm="handle"')
        else:
            status = 403  # Handle.Net: no authentication is possible on an insecure channel
    body = rest.dumps(obj, pretty=_flag(params, "pretty", False))
    callback = params.get("callback")
    if callback is not None:
        if not _CALLBACK.match(callback):
            body = rest.dumps(
                {"responseCode": int(ResponseCode.PROTOCOL_ERROR), "message": "invalid callback"}
            )
            return web.Response(status=400, body=body, content_type="application/json")
        hdrs_out["X-Content-Type-Options"] = "nosniff"
        return web.Response(
            status=status,
            body=b"/**/" + callback.encode() + b"(" + body + b");",
            content_type="application/javascript",
            charset="utf-8",
            headers=hdrs_out,
        )
    return web.Response(status=status, body=body, content_type="application/json", headers=hdrs_out)


def _error(
    request: web.Request,
    code: ResponseCode | int,
    message: str,
    handle: str | None = None,
    *,
    resolution: bool = False,
    status: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    obj = rest.error_json(code, message, handle, resolution=resolution)
    return _json(request, status or rest.http_status(code, resolution=resolution), obj, headers)


def _from_response(
    request: web.Request, resp: Response, handle: str, *, resolution: bool = False
) -> web.Response:
    return _error(request, resp.code, resp.message, handle, resolution=resolution)


def _require_tls(request: web.Request) -> None:
    if not request.secure:
        raise _Reply(403, ResponseCode.AUTHENTICATION_NEEDED, "authentication requires HTTPS")


def _identity(request: web.Request) -> ValueReference | None:
    """The authenticated caller from ``Authorization: Basic`` (HS_SECKEY), or None.

    User part is ``index:handle`` percent-encoded (pyhandle: ``quote(username)``); the
    password is the secret key's bytes.
    """
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is None:
        return None
    if not request.secure:
        raise _Reply(403, ResponseCode.AUTHENTICATION_NEEDED, "authentication requires HTTPS")
    scheme, _, token = header.strip().partition(" ")
    failed = _Reply(
        401,
        ResponseCode.AUTHENTICATION_FAILED,
        "authentication failed: identity not verified",
        {"WWW-Authenticate": 'Basic realm="handle"'},
    )
    if scheme.lower() != "basic":
        failed.message = f"authentication scheme {scheme!r} is not supported; use Basic over HTTPS"
        raise failed
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise failed from None
    user, sep, secret = raw.partition(b":")
    if not sep:
        raise failed
    try:
        identity = ValueReference.parse(unquote_to_bytes(user).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise failed from None
    if not _service(request).authenticate_secret(identity, secret):
        raise failed
    return identity


# --------------------------------------------------------------------------- /api/handles


async def api_handles(request: web.Request) -> web.StreamResponse:
    raw = _raw_path(request)
    rest_of_path = raw[len("/api/handles") :].removeprefix("/")
    handle = decode_path(rest_of_path)
    method = request.method
    if method in ("GET", "HEAD", "POST"):
        params = await _params(request)
        if not handle:
            if "prefix" in params:
                return await _list_handles(request, params)
            raise HandleError(ResponseCode.INVALID_HANDLE, "Empty handle invalid")
        return await _resolve(request, handle, params)
    if method == "PUT":
        return await _put(request, handle)
    if method == "DELETE":
        return await _delete(request, handle)
    return _unknown_endpoint(request, 405)


class EncodedCache:
    """Handle key → its public values, already JSON-encoded: the hot path's one buffer.

    Filled only by plain anonymous resolutions; every commit's listener drops the keys it
    touched and bumps ``generation``, and an encoding computed across a bump is not kept,
    so a write racing a read can never leave a stale entry behind.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.generation = 0
        self._data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self._data.get(key)

    def put(self, key: str, encoded: bytes, generation: int) -> None:
        if generation != self.generation or self.capacity <= 0:
            return
        if len(self._data) >= self.capacity:
            self._data.pop(next(iter(self._data)), None)
        self._data[key] = encoded

    def invalidate(self, keys: Iterable[str]) -> None:
        self.generation += 1
        for k in keys:
            self._data.pop(k, None)


CACHE_KEY = web.AppKey("idr.http.cache", EncodedCache)


def _resolution_body(handle: str, encoded_values: bytes) -> bytes:
    return b'{"responseCode":1,"handle":' + rest.dumps(handle) + b',"values":' + encoded_values + b"}"


async def _resolve(request: web.Request, handle: str, params: Params) -> web.Response:
    identity = _identity(request)
    public_only = _flag(params, "publicOnly", identity is None)
    plain = identity is None and public_only and not params and request.method != "POST"
    cache = request.app[CACHE_KEY]
    key = normalize_key(handle)
    if plain:
        hit = cache.get(key)
        if hit is not None:
            return web.Response(body=_resolution_body(handle, hit), content_type="application/json")
    generation = cache.generation
    req = Request(
        Op.RESOLUTION,
        handle,
        indexes=_indexes(params),
        types=tuple(params.getall("type", [])),
        identity=identity,
        public_only=public_only,
        authoritative=_flag(params, "auth", False),
    )
    resp = await _service(request).submit(req)
    if not resp.ok:
        return _from_response(request, resp, handle, resolution=True)
    if plain:
        encoded = rest.dumps(rest.values_to_json(resp.values))
        cache.put(key, encoded, generation)
        return web.Response(body=_resolution_body(handle, encoded), content_type="application/json")
    return _json(request, 200, rest.resolution_json(handle, resp.values))


async def _list_handles(request: web.Request, params: Params) -> web.Response:
    prefix = params.get("prefix", "")
    identity = _identity(request)
    page, size = _int_param(params, "page"), _int_param(params, "pageSize")
    paged = page is not None and size is not None and page >= 0 and size >= 0
    req = Request(
        Op.LIST_HANDLES,
        prefix,
        identity=identity,
        page=page if paged else None,
        page_size=size if paged else None,
    )
    resp = await _service(request).submit(req)
    if not resp.ok:
        return _from_response(request, resp, prefix)
    total = resp.total if resp.total is not None else len(resp.handles)
    obj = rest.list_json(
        resp.handles, total, prefix=prefix, page=page if paged else None, page_size=size if paged else None
    )
    return _json(request, 200, obj)


async def _put(request: web.Request, handle: str) -> web.Response:
    _require_tls(request)
    if not _has_json_entity(request):
        raise HandleError(ResponseCode.PROTOCOL_ERROR, f"Unsupported media type {request.content_type}")
    identity = _identity(request)
    if identity is None:
        raise HandleError(ResponseCode.AUTHENTICATION_NEEDED, "authentication needed to write")
    params = request.query
    values = rest.values_from_json(rest.loads(await _body(request)), handle)
    overwrite = _flag(params, "overwrite", True)
    mint = _flag(params, "mintNewSuffix", False)
    index_params = params.getall("index", [])
    if not index_params:
        op = Op.CREATE_HANDLE
    else:
        op = Op.ADD_VALUE
        if index_params != ["various"]:
            wanted = set(_indexes(params))
            if wanted != {v.index for v in values} or len(wanted) != len(values):
                raise HandleError(ResponseCode.PROTOCOL_ERROR, "Mismatched indexes in PUT request")
    if not handle:
        raise HandleError(ResponseCode.INVALID_HANDLE, "Empty handle invalid")
    req = Request(op, handle, values=values, identity=identity, overwrite=overwrite, mint=mint)
    resp = await _service(request).submit(req)
    if not resp.ok:
        return _from_response(request, resp, handle)
    echoed = resp.handle if mint else handle
    return _json(request, 200 if overwrite else 201, {"responseCode": 1, "handle": echoed})


async def _delete(request: web.Request, handle: str) -> web.Response:
    _require_tls(request)
    identity = _identity(request)
    if identity is None:
        raise HandleError(ResponseCode.AUTHENTICATION_NEEDED, "authentication needed to delete")
    if not handle:
        raise HandleError(ResponseCode.INVALID_HANDLE, "Empty handle invalid")
    indexes = _indexes(request.query)
    op = Op.REMOVE_VALUE if indexes else Op.DELETE_HANDLE
    resp = await _service(request).submit(Request(op, handle, indexes=indexes, identity=identity))
    if not resp.ok:
        return _from_response(request, resp, handle)
    return _json(request, 200, {"responseCode": 1, "handle": handle})


# --------------------------------------------------------------------------- /api/prefixes


async def api_prefixes(request: web.Request) -> web.StreamResponse:
    raw = _raw_path(request)
    path_prefix = decode_path(raw[len("/api/prefixes") :].removeprefix("/"))
    method = request.method
    if method not in _API_METHODS:
        return _unknown_endpoint(request, 405)
    params = await _params(request)
    prefix = params.get("prefix", path_prefix)
    if method in ("GET", "HEAD"):
        if prefix:
            return _json(request, 405, {"responseCode": 4, "message": "use POST or DELETE for one prefix"})
        return await _list_prefixes(request, params)
    if method == "PUT":
        return _unknown_endpoint(request, 405)
    _require_tls(request)
    identity = _identity(request)
    if identity is None:
        raise HandleError(ResponseCode.AUTHENTICATION_NEEDED, "authentication needed to home or unhome")
    if not prefix:
        which = "homing" if method == "POST" else "unhoming"
        raise HandleError(ResponseCode.PROTOCOL_ERROR, f"Prefix not specified in {which} request")
    op = Op.HOME_NA if method == "POST" else Op.UNHOME_NA
    resp = await _service(request).submit(Request(op, prefix, identity=identity))
    if not resp.ok:
        return _from_response(request, resp, prefix)
    return _json(request, 200, {"responseCode": 1, "handle": prefix})


async def _list_prefixes(request: web.Request, params: Params) -> web.Response:
    identity = _identity(request)
    resp = await _service(request).submit(Request(Op.LIST_HOMED_NAS, identity=identity))
    if not resp.ok:
        return _from_response(request, resp, "")
    everything = list(resp.handles)
    page, size = _int_param(params, "page"), _int_param(params, "pageSize")
    shown = everything
    if page is not None and size is not None and page >= 0 and size >= 0:
        shown = everything[page * size : (page + 1) * size]
    else:
        page = size = None
    return _json(
        request, 200, rest.list_json(shown, len(everything), page=page, page_size=size, key="prefixes")
    )


# --------------------------------------------------------------------------- unknown endpoints


def _unknown_endpoint(request: web.Request, status: int = 404) -> web.Response:
    message = f"Unknown HTTP API endpoint {request.method} {request.raw_path.partition('?')[0]}"
    headers = {"Allow": ", ".join(_API_METHODS)} if status == 405 else None
    return _json(
        request, status, {"responseCode": int(ResponseCode.PROTOCOL_ERROR), "message": message}, headers
    )


async def api_unknown(request: web.Request) -> web.StreamResponse:
    if request.method not in _API_METHODS:
        return _unknown_endpoint(request, 405)
    return _unknown_endpoint(request, 404)


# --------------------------------------------------------------------------- proxy


def _page(status: int, title: str, body_html: str, headers: Mapping[str, str] | None = None) -> web.Response:
    doc = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head><body>{body_html}</body></html>"
    )
    return web.Response(status=status, text=doc, content_type="text/html", headers=headers)


def _values_page(handle: str, values: Iterable[HandleValue]) -> web.Response:
    rows = []
    for v in values:
        data = rest.data_to_json(v.type, v.data)
        shown = data["value"] if isinstance(data["value"], str) else rest.dumps(data["value"]).decode()
        rows.append(
            f"<tr><td>{v.index}</td><td>{html.escape(v.type)}</td><td>{html.escape(shown)}</td>"
            f"<td>{v.ttl}</td></tr>"
        )
    body = (
        f"<h1>Handle {html.escape(handle)}</h1><table border='1'>"
        "<tr><th>Index</th><th>Type</th><th>Data</th><th>TTL</th></tr>" + "".join(rows) + "</table>"
    )
    return _page(200, f"Handle {handle}", body)


def _redirect_target(values: Iterable[HandleValue]) -> str | None:
    """First ``URL`` value by index, then the first ``URL.*`` sub-type (HDLProxy's order)."""
    vals = sorted(values, key=lambda v: v.index)
    for exact in (True, False):
        for v in vals:
            t = v.type.upper()
            if (t == "URL") if exact else t.startswith("URL."):
                try:
                    url = v.data.decode("utf-8").strip()
                except UnicodeDecodeError:
                    continue
                if url and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
                    return url
    return None


def _wants_json(request: web.Request) -> bool:
    accept = request.headers.get(hdrs.ACCEPT, "")
    return "application/json" in accept and "text/html" not in accept


async def proxy(request: web.Request) -> web.StreamResponse:
    """``GET /{handle}``: redirect to its URL (302), or show its values."""
    raw = _raw_path(request)
    if raw in ("", "/"):
        return _page(200, "idr", "<h1>idr handle proxy</h1><p>GET /{prefix}/{suffix} resolves a handle.</p>")
    if request.method not in ("GET", "HEAD"):
        return _page(405, "Method not allowed", "<h1>405 Method not allowed</h1>", {"Allow": "GET, HEAD"})
    try:
        handle = decode_path(raw[1:])
        Handle.parse(handle)
    except HandleError as e:
        return _page(400, "Invalid handle", f"<h1>Invalid handle</h1><p>{html.escape(e.message)}</p>")
    params = request.query
    service = _service(request)
    if _wants_json(request):
        return await _resolve(request, handle, params)
    current = handle
    values: tuple[HandleValue, ...] = ()
    for _ in range(MAX_ALIAS_HOPS + 1):
        resp = await service.submit(Request(Op.RESOLUTION, current))
        if resp.code == ResponseCode.HANDLE_NOT_FOUND:
            msg = f"<h1>Handle not found</h1><p>{html.escape(current)}</p>"
            return _page(404, "Handle not found", msg)
        if not resp.ok:
            status = rest.http_status(resp.code, resolution=True)
            msg = f"<h1>Error {int(resp.code)}</h1><p>{html.escape(resp.message)}</p>"
            return _page(status if status >= 400 else 500, "Error", msg)
        values = resp.values
        alias = next((v for v in values if v.type.upper() == "HS_ALIAS"), None)
        if alias is None or "ignore_aliases" in params:
            break
        current = alias.data.decode("utf-8", "replace")
    else:
        return _page(500, "Alias loop", f"<h1>More than {MAX_ALIAS_HOPS} aliases</h1>")
    if "noredirect" in params or params.get("action") == "showvalues":
        return _values_page(current, values)
    target = _redirect_target(values)
    if target is None:
        return _values_page(current, values)
    target += params.get("urlappend", "")
    ttls = [v.ttl for v in values if v.ttl_type == 0 and v.ttl >= 0]
    headers = {"Location": target}
    if ttls:
        headers["Cache-Control"] = f"max-age={min(ttls)}"
    link = html.escape(target, quote=True)
    return _page(302, "Handle Redirect", f'<a href="{link}">{link}</a>', headers)


# --------------------------------------------------------------------------- wiring


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map every failure to a Handle-style answer; unknown paths go to the proxy."""
    try:
        exc = request.match_info.http_exception
        if exc is not None and exc.status == 404:
            root = decode_path(_raw_path(request)).lstrip("/").partition("/")[0]
            if root == "api":
                return await api_unknown(request)
            if root not in RESERVED_ROOTS and request.app[SETTINGS_KEY]["proxy"]:
                return await proxy(request)
        return await handler(request)
    except _Reply as r:
        return _error(request, r.code, r.message, status=r.status, headers=r.headers)
    except HandleError as e:
        return _error(request, e.code, e.message)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS_KEY]["max_body"]
        return _error(
            request, ResponseCode.PROTOCOL_ERROR, f"request body larger than {limit} bytes", status=413
        )
    except web.HTTPException as e:
        if e.status >= 400:
            return _error(request, ResponseCode.PROTOCOL_ERROR, e.reason, status=e.status)
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.raw_path)
        return _error(request, ResponseCode.ERROR, "internal server error", status=500)


# The API's route table; add further front-end routes to the returned app the same way.
API_ROUTES: tuple[tuple[str, Handler], ...] = (
    ("/api/handles", api_handles),
    ("/api/handles/{handle:.*}", api_handles),
    ("/api/prefixes", api_prefixes),
    ("/api/prefixes/{prefix:.*}", api_prefixes),
)


def make_http_app(
    service: NodeService,
    *,
    tls: bool,
    max_body: int = DEFAULT_MAX_BODY,
    proxy: bool = True,
    routes: Iterable[tuple[str, Handler]] = (),
    cache_entries: int = 100_000,
) -> web.Application:
    """The node's HTTP application.

    ``tls``: whether the node also serves HTTPS (writes and credentials are accepted
    only on requests that arrived over TLS either way). ``routes``: extra ``(path,
    handler)`` pairs (any method) registered ahead of the API's.
    """
    app = web.Application(middlewares=[_errors], client_max_size=max_body)
    app[SERVICE_KEY] = service
    app[SETTINGS_KEY] = {"max_body": max_body, "tls": tls, "proxy": proxy}
    cache = EncodedCache(cache_entries)
    app[CACHE_KEY] = cache
    service.add_listener(cache.invalidate)
    for path, handler in (*routes, *API_ROUTES):
        app.router.add_route("*", path, handler)
    from idr.server.federation import add_federation_routes  # imports this module: late

    add_federation_routes(app, service)
    return app


__all__ = [
    "API_ROUTES",
    "DEFAULT_MAX_BODY",
    "RESERVED_ROOTS",
    "SERVICE_KEY",
    "decode_path",
    "make_http_app",
]
