"""Handle values ⇄ the JSON of the Handle.Net 9 REST API (Technical Manual ch. 14).

Pure functions, no I/O. Output follows Handle.Net's ``GsonUtility`` exactly (field order,
the ``format`` chosen by type, permissions omitted when default, ``totalCount`` as a string)
so existing clients (pyhandle, the HN admin tool, scripts) see what they expect. Input is
as lenient as Handle.Net's where clients depend on it — a bare string ``data`` (pyhandle),
a string admin ``index`` ("200"), ``ttl`` as an ISO-8601 expiry — and strict elsewhere:
every malformed field raises one ``HandleError(INVALID_VALUE)`` naming the field.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from idr.codec.values import decode_admin, decode_vlist, encode_admin, encode_vlist
from idr.codec.wire import ProtocolError, Reader, Writer
from idr.model.errors import HandleError, ResponseCode
from idr.model.handle import normalize_key
from idr.model.site import (
    HashOption,
    InterfaceType,
    ServerInfo,
    ServerInterface,
    SiteInfo,
    TransportProtocol,
)
from idr.model.value import (
    DEFAULT_TTL,
    PERM_DEFAULT,
    AdminPermission,
    AdminRecord,
    HandleValue,
    TtlType,
    ValueReference,
)

Json = Any  # what orjson.loads returns: dict, list, str, int, float, bool or None
JsonObj = dict[str, Any]

_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1
_SITE_TYPES = frozenset({"HS_SITE", "HS_SITE.6", "HS_SITE.PREFIX"})
_RSA = b"RSA_PUB_KEY"
_DSA = b"DSA_PUB_KEY"


def _bad(message: str) -> HandleError:
    return HandleError(ResponseCode.INVALID_VALUE, message)


# --------------------------------------------------------------------------- JSON text


def loads(body: bytes | str) -> Json:
    """Parse a request body; malformed JSON is a protocol error carrying the parser's reason."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise HandleError(ResponseCode.PROTOCOL_ERROR, f"malformed JSON: {e}") from e


def dumps(obj: Json, *, pretty: bool = False) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 if pretty else 0)


# --------------------------------------------------------------------------- scalars


