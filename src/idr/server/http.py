"""HTTP front-end: the Handle.Net 9 REST API (``/api/…``) and the hdl.handle.net-style proxy.

This layer only translates: HTTP request → ``core.Request`` → ``Core`` →
``core.Response`` → HTTP. Every rule about who may do what lives in the core. What is
decided here is HTTP's own business, following Handle.Net's servlets so its clients
(pyhandle, the HN tools) work unchanged:

* The handle is taken from the *raw* request path and percent-decoded exactly once, so
  ``%2F`` inside a suffix and the handle's case survive; it is echoed as requested
  (pyhandle compares the echo with ``==``).
* Credentials and writes need TLS (manual §14.6): Basic or Handle credentials over plain
  HTTP are refused, and any 401 over plain HTTP becomes 403, as Handle.Net's auth filter does.
* Two ways to authenticate, as Handle.Net 9: ``Basic`` (HS_SECKEY as the password) and the
  ``Authorization: Handle`` challenge–response with its sessions API (``/api/sessions``;
  ``http_auth`` and ``sessions``). Every 401 carries ``WWW-Authenticate: Handle
  sessionId=…, nonce=…`` (a session is opened for it) and, unless the client is plainly not
  using Basic, ``Basic realm="handle"`` too (``HeaderFixingResponseWrapper``).
* The anonymous ``GET /api/handles/{h}`` of a cached handle skips everything but one dict
  lookup: its whole answer is kept encoded (``EncodedCache.answer``); ``idr serve`` answers it
  before aiohttp routes the request or runs a middleware (``fast_path``).
* Nothing escapes as a traceback: a middleware turns any unexpected exception into
  ``500 {"responseCode":2}`` and logs it.

Routes live in one table (``API_ROUTES``); anything the router does not know under a
non-reserved root is a handle for the proxy, so other front-ends (``/metrics``, the
console) can be added to the application without touching this file.
"""

from __future__ import annotations

import base64
import binascii
import functools
import html
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, cast
from urllib.parse import unquote_to_bytes

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict, MultiDict, MultiDictProxy, MultiMapping

from idr.codec import rest
from idr.core.interface import Core, drops_everything
from idr.core.request import Op, Request, Response
from idr.model.errors import HandleError, ResponseCode
from idr.model.handle import Handle, normalize_key
from idr.model.url import has_control, script_scheme
from idr.model.value import HandleValue, ValueReference
from idr.server import http_auth
from idr.server.accesslog import FAST_HIT
from idr.server.limits import CostGate
from idr.server.sessions import Session, SessionTable
from idr.server.throttle import THROTTLE_KEY, Throttle, Throttled
from idr.server.throttle import install as install_throttle
from idr.server.walks import WalkGate
from idr.store.base import StoreError, store_failure

log = logging.getLogger("idr.http")

SERVICE_KEY = web.AppKey("idr.service", Core)
SETTINGS_KEY = web.AppKey("idr.http.settings", dict[str, Any])
SESSIONS_KEY = web.AppKey("idr.http.sessions", SessionTable)
GATE_KEY = web.AppKey("idr.http.verify_gate", CostGate)
# per request: the Handle-auth session in play (the 401 challenge names it) and why auth failed
_SESSION = web.RequestKey("idr.http.session", Session)
_AUTH_ERROR = web.RequestKey("idr.http.auth_error", str)
_LOGIN = web.RequestKey("idr.http.login", ValueReference)
_RENAMED = web.RequestKey("idr.http.renamed", Session)  # a session this request authenticated

