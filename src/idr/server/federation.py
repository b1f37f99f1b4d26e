"""HTTP routes of the federation (JSON under ``/api/federation/``): templates, prefix
applications and review, filing and verification, recursive resolution with its hops, and
the supply-chain trace. Translation only: the rules are in ``idr.core`` (prefixes, templates)
and the walking in ``idr.resolver``; authentication is the REST API's (Basic over HTTPS).

Which routes do anything depends on the node: a secondary has applications, the top has
filings and verification, a recursive node resolves and traces; elsewhere they answer
``OPERATION_NOT_SUPPORTED`` (HTTP 501).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from idr.codec import rest
from idr.core.federation import FederatedService
from idr.core.interface import Core
from idr.core.prefixes import Filing, FilingRegister, PrefixRegistry, TooManyApplications, audit_trail
from idr.core.service import NodeService
from idr.model.errors import HandleError, ResponseCode
from idr.model.value import ValueReference
from idr.server.applying import apply_counted
from idr.server.applying import install as install_applications
from idr.server.http import _identity, _Reply, _require_tls  # the REST API's Basic-over-TLS identity
from idr.server.scans import install as install_scans
from idr.server.scans import off_loop
from idr.server.walks import WALKS_KEY, WalkGate
from idr.server.walks import install as install_walks


@dataclass
class FederationContext:
    """What a node's federation routes need beyond its core service (set by the assembler)."""

    parent: str = ""  # secondary: the prefix applications are for
    filing_target: Any = None  # secondary: idr.resolver.filing.FilingTarget
    verifier: Any = None  # top: idr.resolver.filing.Verifier


SERVICE = web.AppKey("idr.federation.service", Core)


def _ok(obj: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=rest.dumps({"responseCode": 1, **obj}), content_type="application/json"
    )


def _fail(code: ResponseCode, message: str) -> HandleError:
    return HandleError(code, message)


def _fed(request: web.Request) -> FederatedService:
    service = request.app[SERVICE]
    if not isinstance(service, FederatedService):
        raise _fail(ResponseCode.OPERATION_NOT_SUPPORTED, "this node holds no federation data")
    return service


def _context(service: FederatedService) -> FederationContext:
    ctx = service.context
    return ctx if isinstance(ctx, FederationContext) else FederationContext()


def _registry(request: web.Request) -> PrefixRegistry:
    service = _fed(request)
    parent = _context(service).parent or next(
        (p for p in service.homed_prefixes() if service.role == "secondary"), ""
    )
    if not parent:
        raise _fail(ResponseCode.OPERATION_NOT_SUPPORTED, "this node takes no prefix applications")
    return PrefixRegistry(service, parent)


def _who(request: web.Request) -> ValueReference:
    identity = _identity(request)
    if identity is None:
        raise _fail(
            ResponseCode.AUTHENTICATION_NEEDED, "authentication needed (Basic index:handle over HTTPS)"
        )
    return identity


async def _json_body(request: web.Request) -> dict[str, Any]:
    doc = rest.loads(await request.read())
    if not isinstance(doc, dict):
        raise _fail(ResponseCode.PROTOCOL_ERROR, "body must be a JSON object")
    return doc


def _str(doc: dict[str, Any], name: str, default: str | None = None) -> str:
    v = doc.get(name, default)
    if not isinstance(v, str):
        raise _fail(ResponseCode.INVALID_VALUE, f"field {name!r} must be a string")
    return v


# --------------------------------------------------------------------------- info, templates


