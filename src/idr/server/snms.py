"""The secondary/enterprise node HTTP API that identifier applications already call (SNMS v5).

Applications written against Teleinfo's SNMS-compatible interface (teleinfo-dev/id-guide,
``docs/dev-tools/snms``) keep working against an idr node:

* ``POST /identity/token`` ``{username, password}`` → ``{token}``. ``username`` is the
  identity handle (``300:88.100/app`` or just ``88.100/app``), ``password`` the secret of
  one of its HS_SECKEY values. ``POST /identity/token/v1`` takes instead
  ``password = sha256(hex(sha256(secret)) + "yyyy-MM-dd")`` in lower-case hex, dated in
  China Standard Time (verified against the documented example, whose secret is
  ``123456`` although its text says ``12345``).
* Tokens are bearer tokens (``Authorization: Bearer …``) valid 24 h, as documented.
* ``GET /identityv2/data/detail?handle=``, ``POST``/``PUT``/``DELETE /identityv2/data`` and
  ``batchCreate``/``batchUpdate``/``batchDelete`` (at most 2000 items).
* Every answer is ``{status, message, data}`` with the documented codes: 1 success, -1 not
  logged in, -2 business failure, -3 no permission, -4 internal error — with HTTP 200, as
  the documented clients read ``status``, not the HTTP code.

The template version is stored as value 1001 of type ``TEMPLATE`` (index 1001 is reserved
for it, so clients may not send it). Values are strings (``format: "string"``); HS_* values
(admin, keys) are the Handle System's own and are neither shown nor replaced here. An update
replaces all other values in one write. ``templateVersion`` names one of the node's identifier
data templates (its ref ``id@version``, its id, or the ``snms_version`` its file declares,
``idr.core.templates``) and the core enforces it as on every other write path: a bad field or
an unknown template is a business failure (-2) whose message lists the failing fields.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
from aiohttp import web

from idr.core.interface import Core
from idr.core.request import Op, Request, Response
from idr.model.errors import ResponseCode
from idr.model.value import HandleValue, ValueReference
from idr.server.throttle import THROTTLE_KEY, Throttle, Throttled
from idr.server.throttle import install as install_throttle

STATUS_OK = 1
STATUS_NOT_LOGGED_IN = -1
STATUS_FAILED = -2
STATUS_FORBIDDEN = -3
STATUS_INTERNAL = -4

TOKEN_TTL = 24 * 3600  # id-guide appendix: a token expires after 24 h
MAX_TOKENS = 100_000
MAX_TOKENS_PER_IDENTITY = 64
MAX_BATCH = 2000
TEMPLATE_INDEX = 1001
TEMPLATE_TYPE = "TEMPLATE"
MAX_HANDLE = 255  # field limits from handle-operate.md
MAX_TYPE = 128
MAX_TEMPLATE = 128
CHINA_TIME = timezone(timedelta(hours=8))
DATE_SKEW = 300  # seconds either side of midnight a ciphertext password's date may be off by

MSG_EXISTS = "标识已存在"  # the id-guide tells clients to treat this answer to a retry as success
MSG_NOT_FOUND = "没有找到标识"
MSG_BAD_LOGIN = "用户名/密码错误！"
MSG_NOT_LOGGED_IN = "没有登录，需要验证"
MSG_HTTPS_ONLY = "只接受HTTPS请求 (HTTPS only)"

Clock = Callable[[], float]


class _Fail(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def envelope(status: int, message: str, data: Any = None, *, http_status: int = 200) -> web.Response:
    body = orjson.dumps({"status": status, "message": message, "data": data})
    return web.Response(status=http_status, body=body, content_type="application/json", charset="utf-8")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def https_only(handler: Handler) -> Handler:
    """Passwords go in, bearer tokens come out and go back in, records are written: none of
    it over plain HTTP (as the REST API). Refused before the body is read: 403, status -1."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        if not request.secure:
            return envelope(STATUS_NOT_LOGGED_IN, MSG_HTTPS_ONLY, http_status=403)
        return await handler(request)

    return guarded


def _from_core(resp: Response) -> _Fail:
    code = resp.code
    if code == ResponseCode.HANDLE_ALREADY_EXISTS:
        return _Fail(STATUS_FAILED, MSG_EXISTS)
    if code == ResponseCode.HANDLE_NOT_FOUND:
        return _Fail(STATUS_FAILED, MSG_NOT_FOUND)
    if code in (ResponseCode.INSUFFICIENT_PERMISSIONS, ResponseCode.INVALID_ADMIN):
        return _Fail(STATUS_FORBIDDEN, resp.message or "没有权限")
    if code in (ResponseCode.AUTHENTICATION_NEEDED, ResponseCode.AUTHENTICATION_FAILED):
        return _Fail(STATUS_NOT_LOGGED_IN, resp.message or MSG_NOT_LOGGED_IN)
    if code in (ResponseCode.ERROR, ResponseCode.SERVER_TOO_BUSY, ResponseCode.SERVER_READ_ONLY):
        return _Fail(STATUS_INTERNAL, resp.message or "系统内部错误")
    return _Fail(STATUS_FAILED, resp.message or code.name.lower())