def format_time(seconds: int) -> str:
    """Unix seconds → ``2000-04-10T22:41:46Z`` (Handle.Net's ISO8601_NO_MS, UTC)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str, field: str) -> int:
    """ISO-8601 → Unix seconds; a time without zone is UTC (as Handle.Net parses it)."""
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError as e:
        raise _bad(f"{field}: {text!r} is not an ISO-8601 time") from e
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def _int(v: Json, field: str, lo: int = _I32_MIN, hi: int = _I32_MAX) -> int:
    """A JSON int, or a string of digits (pyhandle sends admin indexes as "200")."""
    if isinstance(v, bool):
        raise _bad(f"{field} must be an integer, not a boolean")
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        v = int(v.strip())
    if not isinstance(v, int):
        raise _bad(f"{field} must be an integer")
    if not lo <= v <= hi:
        raise _bad(f"{field} {v} out of range {lo}..{hi}")
    return v


def _str(v: Json, field: str) -> str:
    if not isinstance(v, str):
        raise _bad(f"{field} must be a string")
    return v


def _obj(v: Json, field: str) -> JsonObj:
    if not isinstance(v, dict):
        raise _bad(f"{field} must be a JSON object")
    return v


def _list(v: Json, field: str) -> list[Any]:
    if not isinstance(v, list):
        raise _bad(f"{field} must be a JSON array")
    return v


def _bits(text: str, width: int, field: str) -> int:
    """A bit string, MSB first and right-aligned (``"1110"``); ``"*"`` means every bit."""
    if text == "*":
        return (1 << width) - 1
    if not text or len(text) > width or any(c not in "01" for c in text):
        raise _bad(f"{field} must be up to {width} characters of 0/1, not {text!r}")
    return int(text, 2)


def value_permissions_text(perms: int) -> str:
    return format(perms & 0xF, "04b")


def admin_permissions_text(perms: int) -> str:
    """HS_ADMIN mask as Handle.Net writes it: 12 chars, list-handles first, add-handle last."""
    return format(perms & int(AdminPermission.ALL), "012b")


def _admin_permissions(v: Json, field: str) -> int:
    if v is None:
        return 0
    if isinstance(v, bool):
        return int(AdminPermission.ALL) if v else 0
    if isinstance(v, str):
        return _bits(v, 12, field)
    if isinstance(v, int):
        return _int(v, field, 0, int(AdminPermission.ALL))
    if isinstance(v, list):  # Handle.Net: element i is bit i (add-handle first)
        return sum(1 << i for i, b in enumerate(v[:12]) if b not in (None, False, 0, "", 0.0))
    raise _bad(f"{field} must be a bit string such as '011111111111'")


# --------------------------------------------------------------------------- structured data


def _ref_to_json(ref: ValueReference) -> JsonObj:
    return {"handle": ref.handle, "index": ref.index}


def _ref_from_json(v: Json, field: str) -> ValueReference:
    o = _obj(v, field)
    return ValueReference(_str(o.get("handle"), f"{field}.handle"), _int(o.get("index"), f"{field}.index"))


def admin_to_json(a: AdminRecord) -> JsonObj:
    return {"handle": a.handle, "index": a.index, "permissions": admin_permissions_text(a.permissions)}


def admin_from_json(v: Json, field: str = "data.value") -> AdminRecord:
    o = _obj(v, field)
    handle = _str(o.get("handle"), f"{field}.handle")
    if not handle:
        raise _bad(f"{field}.handle is empty")
    index = _int(o.get("index"), f"{field}.index")
    return AdminRecord(handle, index, _admin_permissions(o.get("permissions"), f"{field}.permissions"))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64url(n: int) -> str:
    raw = n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str, field: str) -> bytes:
    """Standard or URL-safe base64, padding optional (commons-codec accepts both)."""
    s = "".join(text.split())
    s += "=" * (-len(s) % 4)
    try:
        alt = b"-_" if ("-" in s or "_" in s) else None
        return base64.b64decode(s, altchars=alt, validate=True)
    except (binascii.Error, ValueError) as e:
        raise _bad(f"{field} is not valid base64") from e


def key_to_jwk(data: bytes) -> JsonObj:
    """HS_PUBKEY bytes (``RSA_PUB_KEY``/``DSA_PUB_KEY`` layout) → JWK; ProtocolError otherwise."""
    r = Reader(data)
    kind = r.blob("key type")
    r.u16()  # reserved flags
    if kind == _RSA:
        e, n = (int.from_bytes(r.blob("RSA parameter"), "big") for _ in range(2))
        r.expect_end("HS_PUBKEY")
        return {"kty": "RSA", "n": _b64url(n), "e": _b64url(e)}
    if kind == _DSA:
        q, p, g, y = (int.from_bytes(r.blob("DSA parameter"), "big") for _ in range(4))
        r.expect_end("HS_PUBKEY")
        return {"kty": "DSA", "y": _b64url(y), "p": _b64url(p), "q": _b64url(q), "g": _b64url(g)}
    raise ProtocolError(f"unsupported key type {kind!r}", ResponseCode.INVALID_VALUE)


def _mpint(n: int) -> bytes:
    """Java ``BigInteger.toByteArray``: big-endian two's complement, so a sign byte when needed."""
    return n.to_bytes(n.bit_length() // 8 + 1, "big")


def key_from_jwk(v: Json, field: str = "data.value") -> bytes:
    o = _obj(v, field)
    kty = _str(o.get("kty"), f"{field}.kty").upper()

    def num(name: str) -> int:
        return int.from_bytes(_unb64(_str(o.get(name), f"{field}.{name}"), f"{field}.{name}"), "big")

    w = Writer()
    if kty == "RSA":
        w.blob(_RSA).u16(0).blob(_mpint(num("e"))).blob(_mpint(num("n")))
    elif kty == "DSA":
        w.blob(_DSA).u16(0)
        for name in ("q", "p", "g", "y"):
            w.blob(_mpint(num(name)))
    else:
        raise _bad(f"{field}.kty {kty!r} is not supported (RSA or DSA)")
    return w.getvalue()


def _site_codec() -> tuple[Callable[[SiteInfo], bytes], Callable[[bytes], SiteInfo]] | None:
    """``idr.codec.site`` is written separately; without it sites travel as base64."""
    try:
        from idr.codec import site
    except ImportError:
        return None
    enc = getattr(site, "encode_site", None) or getattr(site, "encode_site_info", None)
    dec = getattr(site, "decode_site", None) or getattr(site, "decode_site_info", None)
    if enc is None or dec is None:
        return None
    return enc, dec


def site_to_json(s: SiteInfo) -> JsonObj:
    out: JsonObj = {
        "version": s.data_format_version,
        "protocolVersion": f"{s.protocol_major}.{s.protocol_minor}",
        "serialNumber": s.serial,
        "primarySite": s.primary,
        "multiPrimary": s.multi_primary,
    }
    if s.hash_option != HashOption.WHOLE:
        out["hashOption"] = int(s.hash_option)
    if s.hash_filter:
        out["hashFilter"] = s.hash_filter
    out["attributes"] = [{"name": k, "value": v} for k, v in s.attributes]
    out["servers"] = [_server_to_json(srv) for srv in s.servers]
    return out


def _server_to_json(srv: ServerInfo) -> JsonObj:
    try:
        key: JsonObj = {"format": "key", "value": key_to_jwk(srv.public_key)}
    except ProtocolError:
        key = {"format": "base64", "value": _b64(srv.public_key)}
    return {
        "serverId": srv.server_id,
        "address": srv.host,
        "publicKey": key,
        "interfaces": [
            {
                "query": bool(i.type & InterfaceType.QUERY),
                "admin": bool(i.type & InterfaceType.ADMIN),
                "protocol": i.protocol.name,
                "port": i.port,
            }
            for i in srv.interfaces
        ],
    }


def _bool(v: Json, field: str) -> bool:
    if not isinstance(v, bool):
        raise _bad(f"{field} must be true or false")
    return v


def site_from_json(v: Json, field: str = "data.value") -> SiteInfo:
    o = _obj(v, field)
    major, minor = 2, 1
    if "protocolVersion" in o:
        pv = _str(o["protocolVersion"], f"{field}.protocolVersion")
        a, dot, b = pv.partition(".")
        if not dot or not a.isdigit() or not b.isdigit():
            raise _bad(f"{field}.protocolVersion must look like '2.10', not {pv!r}")
        major, minor = _int(a, "", 0, 255), _int(b, "", 0, 255)
    attrs_json = o.get("attributes", [])
    attrs: list[tuple[str, str]] = []
    if isinstance(attrs_json, dict):
        for k, val in attrs_json.items():
            attrs.extend(
                (k, _str(x, f"{field}.attributes.{k}")) for x in (val if isinstance(val, list) else [val])
            )
    else:
        for i, a in enumerate(_list(attrs_json, f"{field}.attributes")):
            ao = _obj(a, f"{field}.attributes[{i}]")
            attrs.append(
                (
                    _str(ao.get("name"), f"{field}.attributes[{i}].name"),
                    _str(ao.get("value"), f"{field}.attributes[{i}].value"),
                )
            )
    try:
        hash_option = HashOption(_int(o.get("hashOption", int(HashOption.WHOLE)), f"{field}.hashOption"))
    except ValueError as e:
        raise _bad(f"{field}.hashOption must be 0, 1 or 2") from e
    servers = tuple(
        _server_from_json(s, f"{field}.servers[{i}]")
        for i, s in enumerate(_list(o.get("servers", []), f"{field}.servers"))
    )
    return SiteInfo(
        serial=_int(o.get("serialNumber", 1), f"{field}.serialNumber", 0, 0xFFFF),
        primary=_bool(o.get("primarySite", True), f"{field}.primarySite"),
        multi_primary=_bool(o.get("multiPrimary", False), f"{field}.multiPrimary"),
        hash_option=hash_option,
        hash_filter=_str(o.get("hashFilter", ""), f"{field}.hashFilter"),
        attributes=tuple(attrs),
        servers=servers,
        protocol_major=major,
        protocol_minor=minor,
        data_format_version=_int(o.get("version", 1), f"{field}.version", 0, 0xFFFF),
    )


def _server_from_json(v: Json, field: str) -> ServerInfo:
    o = _obj(v, field)
    addr_text = _str(o.get("address"), f"{field}.address")
    try:
        ip = ipaddress.ip_address(addr_text)
    except ValueError as e:
        raise _bad(f"{field}.address {addr_text!r} is not an IP address") from e
    address = ip.packed.rjust(16, b"\0")
    key_json = o.get("publicKey")
    key = b"" if key_json is None else data_from_json("HS_PUBKEY", key_json, f"{field}.publicKey")
    interfaces = []
    for i, itf in enumerate(_list(o.get("interfaces", []), f"{field}.interfaces")):
        io = _obj(itf, f"{field}.interfaces[{i}]")
        kind = (InterfaceType.QUERY if _bool(io.get("query"), f"{field}.interfaces[{i}].query") else 0) | (
            InterfaceType.ADMIN if _bool(io.get("admin"), f"{field}.interfaces[{i}].admin") else 0
        )
        proto = io.get("protocol")
        try:
            protocol = (
                TransportProtocol[proto.upper()]
                if isinstance(proto, str)
                else TransportProtocol(_int(proto, f"{field}.interfaces[{i}].protocol"))
            )
        except (KeyError, ValueError) as e:
            raise _bad(f"{field}.interfaces[{i}].protocol {proto!r} is not UDP, TCP, HTTP or HTTPS") from e
        port = _int(io.get("port"), f"{field}.interfaces[{i}].port", 0, 0xFFFFFFFF)
        interfaces.append(ServerInterface(InterfaceType(kind), protocol, port))
    return ServerInfo(_int(o.get("serverId"), f"{field}.serverId"), address, key, tuple(interfaces))


# --------------------------------------------------------------------------- value data


def looks_like_text(data: bytes) -> bool:
    """Valid UTF-8 without control characters (tab/CR/LF allowed): shown as ``string``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not any((ord(c) < 0x20 and c not in "\t\r\n") or c == "\x7f" for c in text)


def data_to_json(type_: str, data: bytes) -> JsonObj:
    """Pick the format as Handle.Net does: by type when the data decodes, else string/base64."""
    t = type_.upper()
    try:
        if t == "HS_ADMIN":
            return {"format": "admin", "value": admin_to_json(decode_admin(data))}
        if t == "HS_VLIST":
            return {"format": "vlist", "value": [_ref_to_json(r) for r in decode_vlist(data)]}
        if t in _SITE_TYPES:
            codec = _site_codec()
            if codec is not None:
                return {"format": "site", "value": site_to_json(codec[1](data))}
        if t == "HS_PUBKEY":
            return {"format": "key", "value": key_to_jwk(data)}
    except (ProtocolError, ValueError):
        pass  # undecodable structured data is still shown, as bytes
    if looks_like_text(data):
        return {"format": "string", "value": data.decode("utf-8")}
    return {"format": "base64", "value": _b64(data)}


def data_from_json(type_: str, v: Json, field: str = "data") -> bytes:
    if isinstance(v, str):  # pyhandle and other simple clients send a bare string
        return v.encode("utf-8")
    if v is None:
        raise _bad(f"{field} is missing")
    o = _obj(v, field)
    fmt = o.get("format")
    if not isinstance(fmt, str):
        raise _bad(f"{field}.format must be a string (string, base64, hex, admin, vlist, site, key)")
    value = o.get("value")
    vf = f"{field}.value"
    match fmt.lower():
        case "string":
            return _str(value, vf).encode("utf-8")
        case "base64":
            return _unb64(_str(value, vf), vf)
        case "hex":
            try:
                return bytes.fromhex(_str(value, vf))
            except ValueError as e:
                raise _bad(f"{vf} is not valid hex") from e
        case "admin":
            return encode_admin(admin_from_json(value, vf))
        case "vlist":
            return encode_vlist(_ref_from_json(r, f"{vf}[{i}]") for i, r in enumerate(_list(value, vf)))
        case "site":
            codec = _site_codec()
            if codec is None:
                raise _bad(f"{field}.format 'site' is not supported by this node; send base64")
            return codec[0](site_from_json(value, vf))
        case "key":
            return key_from_jwk(value, vf)
    raise _bad(f"{field}.format {fmt!r} is not one of string, base64, hex, admin, vlist, site, key")


# --------------------------------------------------------------------------- values


def value_to_json(v: HandleValue) -> JsonObj:
    out: JsonObj = {"index": v.index, "type": v.type, "data": data_to_json(v.type, v.data)}
    if v.permissions != PERM_DEFAULT:
        out["permissions"] = value_permissions_text(v.permissions)
    out["ttl"] = format_time(v.ttl & 0xFFFFFFFF) if v.ttl_type == TtlType.ABSOLUTE else v.ttl
    if v.timestamp:
        out["timestamp"] = format_time(v.timestamp)
    if v.references:
        out["references"] = [_ref_to_json(r) for r in v.references]
    return out


def value_from_json(v: Json, field: str = "value", *, timestamp: bool = False) -> HandleValue:
    """One value object. ``timestamp`` is read only when asked (a client reading an answer):
    in a write the server stamps every value itself."""
    o = _obj(v, field)
    for required in ("index", "type", "data"):
        if required not in o:
            raise _bad(f"{field}.{required} is missing")
    if not isinstance(o["index"], int):  # strictly a number here ("1" is refused, not guessed at)
        raise _bad(f"{field}.index must be a JSON integer, not {type(o['index']).__name__}")
    index = _int(o["index"], f"{field}.index")
    type_ = _str(o["type"], f"{field}.type")
    data = data_from_json(type_, o["data"], f"{field}.data")
    ttl, ttl_type = DEFAULT_TTL, TtlType.RELATIVE
    ttl_json = o.get("ttl")
    if isinstance(ttl_json, str):
        ttl, ttl_type = parse_time(ttl_json, f"{field}.ttl"), TtlType.ABSOLUTE
        if not 0 <= ttl <= 0xFFFFFFFF:
            raise _bad(f"{field}.ttl {ttl_json!r} is outside the representable range")
        ttl = ttl - 2**32 if ttl > _I32_MAX else ttl  # the wire field is 32 bits
    elif ttl_json is not None:
        ttl = _int(ttl_json, f"{field}.ttl")
    perms = PERM_DEFAULT
    if o.get("permissions") is not None:
        perms = _bits(_str(o["permissions"], f"{field}.permissions"), 4, f"{field}.permissions")
    refs: tuple[ValueReference, ...] = ()
    if o.get("references") is not None:
        refs = tuple(
            _ref_from_json(r, f"{field}.references[{i}]")
            for i, r in enumerate(_list(o["references"], f"{field}.references"))
        )
    stamp = 0
    if timestamp and isinstance(o.get("timestamp"), str):
        stamp = max(0, min(parse_time(o["timestamp"], f"{field}.timestamp"), _I32_MAX))
    return HandleValue(index, type_, data, ttl, ttl_type, stamp, perms, refs)


def values_to_json(values: Iterable[HandleValue]) -> list[JsonObj]:
    return [value_to_json(v) for v in values]


def values_from_json(
    doc: Json, handle: str | None = None, *, timestamps: bool = False
) -> tuple[HandleValue, ...]:
    """A PUT body: an array of values, ``{"values":[…]}`` (its ``handle`` must match the
    path's, compared case-insensitively as handles are), or one value object. A client
    reading a resolution's values asks for their ``timestamps`` too."""
    if isinstance(doc, list):
        items = doc
        where = "values"
    elif isinstance(doc, dict) and "values" in doc:
        named = doc.get("handle")
        if named is not None and handle is not None and normalize_key(str(named)) != normalize_key(handle):
            raise HandleError(ResponseCode.PROTOCOL_ERROR, "Mismatched handle in PUT request")
        items = _list(doc["values"] if doc["values"] is not None else [], "values")
        where = "values"
    elif isinstance(doc, dict) and {"index", "type", "data"} <= doc.keys():
        return (value_from_json(doc, timestamp=timestamps),)
    else:
        raise HandleError(ResponseCode.PROTOCOL_ERROR, "Invalid JSON in PUT request: expected values")
    return tuple(value_from_json(item, f"{where}[{i}]", timestamp=timestamps) for i, item in enumerate(items))


# --------------------------------------------------------------------------- responses

# Handle.Net BaseHandleRequestProcessingServlet.statusCodeFromResponse.
_STATUS: Mapping[int, int] = {
    ResponseCode.SUCCESS: 200,
    ResponseCode.PREFIX_REFERRAL: 300,
    ResponseCode.SERVICE_REFERRAL: 300,
    ResponseCode.HANDLE_NOT_FOUND: 404,
    ResponseCode.HANDLE_ALREADY_EXISTS: 409,
    ResponseCode.VALUE_ALREADY_EXISTS: 409,
    ResponseCode.PROTOCOL_ERROR: 400,
    ResponseCode.INVALID_HANDLE: 400,
    ResponseCode.INVALID_VALUE: 400,
    ResponseCode.SERVER_NOT_RESPONSIBLE: 400,
    ResponseCode.OPERATION_NOT_SUPPORTED: 501,
    ResponseCode.SERVER_TOO_BUSY: 503,
    ResponseCode.SERVER_READ_ONLY: 503,
    ResponseCode.AUTHENTICATION_NEEDED: 401,
    ResponseCode.INVALID_ADMIN: 403,
    ResponseCode.INSUFFICIENT_PERMISSIONS: 403,
    ResponseCode.AUTHENTICATION_FAILED: 403,
    ResponseCode.INVALID_CREDENTIAL: 403,
}


def http_status(code: int, *, resolution: bool = False, created: bool = False) -> int:
    """HTTP status for a response code. ``created``: a create/add-value that ran with
    overwrite=false succeeded (201). VALUES_NOT_FOUND is 200 only for a resolution."""
    if code == ResponseCode.SUCCESS:
        return 201 if created else 200
    if code == ResponseCode.VALUES_NOT_FOUND:
        return 200 if resolution else 400
    return _STATUS.get(code, 500)


def error_json(code: int, message: str, handle: str | None = None, *, resolution: bool = False) -> JsonObj:
    out: JsonObj = {"responseCode": int(code)}
    if handle:
        out["handle"] = handle
    if message:
        out["message"] = message
    if resolution and code == ResponseCode.VALUES_NOT_FOUND:
        out["values"] = []
    return out


def resolution_json(handle: str, values: Iterable[HandleValue]) -> JsonObj:
    return {"responseCode": int(ResponseCode.SUCCESS), "handle": handle, "values": values_to_json(values)}


def list_json(
    handles: Iterable[str],
    total: int,
    *,
    prefix: str | None = None,
    page: int | None = None,
    page_size: int | None = None,
    key: str = "handles",
) -> JsonObj:
    """List handles / homed prefixes; ``totalCount`` is a string, as Handle.Net sends it."""
    out: JsonObj = {"responseCode": int(ResponseCode.SUCCESS)}
    if prefix is not None:
        out["prefix"] = prefix
    out["totalCount"] = str(total)
    if page is not None and page_size is not None and page >= 0 and page_size >= 0:
        out["page"] = page
        out["pageSize"] = page_size
    out[key] = list(handles)
    return out
