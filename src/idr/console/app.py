"""The console's HTTP handlers, mounted on a node's own aiohttp application under ``/console``.

Server-rendered pages (jinja2, autoescaped) with a little JavaScript for live figures, the
chart and the batch progress bar. Every write goes through ``service.submit`` with the
identity the session authenticated, so the core's authorisation applies exactly as for the
API. Sessions live server-side; the cookie holds only an unguessable id (HttpOnly,
SameSite=Strict, ``__Host-`` and Secure over HTTPS). Logging in, and any form carrying a
secret, is refused over plain HTTP, as the API refuses credentials there.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hmac
import io
import json
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web

from idr.console import fedmap, lookup
from idr.console.i18n import LANGS, pick_lang, translate
from idr.console.state import BatchJob, Jobs, ResolutionRing, Session, Sessions
from idr.core.interface import Core
from idr.core.prefixes import TooManyApplications
from idr.core.request import Op, Request
from idr.core.secret_policy import admin_secret_problem
from idr.model.errors import HandleError, ResponseCode
from idr.model.handle import Handle, normalize_key
from idr.model.value import HandleValue, ValueReference
from idr.schemes import ecode, gs1
from idr.schemes.common import SchemeError
from idr.schemes.detect import Recognised, recognise
from idr.server.applying import apply_counted
from idr.server.scans import install as install_scans
from idr.server.scans import off_loop
from idr.server.throttle import THROTTLE_KEY, Throttled
from idr.server.throttle import install as install_throttle
from idr.server.walks import WALKS_KEY, WalksBusy
from idr.server.walks import install as install_walks

if TYPE_CHECKING:
    from idr.core.templates import Template, TemplateRegistry
    from idr.model.site import SiteInfo
    from idr.resolver.recursive import RecursiveResolver

SAMPLE_EVERY = 5.0
BATCH_SIZE = 50
MAX_CSV_ROWS = 100_000
COOKIE_SECURE = "__Host-idr_console"
COOKIE_PLAIN = "idr_console"
STATIC_FILES = {"console.css": "text/css", "console.js": "text/javascript"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
TEMPLATE_INDEX_FIRST = 2  # template fields at 2, 3, …; URL at 1; the claim at 1001
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class NodeView:
    """What the console needs of a node; ``idr.node.Node`` provides it (tests may build one)."""

    service: Core
    name: str
    role: str
    data_dir: Path | None = None
    replicator: Any = None  # idr.replication.Replicator when replication runs


class Console:
    """One per node, shared by its HTTPS and HTTP listeners."""

    def __init__(self, node: Any) -> None:
        self.node = node
        limits = getattr(getattr(node, "config", None), "http_limits", None)
        self.sessions = Sessions(capacity=limits.console_sessions if limits is not None else None)
        self.ring = ResolutionRing()
        self.jobs = Jobs()
        self.map = fedmap.MapCache()
        self.tasks: set[asyncio.Task[None]] = set()
        self.samplers = 0
        self._sampler: asyncio.Task[None] | None = None
        self._prefix_cache: tuple[float, int] = (0.0, 0)
        self._walk: lookup.Walk | None = None
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("idr.console", "templates"),
            autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["ts"] = _fmt_ts
        self.env.filters["q"] = lambda s: quote(str(s), safe="")

    # node facts -------------------------------------------------------------------------

    @property
    def service(self) -> Core:
        svc: Core = self.node.service
        return svc

    @property
    def name(self) -> str:
        config = getattr(self.node, "config", None)
        return str(getattr(config, "name", None) or getattr(self.node, "name", "idr node"))

    @property
    def role(self) -> str:
        role = getattr(self.service, "role", None)
        if role is None:
            config = getattr(self.node, "config", None)
            role = getattr(config, "role", None) or getattr(self.node, "role", "standalone")
        return str(role)

    @property
    def replicator(self) -> Any:
        return getattr(self.node, "replicator", None)

    def prefixes(self) -> list[str]:
        """Prefixes homed here that identifiers can be registered under (not internal ones)."""
        return sorted(p for p in self.service.homed_prefixes() if not p.startswith("0."))

    def registered(self) -> int:
        """Identifiers under this node's prefixes, as last counted (:meth:`count_registered`)."""
        return self._prefix_cache[1]

    async def count_registered(self) -> None:
        """Recount :meth:`registered` if 2 s old (COUNT is a scan: off the event loop)."""
        if time.monotonic() - self._prefix_cache[0] <= 2.0:
            return
        prefixes, store = self.prefixes(), self.service.store
        n = await asyncio.to_thread(lambda: sum(store.count(normalize_key(p)) for p in prefixes))
        self._prefix_cache = (time.monotonic(), n)

    async def walk(self) -> lookup.Walk:
        """How this console resolves a handle: with the recursive engine, built once (see
        ``console.lookup``). Its root is ``federation.toml``'s, or — on a top node — the top
        service's own sites; no cache, so the console shows the federation as it is now."""
        if self._walk is None:
            # a recursive node walks with its own engine; any other reads its root once, off
            # the event loop (a file, and on a top node its own site records in the store)
            recursive = getattr(self.service, "trace", None) is not None
            root = [] if recursive else await asyncio.to_thread(self._root)
            engine = self._engine(root) if root else None
            if self._walk is None:
                self._walk = lookup.walk_from(self.service, self.name, engine)
        return self._walk

    def _root(self) -> list[SiteInfo]:
        from idr.core.federation import FederationSettings, loopback_site

        data_dir = getattr(getattr(self.node, "config", None), "data_dir", None)
        root = FederationSettings.load(Path(data_dir)).root if data_dir is not None else []
        sites = []
        for i, addr in enumerate(root):
            host, _, port = addr.rpartition(":")
            if port.isdigit():
                sites.append(loopback_site(f"top {addr}", native=int(port), host=host, primary=i == 0))
        if not sites and self.role == "top":
            sites = lookup.site_of(self.service)
        return sites

    def _engine(self, root: list[SiteInfo]) -> RecursiveResolver:
        from idr.resolver.recursive import Limits, RecursiveResolver
        from idr.resolver.transport import NativeTransport

        transport = lookup.LocalFirst(self.service, self._own_addresses, NativeTransport())
        return RecursiveResolver(root, transport, limits=Limits.uncached())

    def _own_addresses(self) -> set[tuple[str, int]]:
        """Where this node listens (what ``LocalFirst`` answers in-process)."""
        ls = getattr(self.node, "listeners", None)
        found = (getattr(ls, n, None) for n in ("native", "http", "https")) if ls is not None else ()
        return {(str(a[0]), int(a[1])) for a in found if a}

    def templates(self) -> TemplateRegistry:
        from idr.core.templates import TemplateRegistry

        reg = getattr(self.service, "templates", None)
        return reg if isinstance(reg, TemplateRegistry) else TemplateRegistry.builtin()

    # sampling ---------------------------------------------------------------------------

    def answers(self) -> tuple[int, int]:
        """(resolutions answered, failures answered) by every front-end of the node — the
        counters ``/metrics`` exports (``idr.server.tally``), cache hits included."""
        tallies = getattr(self.node, "tallies", None)
        if tallies is None:  # a bare NodeView (tests): the core's own counters
            counters = self.service.counters
            return counters.get("resolutions", 0), counters.get("errors", 0)
        overall = tallies.overall()
        return overall.resolutions, overall.errors

    def sample(self) -> None:
        self.ring.sample(self.answers()[0])

    async def _sample_forever(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_EVERY)

    async def on_startup(self, _: web.Application) -> None:
        self.samplers += 1
        if self._sampler is None or self._sampler.done():
            self._sampler = asyncio.get_running_loop().create_task(self._sample_forever())

    async def on_cleanup(self, _: web.Application) -> None:
        self.samplers -= 1
        if self.samplers > 0:
            return
        pending = [t for t in (self._sampler, *self.tasks) if t is not None]
        for t in pending:
            t.cancel()
        for t in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._sampler = None
        self.tasks.clear()

    def spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