class TokenStore:
    """Bearer tokens → identity, in memory; bounded. Tokens expire in issue order, so the oldest
    goes first when the store is full; one identity holds at most ``per_identity`` (its oldest
    goes first), so one holder of a password cannot push everyone else's tokens out."""

    def __init__(
        self,
        ttl: float = TOKEN_TTL,
        clock: Clock = time.time,
        capacity: int = MAX_TOKENS,
        per_identity: int = MAX_TOKENS_PER_IDENTITY,
    ) -> None:
        self.ttl = ttl
        self.clock = clock
        self.capacity = capacity
        self.per_identity = per_identity
        self._tokens: OrderedDict[str, tuple[ValueReference, float]] = OrderedDict()
        self._mine: dict[ValueReference, OrderedDict[str, None]] = {}

    def __len__(self) -> int:
        return len(self._tokens)

    def _drop(self, token: str) -> None:
        identity, _ = self._tokens.pop(token)
        mine = self._mine[identity]
        del mine[token]
        if not mine:
            del self._mine[identity]

    def issue(self, identity: ValueReference) -> str:
        now = self.clock()
        while self._tokens and (
            len(self._tokens) >= self.capacity or next(iter(self._tokens.values()))[1] <= now
        ):
            self._drop(next(iter(self._tokens)))
        mine = self._mine.setdefault(identity, OrderedDict())
        while len(mine) >= self.per_identity:
            self._drop(next(iter(mine)))
            mine = self._mine.setdefault(identity, OrderedDict())
        token = secrets.token_urlsafe(32)
        self._tokens[token] = (identity, now + self.ttl)
        mine[token] = None
        return token

    def identity(self, token: str) -> ValueReference | None:
        entry = self._tokens.get(token)
        if entry is None:
            return None
        if entry[1] <= self.clock():
            self._drop(token)
            return None
        return entry[0]


def cipher_password(secret: bytes, day: str) -> str:
    """The ``/identity/token/v1`` password: sha256(hex sha256(secret) + yyyy-MM-dd), hex."""
    inner = hashlib.sha256(secret).hexdigest()
    return hashlib.sha256((inner + day).encode()).hexdigest()


def _username(text: str) -> ValueReference:
    """``300:88.100/app`` names one key; a bare handle accepts any of its HS_SECKEY values."""
    try:
        return ValueReference.parse(text)
    except ValueError:
        return ValueReference(text, 0)