async def info(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    role = getattr(service, "role", "standalone")
    site = rest.site_to_json(service.site_info) if service.site_info else None
    return _ok({"role": role, "prefixes": service.homed_prefixes(), "site": site})


async def templates(request: web.Request) -> web.Response:
    """The identifier data templates this node enforces (any authoritative role, standalone too)."""
    service = request.app[SERVICE]
    if not isinstance(service, NodeService):
        raise _fail(
            ResponseCode.OPERATION_NOT_SUPPORTED, "a recursive node holds no identifiers and no templates"
        )
    ref = request.match_info.get("ref", "")
    if ref:
        t = service.templates.get(ref)
        if t is None:
            raise _fail(ResponseCode.HANDLE_NOT_FOUND, f"no template {ref}")
        return _ok({"template": t.to_json()})
    return _ok({"templates": [t.to_json() for t in service.templates.all()]})


# --------------------------------------------------------------------------- applications


async def applications(request: web.Request) -> web.Response:
    reg = _registry(request)
    if request.method == "GET":
        reviewer = _who(request)
        status = request.query.get("status") or None

        def queue() -> list[dict[str, Any]]:
            if not reg.may_review(reviewer):
                raise _fail(
                    ResponseCode.INSUFFICIENT_PERMISSIONS,
                    f"{reviewer} does not review applications under {reg.parent}",
                )
            return [a.to_json() for a in reg.applications(status)]

        return _ok({"applications": await off_loop(request, queue)})
    if request.method != "POST":
        raise _fail(ResponseCode.PROTOCOL_ERROR, "use GET or POST")
    _require_tls(request)  # the applicant's secret travels in the body
    doc = await _json_body(request)
    secret = doc.get("secret")
    pubkey = doc.get("publicKey")
    fields = {
        "enterprise": _str(doc, "enterprise", ""),
        "uscc": _str(doc, "uscc", ""),
        "contact": _str(doc, "contact", ""),
        "secret": secret if isinstance(secret, str) else None,
        "public_key": rest.key_from_jwk(pubkey) if pubkey is not None else None,
        "requested": _str(doc, "prefix", ""),
        "applicant": _identity(request),
    }
    try:
        app = await apply_counted(request, reg, **fields)
    except TooManyApplications as e:
        raise _Reply(429, e.code, e.message, {"Retry-After": str(e.retry_after)}) from None
    return _ok({"application": app.to_json()}, 201)


async def decide(request: web.Request) -> web.Response:
    reg = _registry(request)
    reviewer = _who(request)
    app_id = request.match_info["id"]
    action = request.match_info["action"]
    doc = await _json_body(request) if request.can_read_body else {}
    if action == "approve":
        app = await reg.approve(app_id, reviewer, prefix=_str(doc, "prefix", ""), site=reg.service.site_info)
        target = _context(reg.service).filing_target
        if target is not None:
            from idr.resolver.filing import file_prefix

            await file_prefix(reg, app_id, target)
            app = await reg.read(app_id)
        return _ok({"application": app.to_json()})
    if action == "reject":
        app = await reg.reject(app_id, reviewer, _str(doc, "reason", ""))
        return _ok({"application": app.to_json()})
    if action == "file":
        target = _context(reg.service).filing_target
        if target is None:
            raise _fail(ResponseCode.OPERATION_NOT_SUPPORTED, "this node has no top node to file with")
        from idr.resolver.filing import file_prefix

        await file_prefix(reg, app_id, target)
        return _ok({"application": (await reg.read(app_id)).to_json()})
    raise _fail(ResponseCode.PROTOCOL_ERROR, f"unknown action {action!r}")


# --------------------------------------------------------------------------- top: filings, verify


async def filings(request: web.Request) -> web.Response:
    service = _fed(request)
    register = FilingRegister(service)
    if request.method == "GET":
        # credit codes and contacts: the top's admins see all, a secondary's admins their own
        who = _who(request)
        visible = await off_loop(request, lambda: [f.to_json() for f in register.visible_to(who)])
        return _ok({"filings": visible})
    identity = _who(request)
    doc = await _json_body(request)
    filing = Filing(
        prefix=_str(doc, "prefix"),
        parent=_str(doc, "parent"),
        enterprise=_str(doc, "enterprise"),
        uscc=_str(doc, "uscc"),
        contact=_str(doc, "contact", ""),
    )
    return _ok({"filing": (await register.file(identity, filing)).to_json()}, 201)


async def verify(request: web.Request) -> web.Response:
    service = _fed(request)
    verifier = _context(service).verifier
    if verifier is None:
        raise _fail(ResponseCode.OPERATION_NOT_SUPPORTED, "verification is the top node's")
    what = request.query.get("id") or request.match_info.get("id", "")
    if not what:
        raise _fail(ResponseCode.INVALID_HANDLE, "give ?id=<prefix or identifier>")
    return _ok({"verification": await verifier.verify(what)})


async def audit(request: web.Request) -> web.Response:
    service = _fed(request)
    identity = _who(request)
    if not service.is_server_admin(identity):
        raise _fail(ResponseCode.INSUFFICIENT_PERMISSIONS, f"{identity} is not an admin of this node")
    try:
        since = int(request.query.get("since", "0"))
        limit = max(1, min(int(request.query.get("limit", "200")), 10_000))
    except ValueError:
        raise _fail(ResponseCode.PROTOCOL_ERROR, "since and limit are integers") from None
    match = request.query.get("match", "")
    store = service.store

    def walk() -> tuple[list[dict[str, Any]], int, int]:
        entries = audit_trail(service, since=since, limit=limit, match=match)
        return entries, store.first_seq(), store.last_seq()

    # a walk over the whole transaction log: never on the event loop (idr.server.scans)
    entries, first, last = await off_loop(request, walk)
    # The log is compacted (idr.operations.compaction): say which part of history it still holds.
    out: dict[str, Any] = {"entries": entries, "retained_from": first, "last_seq": last}
    if first > since + 1:
        out["beyond_retention"] = (
            f"entries {since + 1}..{first - 1} are no longer kept: the log holds seq {first} on "
            "([log] retain_entries / retain_days in idr.toml); a backup taken then still has them"
        )
    return _ok(out)


# --------------------------------------------------------------------------- recursive node


def _recursive(request: web.Request) -> Any:
    from idr.resolver.recursive import RecursiveService

    service = request.app[SERVICE]
    if not isinstance(service, RecursiveService):
        raise _fail(ResponseCode.OPERATION_NOT_SUPPORTED, "resolution with hops is a recursive node's")
    return service


async def resolve(request: web.Request) -> web.Response:
    service = _recursive(request)
    handle = request.query.get("handle", "")
    res = await service.trace(handle)
    resp = res.response
    out: dict[str, Any] = {
        "handle": handle,
        "code": int(resp.code),
        "status": resp.code.name,
        "cached": res.cached,
        "hops": [h.to_json() for h in res.hops],
    }
    if resp.ok:
        out["values"] = rest.values_to_json([v for v in resp.values if v.public_read])
    else:
        out["message"] = resp.message
    if "trust" in resp.extra:  # [trust] roots: the signature check of this record
        out["trust"] = resp.extra["trust"]
    return _ok(out)


async def trace(request: web.Request) -> web.Response:
    from idr.resolver.recursive import supply_chain

    service = _recursive(request)
    try:
        depth = max(0, min(int(request.query.get("depth", "6")), 12))
    except ValueError:
        raise _fail(ResponseCode.PROTOCOL_ERROR, "depth is an integer") from None
    gate = request.app[WALKS_KEY]
    with gate.walk():
        try:
            async with asyncio.timeout(gate.seconds):
                tree = await supply_chain(service.trace, request.query.get("handle", ""), max_depth=depth)
        except TimeoutError:
            raise _fail(
                ResponseCode.SERVER_TOO_BUSY,
                f"the trace took longer than {gate.seconds:g} s: ask for less depth",
            ) from None
    return _ok({"tree": tree})


ROUTES = (
    ("GET", "/api/federation/info", info),
    ("GET", "/api/federation/templates", templates),
    ("GET", "/api/federation/templates/{ref}", templates),
    ("*", "/api/federation/applications", applications),
    ("POST", "/api/federation/applications/{id}/{action}", decide),
    ("*", "/api/federation/filings", filings),
    ("GET", "/api/federation/verify", verify),
    ("GET", "/api/federation/audit", audit),
    ("GET", "/api/federation/resolve", resolve),
    ("GET", "/api/federation/trace", trace),
)


def add_federation_routes(app: web.Application, service: Core, walks: WalkGate | None = None) -> None:
    """Mount the federation's JSON routes (errors go through the REST API's middleware)."""
    app[SERVICE] = service
    install_walks(app, walks)
    install_applications(app)
    install_scans(app)
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