_consoles: weakref.WeakKeyDictionary[Any, Console] = weakref.WeakKeyDictionary()
CONSOLE_KEY = web.AppKey("idr.console", Console)


def console_for(node: Any) -> Console:
    c = _consoles.get(node)
    if c is None:
        c = _consoles[node] = Console(node)
    return c


def _fmt_ts(ts: int | float) -> str:
    if not ts:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


# --------------------------------------------------------------------------- request helpers


class Page:
    """Per-request view state: language, session, and the cookie to set."""

    def __init__(self, console: Console, request: web.Request) -> None:
        self.console = console
        self.request = request
        q = request.query.get("lang")
        self.lang = pick_lang(q, request.cookies.get("lang"), request.headers.get("Accept-Language"))
        self.set_lang = q in LANGS
        self.secure = request.secure
        self.cookie_name = COOKIE_SECURE if self.secure else COOKIE_PLAIN
        s = console.sessions.get(request.cookies.get(self.cookie_name))
        if s is not None and s.secure != self.secure:
            s = None
        self.new_session = s is None
        self.session: Session = s or console.sessions.new(self.secure)

    @property
    def identity(self) -> ValueReference | None:
        # An identity is only ever honoured on the channel it logged in over: HTTPS.
        return self.session.identity if self.secure else None

    def t(self, key: str) -> str:
        return translate(self.lang, key)

    def lang_url(self, lang: str) -> str:
        params = {k: v for k, v in self.request.query.items() if k != "lang"}
        params["lang"] = lang
        return f"{self.request.path}?{urlencode(params)}"

    def rotate(self, identity: ValueReference | None) -> None:
        self.session = self.console.sessions.rotate(self.session, identity)
        self.new_session = True

    def flash(self, kind: str, text: str) -> None:
        self.session.flash.append((kind, text))

    def finish(self, resp: web.StreamResponse) -> web.StreamResponse:
        if self.new_session:
            resp.set_cookie(
                self.cookie_name,
                self.session.sid,
                path="/",
                httponly=True,
                secure=self.secure,
                samesite="Strict",
            )
        if self.set_lang:
            resp.set_cookie("lang", self.lang, path="/", samesite="Strict", max_age=365 * 86400)
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "same-origin"
        resp.headers["Cache-Control"] = "no-store"
        return resp

    def render(self, name: str, status: int = 200, **ctx: Any) -> web.StreamResponse:
        flashes, self.session.flash = self.session.flash, []
        tmpl = self.console.env.get_template(name)
        body = tmpl.render(
            t=self.t,
            lang=self.lang,
            other_lang="en" if self.lang == "zh" else "zh",
            lang_url=self.lang_url,
            path=self.request.path,
            identity=self.identity,
            secure=self.secure,
            csrf=self.session.csrf,
            flashes=flashes,
            node_name=self.console.name,
            role=self.console.role,
            **ctx,
        )
        return self.finish(web.Response(status=status, text=body, content_type="text/html", charset="utf-8"))

    def redirect(self, location: str) -> web.StreamResponse:
        return self.finish(web.Response(status=303, headers={"Location": location}))

    def json(self, obj: Any, status: int = 200) -> web.StreamResponse:
        return self.finish(web.json_response(obj, status=status))

    def csrf_ok(self, form: Any) -> bool:
        sent = form.get("csrf", "") if form is not None else ""
        return isinstance(sent, str) and bool(sent) and hmac.compare_digest(sent, self.session.csrf)

    def refuse_csrf(self) -> web.StreamResponse:
        return self.render("message.html", status=403, title=self.t("err.title"), message=self.t("err.csrf"))