DEFAULT_MAX_BODY = 1024 * 1024
MAX_ALIAS_HOPS = 20  # Handle.Net HandleResolver's alias limit
# Path roots that are never handles: the proxy leaves them to their own routes (or 404).
RESERVED_ROOTS = frozenset({"api", "hrls", "metrics", "static", "console", ".well-known"})
_CALLBACK = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]{0,127}$")
_API_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE")
_HANDLES = "/api/handles/"
_JSON_HEADERS: CIMultiDict[str] = CIMultiDict({hdrs.CONTENT_TYPE: "application/json"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Params = MultiMapping[str]
_NO_PARAMS: Params = MultiDictProxy(MultiDict())


def _query(request: web.Request) -> Params:
    """``request.query``, without parsing the URL again when it has no query (every write)."""
    return request.query if "?" in request.raw_path else _NO_PARAMS


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


def _service(request: web.Request) -> Core:
    return request.app[SERVICE_KEY]


def _raw_path(request: web.Request) -> str:
    return request.raw_path.partition("?")[0]


def decode_path(raw: str) -> str:
    """Percent-decode a raw path once, as Handle.Net's ``decodeURLIgnorePlus`` (``+`` stays).

    Rejects what can only be an attack or a broken client: bytes that are not UTF-8,
    control characters and ``..`` segments (RC 102, INVALID_HANDLE).
    """
    if has_control(raw):
        raise HandleError(ResponseCode.INVALID_HANDLE, "path contains a control character")
    try:
        text = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError as e:
        raise HandleError(ResponseCode.INVALID_HANDLE, "path is not valid UTF-8 once percent-decoded") from e
    if has_control(text):
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
    params = _query(request)
    hdrs_out: CIMultiDict[str] = CIMultiDict(headers or {})
    if status == 401:
        if request.secure:
            if hdrs.WWW_AUTHENTICATE not in hdrs_out:
                for challenge in _challenges(request):
                    hdrs_out.add(hdrs.WWW_AUTHENTICATE, challenge)
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


def _quote(text: str) -> str:
    """A header quoted-string (HN ``quote``: ASCII, no controls, ``\\`` and ``"`` escaped)."""
    text = "".join(c for c in text if 0x20 <= ord(c) < 0x7F)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _challenges(request: web.Request) -> list[str]:
    """``WWW-Authenticate`` values for a 401 over TLS (HN ``addAuthenticateHeaders``): Basic
    unless the client sent another scheme or is an XHR, and always a Handle challenge naming
    the request's session (a new one if it had none)."""
    out = []
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is not None:
        wants_basic = header.lstrip().lower().startswith("basic")
    else:
        wants_basic = request.headers.get("X-Requested-With") != "XMLHttpRequest"
    if wants_basic:
        out.append('Basic realm="handle"')
    session = request.get(_SESSION)
    if session is None:
        session = request.app[SESSIONS_KEY].create()
    challenge = f"Handle sessionId={_quote(session.id)}, nonce={_quote(_b64(session.nonce))}"
    error = request.get(_AUTH_ERROR)
    if error:
        challenge += f", error={_quote(error)}"
    out.append(challenge)
    return out


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _auth_failed(request: web.Request, message: str) -> _Reply:
    request[_AUTH_ERROR] = message
    return _Reply(401, ResponseCode.AUTHENTICATION_FAILED, f"authentication failed: {message}")


def _parse_basic(token: str) -> tuple[ValueReference | None, bytes | None]:
    """A ``Basic`` token → (the identity it names, the password; None without a ``:``).
    user is ``index:handle`` percent-encoded (pyhandle: ``quote(username)``), the password
    the secret key's bytes. Parsed only: nothing here is checked against the store."""
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None, None
    user, sep, secret = raw.partition(b":")
    try:
        identity = ValueReference.parse(unquote_to_bytes(user).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None, None
    return identity, secret if sep else None


# A writing client sends the same token on every request, and each is read twice (the
# identity's record preloaded, then the secret checked): parse each token once. Only the
# parse is kept — the secret is compared with the identity's current HS_SECKEY every time,
# so a changed or removed key takes effect at once. Bounded; long tokens are not kept.
_parse_basic_cached = functools.lru_cache(maxsize=1024)(_parse_basic)
_MAX_CACHED_TOKEN = 512


def _basic_parts(token: str) -> tuple[ValueReference | None, bytes | None]:
    return _parse_basic_cached(token) if len(token) <= _MAX_CACHED_TOKEN else _parse_basic(token)


def _basic_claim(token: str) -> ValueReference | None:
    """The identity a ``Basic`` token names (not yet checked)."""
    return _basic_parts(token)[0]


def _basic_identity(request: web.Request, token: str) -> ValueReference | None:
    """``Basic``: the identity, once the password proved it (the identity's HS_SECKEY);
    None when the credentials do not verify."""
    identity, secret = _basic_parts(token)
    if identity is None or secret is None:
        return None
    throttle = request.app[THROTTLE_KEY]
    _begin(request, identity)
    if not _service(request).authenticate_secret(identity, secret):
        return None
    throttle.succeeded(request.remote, identity)
    return identity


def _begin(request: web.Request, identity: ValueReference) -> None:
    """A secret is about to be checked: 429 with Retry-After while this address or this
    identity must wait after failed attempts (``idr.server.throttle``)."""
    try:
        request.app[THROTTLE_KEY].begin(request.remote, identity)
    except Throttled as e:
        headers = {"Retry-After": str(e.retry_after)}
        raise _Reply(429, ResponseCode.SERVER_TOO_BUSY, str(e), headers) from None


async def _handle_login(request: web.Request, session: Session, auth: http_auth.HandleAuth) -> ValueReference:
    """Check a signed ``nonce || cnonce`` against the session's nonce, which this attempt uses
    up; on success the session is authenticated as the identity. AuthFailed otherwise."""
    if auth.version not in (None, "0"):
        raise http_auth.AuthFailed("unknown version in Authorization: Handle")
    if auth.incomplete:
        raise http_auth.AuthFailed("missing fields in authentication data")
    nonce = request.app[SESSIONS_KEY].take_nonce(session)
    assert auth.id is not None and auth.cnonce is not None
    claimed = http_auth.parse_identity(auth.id)
    auth_type, answer = http_auth.signed_response(auth)
    try:
        cnonce = base64.b64decode(auth.cnonce.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise http_auth.AuthFailed("cnonce is not base64") from None
    _begin(request, claimed)
    await _service(request).preload([claimed.handle])  # so the read below never waits
    values = _service(request).identity_values(claimed, auth_type)
    if not values:
        raise http_auth.AuthFailed(f"no {auth_type} value for {auth.id}")
    # The client chose the cost (PBKDF2 iterations, key sizes): off the loop, a bounded amount
    # at a time; when the gate is full the attempt is 503 and not counted against anyone.
    throttle = request.app[THROTTLE_KEY]
    try:
        identity = await request.app[GATE_KEY].run(
            http_auth.verify, claimed, auth_type, values, nonce, cnonce, answer
        )
    except HandleError:
        throttle.cancel(request.remote, claimed)
        raise
    throttle.succeeded(request.remote, claimed)
    _authenticated(request, session, identity, auth.id)
    return identity


def _authenticated(request: web.Request, session: Session, identity: ValueReference, id_text: str) -> None:
    """``session`` proved ``identity``: it is renamed (no session fixation), and the answer
    names it in ``Authentication-Info: Handle sessionId=…`` (RFC 7615), as the sessions API's
    JSON does, because the id the client sent no longer works."""
    request.app[SESSIONS_KEY].authenticate(session, identity, id_text)
    request[_RENAMED] = session


async def _handle_authentication(request: web.Request) -> None:
    """Before any handler (HN's ``StandardHandleAuthenticationFilter``): a login attempt in an
    ``Authorization: Handle`` header is verified here, off the event loop, so that
    ``_identity`` stays a plain function for every route; a failed one is a 401 at once."""
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is None or not request.secure:
        return
    if header.lstrip()[:6].lower() == "basic ":
        # The identity's record, cached now (off the loop if the store may block), so that
        # checking the secret in ``_identity`` never waits on the store.
        claimed = _basic_claim(header.strip()[6:])
        if claimed is not None:
            await _service(request).preload([claimed.handle])
        return
    if header.lstrip()[:6].lower() != "handle":
        return
    auth = http_auth.parse_header(header)
    if auth is None or auth.sessionId is None or not auth.authenticating:
        return  # _identity explains what is wrong, if the route asks who the caller is
    session = request.app[SESSIONS_KEY].get(auth.sessionId)
    if session is None:
        raise _auth_failed(request, "unknown or expired session")
    request[_SESSION] = session
    try:
        request[_LOGIN] = await _handle_login(request, session, auth)
    except http_auth.AuthFailed as e:
        raise _auth_failed(request, str(e)) from None


def _identity(request: web.Request) -> ValueReference | None:
    """The authenticated caller, or None for an anonymous request.

    ``Basic`` checks the secret key on every request. ``Handle`` either names a session
    (``sessionId`` alone: whoever that session authenticated as) or was a login attempt in
    that session, already verified by ``_handle_authentication``; an unknown or expired
    session is a 401 whose challenge opens a new one.
    """
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is None:
        return None
    if not request.secure:
        raise _Reply(403, ResponseCode.AUTHENTICATION_NEEDED, "authentication requires HTTPS")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() == "basic":
        identity = _basic_identity(request, token)
        if identity is None:
            raise _auth_failed(request, "identity not verified")
        return identity
    if scheme.lower() != "handle":
        raise _auth_failed(request, f"authentication scheme {scheme!r} is not supported; use Basic or Handle")
    auth = http_auth.parse_header(header)
    if auth is None:
        raise _auth_failed(request, "malformed Authorization: Handle")
    if auth.sessionId is None:
        if auth.authenticating:  # HN: a login needs the nonce of an existing session
            raise _auth_failed(request, "no sessionId: get a nonce from the 401 or POST /api/sessions")
        return None
    login: ValueReference | None = request.get(_LOGIN)
    if login is not None:
        return login
    session = request.app[SESSIONS_KEY].get(auth.sessionId)
    if session is None:
        raise _auth_failed(request, "unknown or expired session")
    request[_SESSION] = session
    return session.identity


# --------------------------------------------------------------------------- /api/handles


def _cached(request: web.BaseRequest, cache: EncodedCache | None = None) -> bytes | None:
    """Hot path: the whole answer to an anonymous GET with no query and nothing
    percent-encoded (so the raw tail *is* the handle), when it is cached; a cached key was
    validated (decode_path, Handle.parse) when it was filled, and those checks do not depend
    on ASCII case, so any spelling of it is valid too. ``cache``: the application's (by
    default found through the request's route, which a request not routed yet lacks)."""
    raw = request.raw_path
    if (
        raw.startswith(_HANDLES)
        and request.method == "GET"
        and "?" not in raw
        and "%" not in raw
        and hdrs.AUTHORIZATION not in request.headers
    ):
        handle = raw[len(_HANDLES) :]
        if cache is None:
            cache = cast(web.Request, request).app[CACHE_KEY]
        return cache.answer(normalize_key(handle), handle)
    return None


def fast_path(
    app: web.Application,
    handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
    answered: Callable[[float], None] | None = None,
) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
    """``handler`` (the application's, ``web.Server.request_handler``) with a cached anonymous
    resolution answered before it: no routing, no middleware. Per request that is aiohttp's
    route resolution, its middleware wrappers and ours (the node stacks four), ~15-20% of the
    CPU of such an answer (bench/http_resolve.py). What the skipped layers do for such a
    request is done here: the answer is counted (``answered``: the node's HTTP tally, as its
    middleware does), and marked (``FAST_HIT``) for the access log, which cannot read a
    route. A request with ``Expect`` goes the usual way (its 100-continue handler)."""
    cache = app[CACHE_KEY]
    clock = time.perf_counter

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        t0 = clock()
        body = _cached(request, cache)
        if body is None or hdrs.EXPECT in request.headers:
            return await handler(request)
        request[FAST_HIT] = True
        response = web.Response(body=body, content_type="application/json")
        if answered is not None:
            answered(clock() - t0)
        return response

    return handle


async def api_handles(request: web.Request) -> web.StreamResponse:
    raw = request.raw_path
    body = _cached(request)  # (fast_path answered it unless the cache was filled since, or the
    # application runs without it)
    if body is not None:
        return web.Response(body=body, content_type="application/json")
    raw = raw.partition("?")[0]
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
    """Handle key → its public values, already JSON-encoded, and the whole answer for the
    spelling last asked: the hot path's one buffer.

    Filled only by plain anonymous resolutions; every commit's listener drops the keys it
    touched and bumps ``generation``, and an encoding computed across a bump is not kept,
    so a write racing a read can never leave a stale entry behind.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.generation = 0
        # key → (encoded values, handle as last spelled, full answer for that spelling)
        self._data: dict[str, tuple[bytes, str, bytes]] = {}

    def get(self, key: str) -> bytes | None:
        entry = self._data.get(key)
        return None if entry is None else entry[0]

    def answer(self, key: str, handle: str) -> bytes | None:
        """The complete resolution body echoing ``handle`` (pyhandle compares the echo with
        ``==``, so a body is only reused for the exact spelling it was built for)."""
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[1] == handle:
            return entry[2]
        body = _resolution_body(handle, entry[0])
        self._data[key] = (entry[0], handle, body)
        return body

    def put(self, key: str, encoded: bytes, generation: int, handle: str) -> bytes:
        """Keep ``encoded`` (unless a commit happened since ``generation``); the answer."""
        body = _resolution_body(handle, encoded)
        if generation != self.generation or self.capacity <= 0:
            return body
        if len(self._data) >= self.capacity:
            self._data.pop(next(iter(self._data)), None)
        self._data[key] = (encoded, handle, body)
        return body

    def invalidate(self, keys: Sequence[str]) -> None:
        """Listener (on the event loop): drop the changed handles; a change of homed prefixes
        (or ``EVERYTHING``) drops all, since an answer may now be "not here"."""
        self.generation += 1
        if drops_everything(keys):
            self._data.clear()
            return
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
        hit = cache.answer(key, handle)
        if hit is not None:
            return web.Response(body=hit, headers=_JSON_HEADERS.copy())
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
        body = cache.put(key, encoded, generation, handle)
        return web.Response(body=body, headers=_JSON_HEADERS.copy())
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
    params = _query(request)
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


# --------------------------------------------------------------------------- /api/sessions


async def _session_fields(request: web.Request) -> http_auth.HandleAuth:
    """HN ``fromHeaderAndParameters``: the ``Authorization: Handle`` fields, then the query's
    and a JSON body's for those absent (in those, ``id`` is not percent-encoded)."""
    header = request.headers.get(hdrs.AUTHORIZATION)
    auth = (http_auth.parse_header(header) if header else None) or http_auth.HandleAuth()
    params: MultiDict[str] = MultiDict(request.query)
    if _has_json_entity(request) and request.method in ("POST", "PUT", "DELETE"):
        doc = rest.loads(await _body(request))
        if not isinstance(doc, dict):
            raise HandleError(ResponseCode.PROTOCOL_ERROR, "session body must be a JSON object")
        for key, value in doc.items():
            params.add(key, value if isinstance(value, str) else rest.dumps(value).decode())
    for key, value in params.items():
        auth.put(key, value or "true", only_if_absent=True)
    return auth


def _session_json(session: Session, error: str | None = None) -> dict[str, Any]:
    """HN ``getSessionRepresentation``: sessionId, the nonce to sign next, who (if anyone)."""
    obj: dict[str, Any] = {"sessionId": session.id, "nonce": _b64(session.nonce)}
    if session.identity is not None:
        obj["authenticated"] = True
        obj["id"] = session.id_text or str(session.identity)
    if error:
        obj["error"] = error
    return obj


async def _session_login(request: web.Request, session: Session, auth: http_auth.HandleAuth) -> str | None:
    """Authenticate ``session`` from Basic or the Handle fields, if the request tries; the
    error, or None (success, or nothing attempted)."""
    header = (request.headers.get(hdrs.AUTHORIZATION) or "").strip()
    if header[:6].lower() == "basic ":
        identity = _basic_identity(request, header[6:])
        if identity is None:
            return "identity not verified"
        _authenticated(request, session, identity, str(identity))
        return None
    if not auth.authenticating:
        return None
    try:
        await _handle_login(request, session, auth)
    except http_auth.AuthFailed as e:
        return str(e)
    return None


async def api_sessions(request: web.Request) -> web.StreamResponse:
    """The sessions API (HN ``SessionsServlet``): ``POST /api/sessions`` opens one (201),
    ``GET|PUT|POST /api/sessions/this`` shows it or logs in with the JSON form,
    ``DELETE /api/sessions/this`` ends it (204). HTTPS only: 403 over plain HTTP."""
    _require_tls(request)
    tail = decode_path(_raw_path(request)[len("/api/sessions") :]).strip("/")
    method = request.method
    table = request.app[SESSIONS_KEY]
    if tail == "":
        if method != "POST":
            return _json(request, 405, {"responseCode": 4, "message": "use POST"}, {"Allow": "POST"})
    elif tail != "this":
        raise _Reply(403, ResponseCode.PROTOCOL_ERROR, "only /api/sessions/this can be addressed")
    elif method not in _API_METHODS:
        return _unknown_endpoint(request, 405)
    auth = await _session_fields(request)
    if tail == "":
        if auth.sessionId is not None:
            raise _Reply(400, ResponseCode.PROTOCOL_ERROR, "a new session cannot name a sessionId")
        new = table.create()
        request[_SESSION] = new
        error = await _session_login(request, new, auth)
        return _json(request, 201, _session_json(new, error), {"Location": "/api/sessions/this"})
    session = table.get(auth.sessionId) if auth.sessionId is not None else None
    if session is None:
        if method == "DELETE" or auth.sessionId is not None or auth.authenticating:
            raise _Reply(403, ResponseCode.AUTHENTICATION_NEEDED, "no such session, or it expired")
        return _json(request, 200, {"authenticated": False})
    request[_SESSION] = session
    if method == "DELETE":
        table.remove(session.id)
        return web.Response(status=204)
    error = await _session_login(request, session, auth)
    if error is not None:
        request[_AUTH_ERROR] = error
        return _json(request, 401, _session_json(session, error))
    return _json(request, 200, _session_json(session))


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
    """First ``URL`` value by index, then the first ``URL.*`` sub-type (HDLProxy's order);
    never one a browser would run as script (``idr.model.url``)."""
    vals = sorted(values, key=lambda v: v.index)
    for exact in (True, False):
        for v in vals:
            t = v.type.upper()
            if (t == "URL") if exact else t.startswith("URL."):
                try:
                    url = v.data.decode("utf-8").strip()
                except UnicodeDecodeError:
                    continue
                if url and not has_control(url) and script_scheme(url) is None:
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
    append = params.get("urlappend", "")
    if has_control(append):
        return _page(400, "Bad urlappend", "<h1>urlappend must not contain control characters</h1>")
    target += append
    ttls = [v.ttl for v in values if v.ttl_type == 0 and v.ttl >= 0]
    headers = {"Location": target}
    if ttls:
        headers["Cache-Control"] = f"max-age={min(ttls)}"
    link = html.escape(target, quote=True)
    return _page(302, "Handle Redirect", f'<a href="{link}">{link}</a>', headers)


# --------------------------------------------------------------------------- wiring


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map every failure to a Handle-style answer; unknown paths go to the proxy. (A cached
    anonymous resolution never gets here on a node: ``fast_path`` answered it before routing.)"""
    try:
        exc = request.match_info.http_exception
        if exc is not None and exc.status == 404:
            root = decode_path(_raw_path(request)).lstrip("/").partition("/")[0]
            if root in ("api", "hrls"):
                return await api_unknown(request)
            if root not in RESERVED_ROOTS and request.app[SETTINGS_KEY]["proxy"]:
                return await proxy(request)
        if hdrs.AUTHORIZATION in request.headers and not request.path.startswith("/api/sessions"):
            await _handle_authentication(request)
        response = await handler(request)
        renamed = request.get(_RENAMED)
        if renamed is not None and not response.prepared:
            response.headers["Authentication-Info"] = f"Handle sessionId={_quote(renamed.id)}"
        return response
    except _Reply as r:
        return _error(request, r.code, r.message, status=r.status, headers=r.headers)
    except HandleError as e:
        return _error(request, e.code, e.message)
    except StoreError as e:  # a store read outside the core (lists, console, SNMS): 503 or 500
        failure = store_failure(e)
        return _error(request, failure.code, failure.message)
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


async def _close(gate: CostGate) -> None:
    gate.close()


class _ClientErrorsWithoutTracebacks(logging.Filter):
    """aiohttp logs a request it cannot parse (a header line over 8,190 bytes, a broken request
    line: the client's 400) as an error with a traceback. It is the client's mistake, not the
    node's: one warning line, no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = "%s: %s", (record.getMessage(), str(exc).splitlines()[0])
            record.exc_info = record.exc_text = None
        return True


_CLIENT_ERRORS = _ClientErrorsWithoutTracebacks()


async def api_openapi(request: web.Request) -> web.StreamResponse:
    """``GET /api/openapi.json``: the OpenAPI 3.1 description of the node's HTTP APIs."""
    if request.method not in ("GET", "HEAD"):
        return _unknown_endpoint(request, 405)
    from idr.server.openapi import openapi_json

    return web.Response(body=openapi_json(), headers=_JSON_HEADERS.copy())


# The API's route table; add further front-end routes to the returned app the same way.
API_ROUTES: tuple[tuple[str, Handler], ...] = (
    ("/api/openapi.json", api_openapi),
    ("/api/handles", api_handles),
    ("/api/handles/{handle:.*}", api_handles),
    ("/api/prefixes", api_prefixes),
    ("/api/prefixes/{prefix:.*}", api_prefixes),
    ("/api/sessions", api_sessions),
    ("/api/sessions/{session:.*}", api_sessions),
)


def make_http_app(
    service: Core,
    *,
    tls: bool,
    max_body: int = DEFAULT_MAX_BODY,
    proxy: bool = True,
    routes: Iterable[tuple[str, Handler]] = (),
    cache_entries: int = 100_000,
    sessions: SessionTable | None = None,
    throttle: Throttle | None = None,
    gate: CostGate | None = None,
    walks: WalkGate | None = None,
) -> web.Application:
    """The node's HTTP application.

    ``tls``: whether the node also serves HTTPS (writes and credentials are accepted
    only on requests that arrived over TLS either way). ``routes``: extra ``(path,
    handler)`` pairs (any method) registered ahead of the API's. ``sessions``: the
    ``Authorization: Handle`` session table (default: 10,000 sessions, 30 min idle).
    ``throttle`` (failed-login back-off), ``gate`` (signature checks off the loop) and ``walks``
    (federation-wide traces at once): one of each per node, shared by its applications; by
    default the application's own.
    """
    server_log = logging.getLogger("aiohttp.server")
    if _CLIENT_ERRORS not in server_log.filters:
        server_log.addFilter(_CLIENT_ERRORS)
    app = web.Application(middlewares=[_errors], client_max_size=max_body)
    app[SERVICE_KEY] = service
    app[SETTINGS_KEY] = {"max_body": max_body, "tls": tls, "proxy": proxy}
    cache = EncodedCache(cache_entries)
    app[CACHE_KEY] = cache
    app[SESSIONS_KEY] = sessions if sessions is not None else SessionTable()
    install_throttle(app, throttle)
    if gate is None:
        gate = CostGate()
        app.on_cleanup.append(lambda _: _close(gate))
    app[GATE_KEY] = gate
    service.add_listener(cache.invalidate)
    from idr.server import hrls  # imports this module: late

    for path, handler in (*routes, *API_ROUTES, *hrls.ROUTES):
        app.router.add_route("*", path, handler)
    from idr.server.federation import add_federation_routes  # imports this module: late

    add_federation_routes(app, service, walks)
    return app


__all__ = [
    "API_ROUTES",
    "DEFAULT_MAX_BODY",
    "RESERVED_ROOTS",
    "SERVICE_KEY",
    "SESSIONS_KEY",
    "decode_path",
    "make_http_app",
]