class SnmsApi:
    def __init__(self, service: Core, tokens: TokenStore, clock: Clock) -> None:
        self.service = service
        self.tokens = tokens
        self.clock = clock

    # ------------------------------------------------------------------ identity

    def _login(self, username: str, password: str, cipher: bool) -> ValueReference | None:
        ref = _username(username)
        keys = self.service.identity_values(ref, "HS_SECKEY")
        if cipher:
            now = self.clock()
            days = {
                datetime.fromtimestamp(now + d, CHINA_TIME).strftime("%Y-%m-%d")
                for d in (-DATE_SKEW, 0, DATE_SKEW)
            }
            given = password.strip().lower()
            for v in keys:
                if any(hmac.compare_digest(cipher_password(v.data, day), given) for day in days):
                    return ValueReference(ref.handle, v.index)
            return None
        for v in keys:
            key_ref = ValueReference(ref.handle, v.index)
            if self.service.authenticate_secret(key_ref, password.encode("utf-8")):
                return key_ref
        return None

    async def token(self, request: web.Request) -> web.StreamResponse:
        throttle = request.app[THROTTLE_KEY]
        try:
            body = await _json_body(request)
            if not isinstance(body, dict):
                raise _Fail(STATUS_FAILED, "请求体必须是JSON对象 (body must be a JSON object)")
            username, password = body.get("username"), body.get("password")
            for name, v in (("username", username), ("password", password)):
                if not isinstance(v, str) or not v:
                    raise _Fail(STATUS_FAILED, f"缺少必要的请求参数: {name}")
            assert isinstance(username, str) and isinstance(password, str)
            claimed = _username(username)
            try:
                throttle.begin(request.remote, claimed)
            except Throttled as e:
                resp = envelope(STATUS_FAILED, f"尝试次数过多 ({e})", http_status=429)
                resp.headers["Retry-After"] = str(e.retry_after)
                return resp
            await self.service.preload([claimed.handle])  # the key lookup below never waits
            identity = self._login(username, password, request.path.endswith("/v1"))
            if identity is None:
                raise _Fail(STATUS_FAILED, MSG_BAD_LOGIN)
            throttle.succeeded(request.remote, claimed)
        except _Fail as f:
            return envelope(f.status, f.message)
        return envelope(STATUS_OK, "success", {"token": self.tokens.issue(identity)})

    def _identity(self, request: web.Request) -> ValueReference:
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Fail(STATUS_NOT_LOGGED_IN, MSG_NOT_LOGGED_IN)
        identity = self.tokens.identity(token.strip())
        if identity is None:
            raise _Fail(STATUS_NOT_LOGGED_IN, f"{MSG_NOT_LOGGED_IN} (token invalid or expired)")
        return identity

    # ------------------------------------------------------------------ data

    async def detail(self, request: web.Request) -> web.StreamResponse:
        try:
            identity = self._identity(request)
            handle = request.query.get("handle", "")
            if not handle:
                raise _Fail(STATUS_FAILED, "缺少必要的请求参数: handle")
            resp = await self.service.submit(Request(Op.RESOLUTION, handle, identity=identity))
            if not resp.ok and resp.code != ResponseCode.VALUES_NOT_FOUND:
                raise _from_core(resp)
        except _Fail as f:
            return envelope(f.status, f.message)
        return envelope(STATUS_OK, "success", record_json(handle, resp.values))

    async def data(self, request: web.Request) -> web.StreamResponse:
        try:
            identity = self._identity(request)
            if request.method == "DELETE":
                handle = request.query.get("handle", "")
                if not handle and request.can_read_body:
                    body = await _json_body(request)
                    handle = body.get("handle", "") if isinstance(body, dict) else ""
                if not isinstance(handle, str) or not handle:
                    raise _Fail(STATUS_FAILED, "缺少必要的请求参数: handle")
                await self._delete(identity, handle)
            else:
                item = await _json_body(request)
                if request.method == "POST":
                    await self._create(identity, item)
                else:
                    await self._update(identity, item)
        except _Fail as f:
            return envelope(f.status, f.message)
        return envelope(STATUS_OK, "success", True)

    async def batch(self, request: web.Request) -> web.StreamResponse:
        try:
            identity = self._identity(request)
            items = await _json_body(request)
            if not isinstance(items, list):
                raise _Fail(STATUS_FAILED, "请求体必须是JSON数组 (body must be a JSON array)")
            if len(items) > MAX_BATCH:
                raise _Fail(STATUS_FAILED, f"批量操作最大支持{MAX_BATCH}条 (at most {MAX_BATCH} items)")
        except _Fail as f:
            return envelope(f.status, f.message)
        kind = request.path.rsplit("/", 1)[-1]
        results: list[dict[str, object]] = []
        for item in items:
            if kind == "batchDelete":
                handle = item if isinstance(item, str) else ""
            else:
                handle = str(item.get("handle", "")) if isinstance(item, dict) else ""
            try:
                if kind == "batchDelete":
                    if not handle:
                        raise _Fail(STATUS_FAILED, "缺少必要的请求参数: handle")
                    await self._delete(identity, handle)
                elif kind == "batchCreate":
                    await self._create(identity, item)
                else:
                    await self._update(identity, item)
                results.append({"handle": handle, "code": STATUS_OK, "msg": "success"})
            except _Fail as f:
                results.append({"handle": handle, "code": f.status, "msg": f.message})
        return envelope(STATUS_OK, "success", results)

    async def _create(self, identity: ValueReference, item: object) -> None:
        handle, values = parse_item(item)
        resp = await self.service.submit(Request(Op.CREATE_HANDLE, handle, values=values, identity=identity))
        if not resp.ok:
            raise _from_core(resp)

    async def _update(self, identity: ValueReference, item: object) -> None:
        """Replace every non-HS value in one write, keeping the record's admins and keys."""
        handle, values = parse_item(item)
        current = await self.service.submit(
            Request(Op.RESOLUTION, handle, identity=identity, public_only=False)
        )
        if not current.ok:
            raise _from_core(current)
        kept = [v for v in current.values if v.type.upper().startswith("HS_")]
        clash = {v.index for v in kept} & {v.index for v in values}
        if clash:
            raise _Fail(STATUS_FAILED, f"索引{min(clash)}已被系统属性占用 (index used by an HS_ value)")
        resp = await self.service.submit(
            Request(Op.CREATE_HANDLE, handle, values=(*kept, *values), identity=identity, overwrite=True)
        )
        if not resp.ok:
            raise _from_core(resp)

    async def _delete(self, identity: ValueReference, handle: str) -> None:
        resp = await self.service.submit(Request(Op.DELETE_HANDLE, handle, identity=identity))
        if not resp.ok:
            raise _from_core(resp)