def _page(request: web.Request) -> Page:
    return Page(request.app[CONSOLE_KEY], request)


# --------------------------------------------------------------------------- dashboard


def stats(console: Console) -> dict[str, Any]:
    console.sample()
    counters = console.service.counters
    total, errors = console.answers()
    secondary, enterprise = console.map.counts()
    out: dict[str, Any] = {
        "time": int(time.time()),
        "registered": console.registered(),
        "resolutions_total": total,
        "resolutions_today": console.ring.today(total),
        "registrations": counters.get("registrations", 0),
        "errors": errors,
        "secondary": secondary,
        "enterprise": enterprise,
        "per_minute": console.ring.per_minute(),
        "replication": None,
    }
    rep = console.replicator
    if rep is not None:
        with contextlib.suppress(Exception):
            st = rep.status()
            out["replication"] = {
                "role": st.get("role"),
                "epoch": st.get("epoch"),
                "writable": st.get("writable"),
                "mode": st.get("mode"),
                "mirrors": st.get("mirrors"),
                "lag_entries": st.get("lag_entries"),
                "lag_seconds": round(float(st.get("lag_seconds", 0.0)), 3),
                "primary_api": st.get("primary_api"),
            }
    return out


async def federation_figures(console: Console) -> dict[str, Any] | None:
    """The federation statistics this node keeps (its subtree; the top's: everything), or None."""
    hub = getattr(console.node, "stats_hub", None)
    if hub is None:
        return None
    try:
        doc: dict[str, Any] = await hub.stats()
    except Exception:  # the page stays usable while the store is unavailable
        return None
    return doc


def reports_by_prefix(fed: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Map nodes by prefix → their reporting status and availability (for the map's badges)."""
    out: dict[str, dict[str, Any]] = {}
    for n in (fed or {}).get("nodes", []):
        for p in [n["node"], *n.get("prefixes", [])]:
            out.setdefault(normalize_key(p), n)
    return out


async def dashboard(request: web.Request) -> web.StreamResponse:
    p = _page(request)
    c = p.console
    fmap = await c.map.get(c.service, c.name, c.role, [])
    fed = await federation_figures(c)
    await c.count_registered()
    return p.render(
        "dashboard.html",
        stats=stats(c),
        fmap=fmap,
        prefixes=c.prefixes(),
        fed=fed,
        reports=reports_by_prefix(fed),
    )


async def api_stats(request: web.Request) -> web.StreamResponse:
    p = _page(request)
    await p.console.count_registered()
    return p.json(stats(p.console))


async def api_node(request: web.Request) -> web.StreamResponse:
    c = request.app[CONSOLE_KEY]
    # public, and a walk over the node's delegations: on the scan gate, off the event loop
    info = await off_loop(request, lambda: fedmap.node_info(c.service, c.name, c.role))
    resp = web.json_response(info)
    resp.headers["Cache-Control"] = "no-store"
    return resp


async def api_federation(request: web.Request) -> web.StreamResponse:
    p = _page(request)
    c = p.console
    return p.json((await c.map.get(c.service, c.name, c.role, [])).to_json())


# --------------------------------------------------------------------------- resolve


async def traced(console: Console, text: str) -> lookup.Resolution:
    """Recognise the scheme, resolve through the federation with a trace, follow a scheme
    name's alias; a GS1 key with qualifiers falls back to its less specific records."""
    try:
        homed = {normalize_key(p) for p in console.service.homed_prefixes()}
        rec = recognise(text, holds=lambda p: normalize_key(p) in homed)
    except SchemeError as e:
        res = lookup.Resolution(query=text, handle=text, scheme="unknown")
        res.code, res.message = int(ResponseCode.INVALID_HANDLE), e.message
        return res
    walk = await console.walk()
    hops: list[lookup.Hop] = []
    res = lookup.Resolution(query=text, handle=rec.handle)
    for handle in _tries(rec):
        walked, aliases = (
            await lookup.following_aliases(walk, handle)
            if rec.scheme != "handle"
            else (await walk(handle), [])
        )
        res = lookup.Resolution.of(text, walked)
        res.aliases = aliases
        hops += res.hops
        if res.code not in (ResponseCode.HANDLE_NOT_FOUND, ResponseCode.VALUES_NOT_FOUND):
            break
    res.hops = hops
    res.scheme, res.details = rec.scheme, _flat(rec.details)
    return res


def _tries(rec: Recognised) -> list[str]:
    """The handles to ask for, most specific first: a GS1 key's levels (``/01/x/21/s``, ``/01/x``)."""
    dl = rec.key.gs1 if isinstance(rec.key, ecode.Ecode) else rec.key
    if not isinstance(dl, gs1.DigitalLink):
        return [rec.handle]
    prefix = rec.handle.partition("/")[0]
    return [gs1.to_handle(level, prefix) for level in dl.ancestors()]


def _flat(details: Mapping[str, object]) -> dict[str, str]:
    """A recognised identifier's details as text (nested qualifiers, an Ecode's GS1 key…)."""

    def text(v: object) -> str:
        if isinstance(v, Mapping):
            return ", ".join(f"{k}={text(x)}" for k, x in v.items())
        if isinstance(v, list | tuple):
            return ", ".join(text(x) for x in v)
        return str(v)

    return {str(k): text(v) for k, v in details.items() if v not in (None, "", {}, [], ())}


async def resolve_page(request: web.Request) -> web.StreamResponse:
    p = _page(request)
    text = request.query.get("id", "").strip()
    if not text:
        return p.render("resolve.html", q="", res=None, shown=[], code_name="")
    res = await traced(p.console, text)
    shown = [lookup.show_value(v) for v in res.values]
    code_name = ResponseCode(res.code).name if res.code in ResponseCode._value2member_map_ else str(res.code)
    status = (
        200
        if res.ok
        else 404
        if res.code == ResponseCode.HANDLE_NOT_FOUND
        else 400
        if (res.code == ResponseCode.INVALID_HANDLE)
        else 200
    )
    return p.render("resolve.html", status=status, q=text, res=res, shown=shown, code_name=code_name)


async def api_resolve(request: web.Request) -> web.StreamResponse:
    p = _page(request)
    res = await traced(p.console, request.query.get("id", ""))
    return p.json(
        {
            "query": res.query,
            "scheme": res.scheme,
            "handle": res.handle,
            "responseCode": res.code,
            "message": res.message,
            "values": [lookup.show_value(v).__dict__ for v in res.values],
            "aliases": [{"alias": a, "target": t} for a, t in res.aliases],
            "trace": [h.__dict__ for h in res.hops],
        }
    )


# --------------------------------------------------------------------------- register / edit


def _field_values(template: Template, form: Any) -> dict[str, str]:
    return {f.name: str(form.get(f.name, "")).strip() for f in template.fields}


def field_errors(template: Template, fields: dict[str, str]) -> dict[str, str]:
    """Reason per field, checked here so the form can point at each one before any write."""
    errors: dict[str, str] = {}
    for f in template.fields:
        text = fields.get(f.name, "")
        if not text:
            if f.required:
                errors[f.name] = "required field is missing"
            continue
        reason = f.error(text)
        if reason:
            errors[f.name] = reason
    return errors


def build_values(
    template: Template, fields: dict[str, str], url: str, existing: tuple[HandleValue, ...] = ()
) -> tuple[HandleValue, ...]:
    """The record's values: URL at 1, fields at 2… (keeping indexes an edit already had), the claim at 1001,
    and every other value of an edited record (admins, keys, anything added elsewhere) untouched."""
    from idr.core.templates import TEMPLATE_INDEX, TEMPLATE_TYPE

    managed = {f.name.upper() for f in template.fields} | {"URL", TEMPLATE_TYPE}
    kept = [v for v in existing if v.type.upper() not in managed]
    old_index = {v.type.upper(): v.index for v in existing if v.type.upper() in managed}
    used = {v.index for v in kept}
    out = list(kept)

    def index_for(type_: str, wanted: int) -> int:
        i = old_index.get(type_.upper(), wanted)
        while i in used:
            i += 1
        used.add(i)
        return i

    if url:
        out.append(HandleValue(index_for("URL", 1), "URL", url.encode("utf-8")))
    for n, f in enumerate(template.fields):
        text = fields.get(f.name, "")
        if text:
            out.append(HandleValue(index_for(f.name, TEMPLATE_INDEX_FIRST + n), f.name, text.encode("utf-8")))
    out.append(
        HandleValue(index_for(TEMPLATE_TYPE, TEMPLATE_INDEX), TEMPLATE_TYPE, template.ref.encode("utf-8"))
    )
    return tuple(sorted(out, key=lambda v: v.index))


def errors_from_message(message: str) -> dict[str, str]:
    """The core's INVALID_VALUE message is JSON listing failing fields (templates); else nothing."""
    try:
        doc = json.loads(message)
    except ValueError:
        return {}
    if not isinstance(doc, dict):
        return {}
    return {str(e.get("field")): str(e.get("reason")) for e in doc.get("errors", []) if isinstance(e, dict)}


async def _current(console: Console, handle: str, identity: ValueReference) -> tuple[HandleValue, ...] | None:
    resp = await console.service.submit(Request(Op.RESOLUTION, handle, identity=identity, public_only=False))
    return resp.values if resp.ok else None


async def register_page(request: web.Request) -> web.StreamResponse:
    p = _page(request)
    c = p.console
    reg = c.templates()
    editing = request.path.rstrip("/").endswith("/edit")
    ctx: dict[str, Any] = {
        "templates": reg.all(),
        "prefixes": c.prefixes(),
        "editing": editing,
        "errors": {},
        "general": "",
        "done": None,
    }
    if p.identity is None:
        return p.render("register.html", template=None, fields={}, url="", prefix="", suffix="", **ctx)
    form: Any = await request.post() if request.method == "POST" else request.query
    handle_text = str(form.get("handle", "")).strip()
    existing: tuple[HandleValue, ...] = ()
    template = reg.get(str(form.get("template", ""))) if form.get("template") else None
    fields: dict[str, str] = {}
    url = str(form.get("url", "")).strip()
    prefix, suffix = str(form.get("prefix", "")).strip(), str(form.get("suffix", "")).strip()
    if editing and handle_text:
        h_prefix, _, h_suffix = handle_text.partition("/")
        prefix, suffix = h_prefix, h_suffix
        current = await _current(c, handle_text, p.identity)
        if current is None:
            ctx["general"] = f"{handle_text}: {p.t('err.not_found')}"
        else:
            existing = current
            if request.method == "GET":
                from idr.core.templates import TEMPLATE_TYPE

                claim = next((v for v in current if v.type.upper() == TEMPLATE_TYPE), None)
                if claim is not None and template is None:
                    template = reg.get(claim.data.decode("utf-8", "replace"))
                if template is not None:
                    by_type = {v.type.lower(): v for v in current}
                    for f in template.fields:
                        v = by_type.get(f.name.lower())
                        fields[f.name] = v.data.decode("utf-8", "replace") if v else ""
                url_v = next((v for v in current if v.type.upper() == "URL"), None)
                url = url_v.data.decode("utf-8", "replace") if url_v else ""
    if request.method == "GET":
        return p.render(
            "register.html", template=template, fields=fields, url=url, prefix=prefix, suffix=suffix, **ctx
        )
    if not p.csrf_ok(form):
        return p.refuse_csrf()
    if template is None:
        ctx["general"] = p.t("reg.choose")
        return p.render(
            "register.html",
            status=400,
            template=None,
            fields={},
            url=url,
            prefix=prefix,
            suffix=suffix,
            **ctx,
        )
    fields = _field_values(template, form)
    errors = field_errors(template, fields)
    handle = f"{prefix}/{suffix}"
    try:
        Handle.parse(handle)
    except HandleError as e:
        errors["suffix"] = e.message
    if url and not url.lower().startswith(("http://", "https://")):
        errors["url"] = "a URL starts with http:// or https://"
    if not errors:
        values = build_values(template, fields, url, existing)
        resp = await c.service.submit(
            Request(Op.CREATE_HANDLE, handle, values=values, identity=p.identity, overwrite=editing)
        )
        if resp.ok:
            p.flash("ok", f"{p.t('reg.saved' if editing else 'reg.ok')}: {handle}")
            return p.redirect(f"/console/resolve?id={quote(handle, safe='/')}")
        errors = errors_from_message(resp.message) if resp.code == ResponseCode.INVALID_VALUE else {}
        if not errors:
            msg = resp.message
            if resp.code == ResponseCode.HANDLE_ALREADY_EXISTS:
                msg = f"{handle} {p.t('reg.exists')}"
            ctx["general"] = f"{ResponseCode(resp.code).name}: {msg}"
            ctx["existing_handle"] = handle if resp.code == ResponseCode.HANDLE_ALREADY_EXISTS else ""
    ctx["errors"] = errors
    return p.render(
        "register.html",
        status=400,
        template=template,
        fields=fields,
        url=url,
        prefix=prefix,
        suffix=suffix,
        **ctx,
    )


# --------------------------------------------------------------------------- batch upload


def parse_csv(data: bytes, template: Template) -> tuple[list[tuple[int, dict[str, str]]], str]:
    """Rows as ``(line number, column → text)``; or an error about the file as a whole."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return [], "the file is not UTF-8 text"
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        return [], "the file is empty"
    except csv.Error as e:
        return [], f"line 1: {e}"
    known = {"handle", "url"} | {f.name for f in template.fields}
    if "handle" not in header:
        return [], "the first row must name the columns, starting with handle"
    unknown = [h for h in header if h not in known]
    if unknown:
        return [], f"unknown column(s) for {template.ref}: {', '.join(unknown)}"
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(rows) >= MAX_CSV_ROWS:
                return [], f"more than {MAX_CSV_ROWS} rows; split the file"
            rows.append(
                (reader.line_num, {h: (row[i].strip() if i < len(row) else "") for i, h in enumerate(header)})
            )
    except csv.Error as e:
        return [], f"line {reader.line_num}: {e}"
    return rows, ""


async def run_batch(
    console: Console,
    job: BatchJob,
    template: Template,
    rows: list[tuple[int, dict[str, str]]],
    identity: ValueReference,
) -> None:
    """Register rows in batches, yielding between them so the node keeps answering meanwhile."""
    try:
        for start in range(0, len(rows), BATCH_SIZE):
            for line, row in rows[start : start + BATCH_SIZE]:
                handle = row.get("handle", "")
                fields = {f.name: row.get(f.name, "") for f in template.fields}
                errors = field_errors(template, fields)
                if errors:
                    job.errors.append((line, handle, "; ".join(f"{k}: {v}" for k, v in errors.items())))
                else:
                    try:
                        Handle.parse(handle)
                        values = build_values(template, fields, row.get("url", ""))
                        resp = await console.service.submit(
                            Request(Op.CREATE_HANDLE, handle, values=values, identity=identity)
                        )
                        if resp.ok:
                            job.ok += 1
                        else:
                            fe = errors_from_message(resp.message)
                            reason = "; ".join(f"{k}: {v}" for k, v in fe.items()) if fe else resp.message
                            job.errors.append((line, handle, f"{ResponseCode(resp.code).name}: {reason}"))
                    except HandleError as e:
                        job.errors.append((line, handle, e.message))
                job.done += 1
            await asyncio.sleep(0)
    finally:
        job.finished = True


async def batch_page(request: web.Request) -> web.StreamResponse:
    p = _page(request)
    c = p.console
    return p.render("batch.html", templates=c.templates().all())


async def batch_start(request: web.Request) -> web.StreamResponse:
    p = _page(request)
    c = p.console
    if p.identity is None:
        return p.json({"error": p.t("err.login")}, status=403)
    form = await request.post()
    if not p.csrf_ok(form):
        return p.json({"error": p.t("err.csrf")}, status=403)
    template = c.templates().get(str(form.get("template", "")))
    if template is None:
        return p.json({"error": p.t("reg.choose")}, status=400)
    upload = form.get("file")
    data = upload.file.read() if isinstance(upload, web.FileField) else b""
    rows, problem = parse_csv(data, template)
    if problem:
        return p.json({"error": problem}, status=400)
    job = c.jobs.new(str(p.identity), len(rows))
    if job is None:
        return p.json({"error": p.t("batch.busy")}, status=429)
    c.spawn(run_batch(c, job, template, rows, p.identity))
    return p.json(job.to_json(), status=202)


async def batch_status(request: web.Request) -> web.StreamResponse:
    p = _page(request)
    job = p.console.jobs.get(request.match_info["job"], str(p.identity)) if p.identity else None
    if job is None:
        return p.json({"error": p.t("err.not_found")}, status=404)
    return p.json(job.to_json())


async def batch_report(request: web.Request) -> web.StreamResponse:
    p = _page(request)
    job = p.console.jobs.get(request.match_info["job"], str(p.identity)) if p.identity else None
    if job is None:
        return p.render("message.html", status=404, title=p.t("err.not_found"), message=p.t("err.not_found"))
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["line", "handle", "error"])
    for line, handle, reason in job.errors:
        # A leading = + - @ would be a formula to a spreadsheet: quote it as text.
        w.writerow([line, _csv_safe(handle), _csv_safe(reason)])
    resp = web.Response(
        body=out.getvalue().encode("utf-8-sig"),
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="errors-{job.id}.csv"'},
    )
    return p.finish(resp)


def _csv_safe(text: str) -> str:
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


# --------------------------------------------------------------------------- login


async def login_page(request: web.Request) -> web.StreamResponse:
    p = _page(request)
    if request.method == "GET":
        nxt = request.query.get("next", "")
        return p.render(
            "login.html", status=200 if p.secure else 403, error="", identity_text="", next_url=nxt
        )
    if not p.secure:
        return p.render(
            "login.html", status=403, error=p.t("login.https_only"), identity_text="", next_url=""
        )
    form = await request.post()
    if not p.csrf_ok(form):
        return p.refuse_csrf()
    ident_text = str(form.get("identity", "")).strip()
    secret = str(form.get("secret", ""))

    def refused(status: int, error: str) -> web.StreamResponse:
        """The form again, as filled in, with why it was refused."""
        return p.render(
            "login.html",
            status=status,
            error=p.t(error),
            identity_text=ident_text,
            next_url=str(form.get("next", "")),
        )

    try:
        identity = ValueReference.parse(ident_text)
    except ValueError:
        return refused(400, "login.bad_identity")
    throttle = request.app[THROTTLE_KEY]
    try:
        throttle.begin(request.remote, identity)
    except Throttled as e:
        resp = refused(429, "login.throttled")
        resp.headers["Retry-After"] = str(e.retry_after)
        return resp
    await p.console.service.preload([identity.handle])  # the key lookup below never waits
    if not secret or not p.console.service.authenticate_secret(identity, secret.encode("utf-8")):
        return refused(401, "login.failed")
    throttle.succeeded(request.remote, identity)
    p.rotate(identity)
    p.flash("ok", p.t("login.ok"))
    nxt = str(form.get("next", "")) or "/console"
    if not nxt.startswith("/console") or nxt.startswith("//"):
        nxt = "/console"
    return p.redirect(nxt)


async def logout(request: web.Request) -> web.StreamResponse:
    p = _page(request)
    form = await request.post()
    if not p.csrf_ok(form):
        return p.refuse_csrf()
    p.rotate(None)
    p.flash("ok", p.t("login.out"))
    return p.redirect("/console")


# --------------------------------------------------------------------------- prefix applications


def _registries(console: Console) -> list[Any]:
    """The federation module's ``PrefixRegistry`` for the prefix this node takes applications for.

    As ``/api/federation/applications`` does: the configured parent, else (on a secondary)
    the homed prefixes that are not themselves under another homed one (an approved
    enterprise prefix stays homed here until it is delegated).
    """
    try:
        from idr.core.federation import FederatedService
        from idr.core.prefixes import PrefixRegistry
    except ImportError:
        return []
    svc = console.service
    if not isinstance(svc, FederatedService):
        return []
    parent = str(getattr(getattr(svc, "context", None), "parent", "") or "")
    if parent:
        parents = [parent]
    elif svc.role == "secondary":
        homed = console.prefixes()
        parents = [p for p in homed if not any(p.startswith(q + ".") for q in homed)]
    else:
        parents = []
    out = []
    for prefix in parents:
        with contextlib.suppress(ValueError):
            out.append(PrefixRegistry(svc, prefix))
    return out


def _filings(console: Console, identity: ValueReference | None) -> list[Any]:
    try:
        from idr.core.federation import FederatedService
        from idr.core.prefixes import FilingRegister
    except ImportError:
        return []
    svc = console.service
    if not isinstance(svc, FederatedService) or console.role != "top":
        return []
    return FilingRegister(svc).visible_to(identity)


async def prefixes_page(request: web.Request, *, status: int = 200, **extra: Any) -> web.StreamResponse:
    """Anyone may apply; only a reviewer of the parent prefix sees the queue (applicants'
    contacts and credit codes), only the top's admins (or the filing secondary's) filings."""
    p = _page(request)
    regs = _registries(p.console)

    def read() -> tuple[list[Any], list[Any], list[Any]]:  # store walks: off the event loop
        reviewing = [r for r in regs if r.may_review(p.identity)]
        apps = [a for r in reviewing for a in r.applications()]
        return reviewing, apps, _filings(p.console, p.identity)

    reviewing, apps, filings = await off_loop(request, read)
    apps.sort(key=lambda a: (a.status != "pending", -a.created))
    ctx: dict[str, Any] = {"errors": {}, "form": {}, "general": ""}
    ctx.update(extra)
    return p.render(
        "prefixes.html",
        status=status,
        available=bool(regs),
        parents=[r.parent for r in regs],
        apps=apps,
        reviewer=bool(reviewing),
        filings=filings,
        **ctx,
    )


async def prefix_apply(request: web.Request) -> web.StreamResponse:
    p = _page(request)
    form = await request.post()
    if not p.csrf_ok(form):
        return p.refuse_csrf()
    if not p.secure:
        return await prefixes_page(request, status=403, general=p.t("login.https_only"))
    regs = {r.parent: r for r in _registries(p.console)}
    values = {
        k: str(form.get(k, "")).strip() for k in ("parent", "enterprise", "uscc", "contact", "requested")
    }
    secret = str(form.get("secret", ""))
    reg = regs.get(values["parent"])
    errors: dict[str, str] = {}
    if reg is None:
        errors["parent"] = p.t("err.not_found")
    for k in ("enterprise", "uscc", "contact"):
        if not values[k]:
            errors[k] = "required"
    problem = admin_secret_problem(secret)
    if problem is not None:
        errors["secret"] = problem
    if not errors and reg is not None:
        try:
            app = await apply_counted(
                request,
                reg,
                enterprise=values["enterprise"],
                uscc=values["uscc"],
                contact=values["contact"],
                secret=secret,
                requested=values["requested"],
                applicant=p.identity,
            )
        except TooManyApplications as e:
            resp = await prefixes_page(request, status=429, form=values, general=e.message)
            resp.headers["Retry-After"] = str(e.retry_after)
            return resp
        except HandleError as e:
            field = "uscc" if "credit code" in e.message else "requested" if "prefix" in e.message else ""
            if field:
                errors[field] = e.message
            else:
                return await prefixes_page(request, status=400, form=values, general=e.message)
        else:
            p.flash("ok", f"{p.t('pfx.submitted')}: {app.id}")
            return p.redirect("/console/prefixes")
    return await prefixes_page(request, status=400, form=values, errors=errors)


async def prefix_decide(request: web.Request) -> web.StreamResponse:
    p = _page(request)
    form = await request.post()
    if not p.csrf_ok(form):
        return p.refuse_csrf()
    if p.identity is None:
        return await prefixes_page(request, status=403, general=p.t("pfx.reviewer_login"))
    app_id = request.match_info["app"]
    decision = str(form.get("decision", ""))
    reason = str(form.get("reason", "")).strip()
    regs = _registries(p.console)
    # the application's record: read off the event loop (a PostgreSQL round trip, or a lock)
    reg = await off_loop(request, lambda: next((r for r in regs if _has(r, app_id)), None))
    if reg is None:
        return await prefixes_page(request, status=404, general=f"{app_id}: {p.t('err.not_found')}")
    try:
        if decision == "approve":
            await reg.approve(app_id, p.identity, site=getattr(reg.service, "site_info", None))
            await _file_with_top(p.console, reg, app_id)
        elif decision == "reject":
            if not reason:
                return await prefixes_page(request, status=400, general=p.t("pfx.reason_needed"))
            await reg.reject(app_id, p.identity, reason)
        else:
            return await prefixes_page(request, status=400, general="decision must be approve or reject")
    except HandleError as e:
        return await prefixes_page(
            request, status=403 if e.code == ResponseCode.INSUFFICIENT_PERMISSIONS else 400, general=e.message
        )
    p.flash("ok", f"{p.t('pfx.decided')}: {app_id}")
    return p.redirect("/console/prefixes")


def _has(reg: Any, app_id: str) -> bool:
    try:
        reg.get(app_id)
    except HandleError:
        return False
    return True


async def _file_with_top(console: Console, reg: Any, app_id: str) -> None:
    """File an approved prefix with the top node, as ``/api/federation`` does, when this node has one."""
    target = getattr(getattr(console.service, "context", None), "filing_target", None)
    if target is None:
        return  # no top configured: the application shows "not filed"
    from idr.resolver.filing import file_prefix

    await file_prefix(reg, app_id, target)  # records success or the failure on the application


# --------------------------------------------------------------------------- supply chain


async def chain_page(request: web.Request) -> web.StreamResponse:
    p = _page(request)
    text = request.query.get("id", "").strip()
    if not text:
        return p.render("chain.html", q="", tree=None, count=0)
    from idr.core.request import Response
    from idr.resolver.recursive import Resolution as Walked
    from idr.resolver.recursive import supply_chain

    try:
        with request.app[WALKS_KEY].walk() as deadline:
            walk = await p.console.walk()

            async def resolve(handle: str) -> Walked:
                """The walk, within what is left of the gate's time (then: not resolved)."""
                try:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError
                    return await asyncio.wait_for(walk(handle), left)
                except TimeoutError:
                    busy = Response(ResponseCode.SERVER_TOO_BUSY, handle, message=p.t("chain.time"))
                    return Walked(handle, busy, [])

            try:
                first = await asyncio.wait_for(traced(p.console, text), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return p.render(
                    "message.html", status=503, title=p.t("chain.busy"), message=p.t("chain.time")
                )
            tree, count = lookup.chain_view(await supply_chain(resolve, first.handle))
    except WalksBusy as e:
        return p.render("message.html", status=503, title=p.t("chain.busy"), message=e.message)
    return p.render("chain.html", q=text, tree=tree, count=count)


# --------------------------------------------------------------------------- static, 404


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    ctype = STATIC_FILES.get(name)
    if ctype is None:
        return await not_found(request)
    data = resources.files("idr.console").joinpath("static", name).read_bytes()
    return web.Response(
        body=data,
        content_type=ctype,
        charset="utf-8",
        headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
    )


async def not_found(request: web.Request) -> web.StreamResponse:
    p = _page(request)
    return p.render("message.html", status=404, title=p.t("err.not_found"), message=request.path)


def _method_guard(get: Handler | None = None, post: Handler | None = None) -> Handler:
    async def dispatch(request: web.Request) -> web.StreamResponse:
        if request.method in ("GET", "HEAD") and get is not None:
            return await get(request)
        if request.method == "POST" and post is not None:
            return await post(request)
        return web.Response(status=405, text="method not allowed", headers={"Allow": "GET, POST"})

    return dispatch


def add_console_routes(app: web.Application, node: Any) -> Console:
    """Serve the console of ``node`` (an ``idr.node.Node``, or a ``NodeView``) on ``app``."""
    console = console_for(node)
    app[CONSOLE_KEY] = console
    install_throttle(app, getattr(node, "throttle", None))
    install_walks(app, getattr(node, "walks", None))
    install_scans(app)
    app.on_startup.append(console.on_startup)
    app.on_cleanup.append(console.on_cleanup)
    r = app.router
    r.add_route("*", "/console", _method_guard(dashboard))
    r.add_route("*", "/console/", _method_guard(dashboard))
    r.add_route("*", "/console/api/stats", _method_guard(api_stats))
    r.add_route("*", "/console/api/node", _method_guard(api_node))
    r.add_route("*", "/console/api/federation", _method_guard(api_federation))
    r.add_route("*", "/console/api/resolve", _method_guard(api_resolve))
    r.add_route("*", "/console/resolve", _method_guard(resolve_page))
    r.add_route("*", "/console/register", _method_guard(register_page, register_page))
    r.add_route("*", "/console/edit", _method_guard(register_page, register_page))
    r.add_route("*", "/console/batch", _method_guard(batch_page, batch_start))
    r.add_route("*", "/console/api/jobs/{job}", _method_guard(batch_status))
    r.add_route("*", "/console/batch/{job}/errors.csv", _method_guard(batch_report))
    r.add_route("*", "/console/login", _method_guard(login_page, login_page))
    r.add_route("*", "/console/logout", _method_guard(None, logout))
    r.add_route("*", "/console/prefixes", _method_guard(prefixes_page))
    r.add_route("*", "/console/prefixes/apply", _method_guard(None, prefix_apply))
    r.add_route("*", "/console/prefixes/{app}/decide", _method_guard(None, prefix_decide))
    r.add_route("*", "/console/chain", _method_guard(chain_page))
    r.add_route("*", "/console/static/{name}", _method_guard(static))
    r.add_route("*", "/console/{tail:.*}", _method_guard(not_found, not_found))
    return console