async def _json_body(request: web.Request) -> Any:
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError as e:
        raise _Fail(STATUS_FAILED, f"请求体不是合法的JSON (malformed JSON: {e})") from e


def _field_str(o: dict[str, Any], name: str, limit: int) -> str:
    v = o.get(name)
    if not isinstance(v, str) or not v:
        raise _Fail(STATUS_FAILED, f"缺少必要的请求参数: {name}")
    if len(v) > limit:
        raise _Fail(STATUS_FAILED, f"{name} 超过最大长度{limit} (longer than {limit})")
    return v


def parse_item(item: object) -> tuple[str, tuple[HandleValue, ...]]:
    """``{handle, templateVersion, value:[{index, type, data:{format, value}}]}`` → values."""
    if not isinstance(item, dict):
        raise _Fail(STATUS_FAILED, "请求体必须是JSON对象 (body must be a JSON object)")
    handle = _field_str(item, "handle", MAX_HANDLE)
    template = _field_str(item, "templateVersion", MAX_TEMPLATE)
    raw = item.get("value")
    if not isinstance(raw, list):
        raise _Fail(STATUS_FAILED, "缺少必要的请求参数: value")
    values: list[HandleValue] = []
    for i, v in enumerate(raw[:MAX_BATCH]):
        where = f"value[{i}]"
        if not isinstance(v, dict):
            raise _Fail(STATUS_FAILED, f"{where} 必须是JSON对象")
        index = v.get("index")
        if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index < 2**31:
            raise _Fail(STATUS_FAILED, f"{where}.index 必须是正整数")
        if index == TEMPLATE_INDEX:
            raise _Fail(STATUS_FAILED, f"索引{TEMPLATE_INDEX}为预留索引 (index {TEMPLATE_INDEX} is reserved)")
        type_ = _field_str(v, "type", MAX_TYPE)
        if type_.upper().startswith("HS_"):
            # admins and keys are the Handle System's (REST or the native protocol), not SNMS's
            raise _Fail(STATUS_FAILED, f"{where}.type {type_} 是系统属性 (HS_ types are not written here)")
        data = v.get("data")
        if isinstance(data, dict):
            fmt = data.get("format", "string")
            if fmt != "string":
                raise _Fail(STATUS_FAILED, f"{where}.data.format 只支持string (only 'string' is supported)")
            data = data.get("value")
        if not isinstance(data, str):
            raise _Fail(STATUS_FAILED, f"{where}.data.value 必须是字符串")
        values.append(HandleValue(index, type_, data.encode("utf-8")))
    values.append(HandleValue(TEMPLATE_INDEX, TEMPLATE_TYPE, template.encode("utf-8")))
    return handle, tuple(values)


def record_json(handle: str, values: tuple[HandleValue, ...]) -> dict[str, object]:
    """The ``data`` of a detail answer; ``auth`` (reserved in SNMS) says whether the value is public."""
    template = next((v.data.decode("utf-8", "replace") for v in values if v.index == TEMPLATE_INDEX), "")
    out = []
    for v in values:
        if v.type.upper().startswith("HS_"):
            continue
        try:
            data = {"format": "string", "value": v.data.decode("utf-8")}
        except UnicodeDecodeError:
            data = {"format": "hex", "value": v.data.hex()}
        out.append({"index": v.index, "type": v.type, "auth": "1" if v.public_read else "0", "data": data})
    return {"prefix": handle.partition("/")[0], "handle": handle, "templateVersion": template, "value": out}


def add_snms_routes(
    app: web.Application,
    service: Core,
    *,
    token_ttl: float = TOKEN_TTL,
    clock: Clock = time.time,
    throttle: Throttle | None = None,
) -> None:
    """Mount the SNMS-compatible API (the id-guide's default port is 3000; serve it where you like)."""
    api = SnmsApi(service, TokenStore(token_ttl, clock), clock)
    install_throttle(app, throttle)
    routes: list[tuple[str, str, Handler]] = [
        ("POST", "/identity/token", api.token),
        ("POST", "/identity/token/v1", api.token),
        ("GET", "/identityv2/data/detail", api.detail),
        *((method, "/identityv2/data", api.data) for method in ("POST", "PUT", "DELETE")),
        ("POST", "/identityv2/data/batchCreate", api.batch),
        ("PUT", "/identityv2/data/batchUpdate", api.batch),
        ("DELETE", "/identityv2/data/batchDelete", api.batch),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, https_only(handler))
