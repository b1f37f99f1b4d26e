"""The one assembly point: any node role from its data directory and config.

``Node(config).start()`` builds, in order: the store and the core for the role
(``open_service``), the runtime that runs the core's writes and blocking reads and follows
the store's log (``idr.runtime``), replication (``[replication]`` in idr.toml), the
federation links from ``federation.toml`` (a secondary's filing target at the top node, the
top's verifier; ``federation_context``), then the front-ends (native UDP/TCP, HTTP(S) with
the REST API, SNMS, GS1, converged resolution, console, metrics). ``idr serve``, ``idr demo``
and the tests all start nodes this way; nothing is wired anywhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from idr.core.config import ConfigError, NodeConfig
from idr.core.federation import FederationSettings
from idr.core.interface import Core
from idr.core.service import NodeService
from idr.model.errors import HandleError
from idr.server.gcpace import collector_metrics
from idr.server.server_key import load_server_key
from idr.store.base import Store

if TYPE_CHECKING:
    from aiohttp import web

    from idr.core.federation import FederatedService
    from idr.core.site import SiteShare
    from idr.model.site import SiteInfo
    from idr.model.value import ValueReference
    from idr.operations.compaction import LogCompactor
    from idr.operations.logs import LogSetup
    from idr.operations.reload import ReloadReport
    from idr.replication import Replicator
    from idr.resolver.filing import FilingTarget
    from idr.runtime import NodeRuntime
    from idr.runtime.reporting import StatsHub
    from idr.server.accesslog import AccessLog
    from idr.server.applying import ApplicationGate
    from idr.server.federation import FederationContext
    from idr.server.http_connections import ConnectionGuard
    from idr.server.limits import CostGate
    from idr.server.metrics import MetricsSource
    from idr.server.native import NativeOptions, NativeServer, Workers
    from idr.server.server_key import ServerKey
    from idr.server.sessions import SessionTable
    from idr.server.tally import Tallies
    from idr.server.throttle import Throttle
    from idr.server.walks import WalkGate
    from idr.site import SiteLinkServer

log = logging.getLogger("idr.node")


class AddressError(ValueError):
    """A listen address that is not ``host:port``."""


def parse_address(text: str) -> tuple[str, int]:
    """``127.0.0.1:8443`` / ``[::1]:8443`` / ``:8443`` → (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise AddressError(f"listen address must be HOST:PORT, not {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def open_store(config: NodeConfig) -> Store:
    if config.store == "sqlite":
        from idr.store.sqlite import SqliteStore

        return SqliteStore(config.db_path, search_mode=config.search.index)
    if config.store == "postgres":
        try:
            from idr.store.postgres import PostgresStore
        except ImportError as e:  # psycopg is the ``postgres`` extra: SQLite nodes never need it
            raise ConfigError(f"store = 'postgres' needs psycopg ({e}): pip install 'idr[postgres]'") from e

        return PostgresStore(config.dsn, read_only=config.standby, search_mode=config.search.index)
    raise ValueError(f"unknown store engine {config.store!r}")


def _replica_gate(config: NodeConfig) -> Callable[[], None]:
    """A site's durable replication role, for writers without a running replicator (``idr
    import`` into the data directory): a mirror's store takes only its primary's log."""
    from idr.model.errors import HandleError, ResponseCode
    from idr.replication.state import PRIMARY, ReplState

    def gate() -> None:
        state = ReplState.load(config.data_dir)
        role = state.role if state is not None else config.replication.role
        if role != PRIMARY:
            raise HandleError(
                ResponseCode.SERVER_READ_ONLY,
                f"{config.data_dir} is a replication mirror: write to its primary site instead",
            )

    return gate


def trust_roots(config: NodeConfig) -> list[Any]:
    """The public keys of ``[trust] roots`` (paths relative to the data directory)."""
    from idr.resolver.keys import KeyFileError, load_trust_root

    keys = []
    for name in config.trust.roots:
        path = Path(name) if Path(name).is_absolute() else config.data_dir / name
        try:
            keys.append(load_trust_root(path))
        except KeyFileError as e:
            raise ConfigError(f"{config.path}: [trust] roots: {e}") from e
    return keys


def _standby_gate() -> None:
    from idr.model.errors import HandleError, ResponseCode

    raise HandleError(
        ResponseCode.SERVER_READ_ONLY,
        "this site reads a PostgreSQL hot standby: writes go to the primary site",
    )


def _tighten(data_dir: Path) -> None:
    """A data directory made before files were created private: close it up now (0700/0600)."""
    from idr.private import tighten

    if not data_dir.is_dir():
        return
    try:
        loosened = tighten(data_dir)
    except OSError as e:
        log.warning("cannot make %s private (0700, files 0600): %s", data_dir, e)
        return
    if loosened:
        log.warning(
            "%d file(s) in %s were readable by others (secrets!): now 0600/0700: %s",
            len(loosened),
            data_dir,
            ", ".join(str(p) for p in loosened[:5]),
        )


def open_service(config: NodeConfig) -> Core:
    """The core for the node's role: authoritative roles refer for what they delegate; a
    recursive node resolves through the top service named in ``federation.toml``."""
    from idr.core.federation import make_service
    from idr.core.templates import TemplateFileError, TemplateRegistry

    _tighten(config.data_dir)
    try:
        templates = TemplateRegistry.load(config.data_dir)
    except TemplateFileError as e:
        raise ConfigError(str(e)) from e
    store = open_store(config)
    kwargs: dict[str, Any] = {
        "admins": config.admins,
        "cache_entries": config.limits.cache_entries,
        "max_list_page": config.limits.max_list_page,
        "max_record_bytes": config.limits.max_record_bytes,
        "search_access": config.search.access,
        "templates": templates,
    }
    try:
        if config.role == "recursive":
            from idr.resolver.recursive import Limits, RecursiveResolver, RecursiveService
            from idr.resolver.transport import NativeTransport

            settings = FederationSettings.load(config.data_dir)
            if not settings.root:
                raise ConfigError(
                    f'a recursive node needs the top service\'s address: root = ["HOST:PORT"] '
                    f"under [federation] in {config.data_dir / 'federation.toml'} (idr init --root)"
                )
            rc = config.recursive
            limits = Limits(
                cache_entries=rc.answers,
                service_entries=rc.services,
                missing_entries=rc.missing_prefixes,
                negative_ttl=rc.negative_ttl,
            )
            return RecursiveService(
                store,
                RecursiveResolver(root_sites(settings), NativeTransport(), limits=limits),
                trust_roots=trust_roots(config),
                trust_enforce=config.trust.enforce,
                **kwargs,
            )
        if config.role in ("top", "secondary", "enterprise"):
            pending = config.limits.max_pending_applications
            service = make_service(config.role, store, max_pending_applications=pending, **kwargs)
        else:
            service = NodeService(store, **kwargs)
        service.share = site_share(config)
        if config.standby:
            service.write_gate = _standby_gate
        elif config.replication.listen:
            service.write_gate = _replica_gate(config)  # until a running Replicator installs its own
        return service
    except BaseException:
        store.close()
        raise


def site_share(config: NodeConfig, public_key: bytes | None = None) -> SiteShare | None:
    """This server's share of a multi-server site (``[site]``), None for a site of one server.
    Every server of the site publishes the same HS_SITE: the servers of ``[site] servers`` in
    order, each with the site's server key (``public_key``; default: this server's, which the
    site's servers share — ``idr init --server-key``)."""
    from idr.codec.envelope import PROTOCOL_MAJOR, PROTOCOL_MINOR
    from idr.core.site import HASH_OPTIONS, ServerSpec, SiteShare, server_info
    from idr.model.site import SiteInfo

    s = config.site
    if not s.multi:
        return None
    if public_key is None:
        key = load_server_key(config.data_dir)
        public_key = key.public_bytes if key is not None else b""
    servers = []
    for i, text in enumerate(s.servers):
        spec = ServerSpec.parse(text)
        servers.append(
            server_info(
                i + 1, spec.host, native=spec.native, http=spec.http, https=spec.https, public_key=public_key
            )
        )
    mirror = bool(config.replication.listen) and config.replication.role == "mirror"
    site = SiteInfo(
        serial=s.serial,
        primary=not mirror,
        hash_option=HASH_OPTIONS[s.hash],
        attributes=(("desc", config.name),),
        servers=tuple(servers),
        protocol_major=PROTOCOL_MAJOR,
        protocol_minor=PROTOCOL_MINOR,
    )
    return SiteShare(site, s.index, s.relay_native)


def root_sites(settings: FederationSettings) -> list[SiteInfo]:
    """The top service's sites from ``root = ["HOST:PORT", …]`` (native, primary first),
    named by ``root_names`` where given."""
    from idr.core.federation import loopback_site

    sites = []
    for i, address in enumerate(settings.root):
        host, port = parse_address(address)
        name = settings.root_names[i] if i < len(settings.root_names) else f"root {address}"
        sites.append(loopback_site(name, native=port, host=host, primary=i == 0))
    return sites


def federation_context(config: NodeConfig, service: FederatedService) -> FederationContext:
    """What ``federation.toml`` says this node does in the federation, ready to use:

    * a **secondary** files the prefixes it allocates with the top (``top_url`` over HTTPS,
      as ``top_identity`` — default: this node's admin — with ``top_secret``, the top's
      certificate pinned by ``top_cafile``);
    * the **top** verifies (核验) by walking the federation from ``root`` (default: itself),
      with no cache, so it sees the federation as it is now.
    """
    from idr.resolver.filing import Verifier
    from idr.resolver.recursive import Limits, RecursiveResolver
    from idr.resolver.transport import NativeTransport
    from idr.server.federation import FederationContext

    settings = FederationSettings.load(config.data_dir)
    ctx = FederationContext()
    if config.role == "secondary" and settings.top_url:
        ctx.filing_target = _link(
            config, settings.top_url, settings.top_identity, settings.top_secret, settings.top_cafile, "top"
        )
    if config.role == "top":
        sites = root_sites(settings)
        if not sites and service.site_info is not None:
            sites = [service.site_info]
        if sites:
            resolver = RecursiveResolver(sites, NativeTransport(), limits=Limits.uncached())
            ctx.verifier = Verifier(service, resolver)
    return ctx


def _link(config: NodeConfig, url: str, identity: str, secret: str, cafile: str, what: str) -> FilingTarget:
    """The parent's HTTPS API and this node's identity there (default: the node's admin)."""
    from idr.model.value import ValueReference
    from idr.resolver.filing import FilingTarget

    identity = identity or (config.admins[0] if config.admins else "")
    try:
        who = ValueReference.parse(identity)
    except ValueError as e:
        raise ConfigError(f"federation.toml: {what}_identity {identity!r}: {e}") from e
    path = Path(cafile) if cafile else None
    if path is not None and not path.is_absolute():
        path = config.data_dir / path
    return FilingTarget(url, who, secret, path)


def stats_hub(node: Node) -> StatsHub | None:
    """数据上报 for a top, secondary, enterprise or recursive node (``idr.runtime.reporting``):
    its key in the federation's tables, its parent (``parent_url`` in ``federation.toml``; a
    secondary's default is its ``top_url``) and the identity it reports as (``parent_identity``,
    default its admin, with ``parent_secret`` or — when the node holds its admin's secret key
    itself — that key). None for a standalone node, a mirror or a standby."""
    from idr.core.service import NodeService
    from idr.runtime.reporting import HubConfig, StatsHub

    config = node.config
    if config.role not in ("top", "secondary", "enterprise", "recursive") or config.standby:
        return None
    if config.replication.listen and config.replication.role == "mirror":
        return None
    own = node.service if isinstance(node.service, NodeService) else getattr(node.service, "local", None)
    if not isinstance(own, NodeService):
        return None
    settings = FederationSettings.load(config.data_dir)
    secondary = config.role == "secondary"
    url = settings.parent_url or (settings.top_url if secondary else "")
    target = None
    if url:
        target = _link(
            config,
            url,
            settings.parent_identity or (settings.top_identity if secondary else ""),
            settings.parent_secret or (settings.top_secret if secondary else ""),
            settings.parent_cafile or (settings.top_cafile if secondary else ""),
            "parent",
        )
        if not target.secret:
            held = own.identity_values(target.identity, "HS_SECKEY")
            if not held:
                raise ConfigError(
                    f"federation.toml: parent_secret is needed to report to {url} as {target.identity}"
                )
            target = replace(target, secret=held[0].data.decode("utf-8", "replace"))
    key = _node_key(config.role, own.homed_prefixes(), target.identity if target else None, config.name)
    ls = node.listeners
    hub_config = HubConfig(
        node=key,
        role=config.role,
        name=config.name,
        interval=settings.report_interval,
        target=target,
        native=f"{ls.native[0]}:{ls.native[1]}" if ls.native else "",
        industry=settings.industry,
        region=settings.region,
        prefixes=lambda: [p for p in own.homed_prefixes() if not p.upper().startswith("0.")],
    )
    # Resolutions: the front-ends' answer tallies, the counters /metrics and the dashboard read.
    return StatsHub(own, hub_config, node.tallies.resolutions)


def _node_key(role: str, homed: list[str], identity: ValueReference | None, name: str) -> str:
    """A node's name in the federation's tables: the prefix its reporting identity administers
    (``300:0.NA/88.168.6`` → ``88.168.6``), else its first prefix; ``0.NA`` for the top; a node
    without a prefix (recursive) is its identity's handle."""
    from idr.model.handle import NA_PREFIX

    if role == "top":
        return NA_PREFIX
    if identity is not None:
        head, _, rest = identity.handle.partition("/")
        if head.upper() == NA_PREFIX and rest and role != "recursive":
            return rest
        if role == "recursive":
            return identity.handle
    own = [p for p in homed if not p.upper().startswith("0.")]
    return own[0] if own else f"{role}:{name}"


@dataclass
class Listeners:
    """Where a running node actually listens (ports resolved when 0 was asked for)."""

    https: tuple[str, int] | None = None
    http: tuple[str, int] | None = None
    native: tuple[str, int] | None = None
    link: tuple[str, int] | None = None  # the site link (a server of a multi-server site)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


class Node:
    def __init__(self, config: NodeConfig, service: Core | None = None) -> None:
        self.config = config
        self.service = service or open_service(config)
        self.listeners = Listeners()
        self.replicator: Replicator | None = None
        # Gauge sources for /metrics (replication lag, recursion cache…), shared by listeners.
        self.metrics_sources: list[MetricsSource] = [collector_metrics]
        # Handle protocol: options, and worker processes on its UDP port (``idr serve --workers``).
        self.native_options: NativeOptions | None = None
        self.workers = 1
        self.runtime: NodeRuntime | None = None
        self.throttle: Throttle | None = None  # failed-login back-off of the HTTP front-ends
        self.walks: WalkGate | None = None  # federation-wide traces at once
        self.http_guards: HttpGuards | None = None  # what the HTTP listeners share (once started)
        # The server's key pair (server_key.pem): signs certified answers and session setups,
        # published in the site's server record.
        self.server_key: ServerKey | None = load_server_key(config.data_dir)
        # Writes the node's site into its own prefix handles at start (``_publish_site``).
        self.site_task: asyncio.Task[None] | None = None
        self.link: SiteLinkServer | None = None  # the site link's listener (multi-server site)
        self.worker_procs: Workers | None = None
        self.native_server: NativeServer | None = None  # the Handle protocol front-ends
        self.compactor: LogCompactor | None = None  # the transaction log's retention
        # The process's logs (idr.operations.logs; set by ``idr serve``) and the access records
        # of every front-end (None = off).
        self.log_setup: LogSetup | None = None
        self.access_log: AccessLog | None = None
        self.http_apps: list[web.Application] = []
        # The HTTPS listener's TLS context, whose certificate a reload replaces in place.
        self.tls_context: ssl.SSLContext | None = None
        # Called on reload (SIGHUP) with the new settings; each returns what it applied.
        self.reload_hooks: list[Callable[[NodeConfig], list[str]]] = [self._reload_templates]
        # Every answer of every front-end, counted where it is sent (/metrics, the dashboard).
        from idr.server.tally import Tallies

        self.tallies: Tallies = Tallies()
        self.stats_hub: StatsHub | None = None  # 数据上报 (idr.runtime.reporting), once started
        self.hold_reports = False  # start the hub held (StatsHub.held): released by whoever set it

    async def start(
        self, *, https: str | None = None, http: str | None = None, native: str | None = None
    ) -> None:
        """Open the front-ends; ``None`` means the address from the config, ``""`` means off."""
        from aiohttp import web

        from idr.console import add_console_routes
        from idr.server.applying import install as install_applications
        from idr.server.converged import add_converged_routes
        from idr.server.gs1 import add_gs1_routes
        from idr.server.http import fast_path, make_http_app
        from idr.server.metrics import add_metrics_routes
        from idr.server.snms import add_snms_routes
        from idr.server.stats import add_stats_routes
        from idr.server.tally import http_hit, http_middleware

        https = self.config.https if https is None else https
        http = self.config.http if http is None else http
        native = self.config.native if native is None else native
        max_body = self.config.limits.max_body_bytes
        multi = self.config.site.multi and isinstance(self.service, NodeService) and self.link is None
        if multi:
            self._attach_site_peers()
        if self.runtime is None and isinstance(self.service, NodeService):
            # First: every write from here on takes the writer thread (group commit), and the
            # store's log is followed for other writers' commits.
            from idr.runtime import NodeRuntime

            self.runtime = NodeRuntime(self.service, follow=self.config.limits.follow_interval)
            await self.runtime.start()
            self.listeners.closers.append(self._stop_runtime)
            self.metrics_sources.append(self.runtime.write_metrics)
        if multi:
            await self._start_site_link()
        if self.config.replication.listen and self.replicator is None:
            if not isinstance(self.service, NodeService):
                raise ConfigError("a recursive node holds nothing to replicate: remove [replication]")
            # Before any front-end opens: a mirror or fenced site must never take a write.
            from idr.replication import Replicator

            self.replicator = Replicator(self.service, self.config.replication, self.config.data_dir)
            await self.replicator.start()
            self.listeners.closers.append(self._stop_replicator)
            self.metrics_sources.append(self.replicator.replication_metrics)
        guards = self._http_guards() if https or http else None
        self.http_guards = guards
        if guards is not None:
            self.metrics_sources.append(guards.connections.metrics)
        if (
            self.compactor is None
            and self.runtime is not None
            and not getattr(self.service.store, "read_only", False)
        ):
            # The transaction log keeps what mirrors and the audit need, no more.
            from idr.operations.compaction import LogCompactor

            def mirrors_need() -> int | None:
                return self.replicator.mirrors_need() if self.replicator is not None else None

            self.compactor = LogCompactor(self.service.store, lambda: self.config.log, mirrors_need)
            await self.compactor.start()
            self.listeners.closers.append(self._stop_compactor)
            self.metrics_sources.append(self.compactor.metrics)
        from idr.server import hdl_http
        from idr.server.native import NativeOptions, native_handler, start_server, start_workers
        from idr.server.snapshot import snapshot_path

        opts = self.native_options or NativeOptions.from_config(self.config.native_limits)
        if opts.server_key is None:
            opts = replace(opts, server_key=self.server_key)
        # One Handle request handler (sessions, challenges, the costly-work guard) for the
        # native front-ends and Handle messages over HTTP(S) (``idr.server.hdl_http``).
        handler = native_handler(self.service, opts)

        async def close_handler() -> None:
            handler.guard.gate.close()

        self.listeners.closers.append(close_handler)
        for addr, secure in ((https, True), (http, False)):
            if not addr:
                continue
            assert guards is not None
            host, port = parse_address(addr)
            app = make_http_app(
                self.service,
                tls=secure,
                max_body=max_body,
                throttle=guards.throttle,
                gate=guards.gate,
                sessions=guards.sessions,
                walks=guards.walks,
            )
            # HTTP is advertised as a query interface, HTTPS as admin and query (own_site).
            app.middlewares.insert(0, hdl_http.middleware(handler, admin=secure))
            app.middlewares.insert(0, http_middleware(self.tallies["https" if secure else "http"]))
            add_metrics_routes(app, self.service, self.metrics_sources, self.tallies)
            add_stats_routes(app, self)
            add_gs1_routes(app, self.service)
            add_converged_routes(app, self.service)
            add_snms_routes(app, self.service, throttle=guards.throttle)
            install_applications(app, guards.applications)
            add_console_routes(app, self)
            self.http_apps.append(app)
            limits = guards.connections.limits
            if self.access_log is not None:
                from idr.server.accesslog import ACCESS_LOGGER, HttpAccessLogger

                runner = web.AppRunner(
                    app,
                    handle_signals=False,
                    keepalive_timeout=limits.keepalive_timeout,
                    access_log=logging.getLogger(ACCESS_LOGGER),
                    access_log_class=HttpAccessLogger.bind(self.access_log),
                )
            else:
                runner = web.AppRunner(
                    app, access_log=None, handle_signals=False, keepalive_timeout=limits.keepalive_timeout
                )
            await runner.setup()
            self.listeners.closers.append(runner.cleanup)
            assert runner.server is not None  # made by setup()
            tally = self.tallies["https" if secure else "http"]
            runner.server.request_handler = fast_path(app, runner.server.request_handler, http_hit(tally))
            ssl_ctx = self._tls_context() if secure else None
            # aiohttp's per-connection protocol, behind the node's connection guard
            # (TLS too: a connection counts against its address from accept, handshake included)
            server = await asyncio.get_running_loop().create_server(
                guards.connections.factory(runner.server, ssl_ctx), host, port, reuse_address=True
            )
            self.listeners.closers.append(_closer(server))
            bound = server.sockets[0].getsockname()[:2]
            if secure:
                self.listeners.https = (str(bound[0]), int(bound[1]))
            else:
                self.listeners.http = (str(bound[0]), int(bound[1]))
        if native:
            host, port = parse_address(native)
            if self.workers > 1:
                opts = replace(opts, reuse_port=True)
            if self.access_log is not None:
                opts = replace(opts, access_log=self.access_log)
            if self.config.native_limits.snapshot and self.runtime is not None:
                opts = replace(
                    opts, snapshot=snapshot_path(self.config.data_dir), snapshot_tag=self.config_tag()
                )
            srv = await start_server(self.service, host, port, opts, self.tallies, handler=handler)
            self.native_server = srv
            bound_native = srv.address
            self.listeners.native = bound_native
            self.listeners.closers.append(srv.close)
            if self.workers > 1:
                extra = await start_workers(
                    str(self.config.data_dir), self.workers - 1, bound_native, opts, self.tallies
                )
                self.worker_procs = extra
                self.listeners.closers.append(extra.close)
        if self.access_log is not None:
            self.access_log.start()
            self.listeners.closers.insert(0, self._stop_access_log)  # closed last: logs every answer
            self.metrics_sources.append(self.access_log.metrics)  # lines written, dropped, lost
        if self.service.site_info is None:
            self.service.site_info = self.own_site()
        self.attach_federation()
        self.listeners.closers.append(self._close_filing_link)
        await self._start_stats()
        await self._publish_site()

        if self.replicator is not None:
            ls = self.listeners
            named = (("https", ls.https), ("http", ls.http), ("native", ls.native))
            self.replicator.api = ", ".join(f"{n} {a[0]}:{a[1]}" for n, a in named if a)

    def _http_guards(self) -> HttpGuards:
        """What the node's HTTP listeners share (``[http]`` in idr.toml)."""
        from idr.server.applying import ApplicationGate
        from idr.server.http_connections import ConnectionGuard, ConnectionLimits
        from idr.server.limits import CostGate
        from idr.server.sessions import SessionTable
        from idr.server.throttle import Throttle, ThrottleLimits
        from idr.server.walks import WalkGate

        h = self.config.http_limits
        if self.throttle is None:
            self.throttle = Throttle(ThrottleLimits.from_config(h))
        if self.walks is None:
            self.walks = WalkGate(h.max_walks, h.walk_seconds)
        gate = CostGate(h.verify_slots, h.verify_queue)

        async def close_gate() -> None:
            gate.close()

        self.listeners.closers.append(close_gate)
        return HttpGuards(
            self.throttle,
            gate,
            SessionTable(idle=h.session_idle, capacity=h.sessions),
            ConnectionGuard(ConnectionLimits.from_config(h)),
            self.walks,
            ApplicationGate.from_config(h),
        )

    def _attach_site_peers(self) -> None:
        """A server of a multi-server site: the other servers attached to the core (reads of
        their records, relays) — before the runtime, whose readers those reads use."""
        from idr.site import SitePeers

        assert isinstance(self.service, NodeService)
        s = self.config.site
        if self.service.share is None:
            self.service.share = site_share(self.config, self._public_key())
        peers = SitePeers(
            s.servers, s.index, s.secret.encode("utf-8"), s.hash, ttl=s.peer_ttl, timeout=s.link_timeout
        )
        self.service.peers = peers

        async def detach() -> None:
            peers.close()

        self.listeners.closers.append(detach)

    async def _start_site_link(self) -> None:
        """The site link's listener: the other servers read from, relay to and re-share into
        this one (closed before the runtime stops)."""
        from idr.core.site import ServerSpec
        from idr.site import SiteLinkServer, site_digest

        assert isinstance(self.service, NodeService)
        s = self.config.site
        link = SiteLinkServer(self.service, s.secret.encode("utf-8"), s.index, site_digest(s.servers, s.hash))
        me = ServerSpec.parse(s.servers[s.index])
        self.listeners.link = await link.start(me.host, me.link)
        self.link = link

        async def stop_link() -> None:
            await link.close()
            self.link = None

        self.listeners.closers.append(stop_link)

    def _public_key(self) -> bytes:
        return self.server_key.public_bytes if self.server_key is not None else b""

    def own_site(self) -> SiteInfo:
        """This node as a one-server site (HS_SITE), from the addresses it listens on; a
        replication mirror's site is not primary (clients prefer primaries, RFC 3652 §3.3).
        A server of a multi-server site publishes the whole site (``[site]``)."""
        from idr.core.federation import loopback_site

        if isinstance(self.service, NodeService) and self.service.share is not None:
            return self.service.share.site

        ls = self.listeners
        host = next((a[0] for a in (ls.native, ls.https, ls.http) if a), "127.0.0.1")
        return loopback_site(
            self.config.name,
            native=ls.native[1] if ls.native else None,
            http=ls.http[1] if ls.http else None,
            https=ls.https[1] if ls.https else None,
            host=host,
            primary=not (self.config.replication.listen and self.config.replication.role == "mirror"),
            public_key=self.server_key.public_bytes if self.server_key is not None else b"",
        )

    async def _publish_site(self) -> None:
        """The node's site as the HS_SITE of its own prefix handles (``publish_site``), rewritten
        at every start from its listeners and key: done when ``start`` returns, except on a
        replicating primary, where the write waits for a mirror (``site_task``, in the
        background). Not on a mirror or standby: they take no writes (the primary's record
        reaches them)."""
        site = self.service.site_info
        service = self.service
        if site is None or not isinstance(service, NodeService) or not site.primary:
            return

        async def publish() -> None:
            try:
                changed = await service.publish_site(site)
            except HandleError as e:  # fenced, read-only, a standby: the primary keeps it
                log.info("own site not published in the prefix handles: %s", e.message)
                return
            if changed:
                log.info("own site published in %s", ", ".join(changed))

        self.site_task = asyncio.get_running_loop().create_task(publish())
        if self.replicator is None:
            await self.site_task
            return

        async def stop_publishing() -> None:
            if self.site_task is not None and not self.site_task.done():
                self.site_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.site_task

        self.listeners.closers.append(stop_publishing)

    def attach_federation(self) -> None:
        """The federation links of ``federation.toml`` (``federation_context``) on the core."""
        from idr.core.federation import FederatedService

        if isinstance(self.service, FederatedService):
            self.service.context = federation_context(self.config, self.service)

    async def _start_stats(self) -> None:
        if self.stats_hub is not None:
            return
        hub = stats_hub(self)
        if hub is None:
            return
        from idr.server.stats import stats_metrics

        hub.held = self.hold_reports
        await hub.start()
        self.stats_hub = hub
        self.metrics_sources.append(lambda: stats_metrics(self))
        self.listeners.closers.insert(self._stats_slot(), self._stop_stats)

    def _stats_slot(self) -> int:
        """Right after the runtime's and replicator's closers (closers run in reverse): the hub
        stops after every front-end, so its last cut holds every answer they sent — extra
        workers' last tallies too —, and before the runtime and replicator its write needs.
        Found by what is there, not a position remembered at start: closers inserted at the
        front later (the access log's) would shift it."""
        needs = (self._stop_runtime, self._stop_replicator)
        at = [i for i, closer in enumerate(self.listeners.closers) if closer in needs]
        return max(at) + 1 if at else 0

    async def _stop_stats(self) -> None:
        if self.stats_hub is not None:
            await self.stats_hub.stop()
            if self.stats_hub.config.target is not None:
                await self.stats_hub.config.target.link.close()
            self.stats_hub = None

    async def _close_filing_link(self) -> None:
        """The kept HTTPS connection to the top that filings go over (``ParentLink``)."""
        target = getattr(getattr(self.service, "context", None), "filing_target", None)
        if target is not None:
            await target.link.close()

    async def _stop_runtime(self) -> None:
        if self.runtime is not None:
            runtime = self.runtime
            await runtime.stop()
            self.runtime = None
            await self._save_answers(runtime)

    async def _save_answers(self, runtime: NodeRuntime) -> None:
        """The native answer cache to its snapshot (``idr.server.snapshot``), once the writer
        stopped (the front-ends are closed before the runtime): when its last listener calls,
        queued on the loop, have run, the follower's position is one every commit up to it
        reached the cache by."""
        srv = self.native_server
        if srv is None or srv.snapshot is None:
            return
        for _ in range(3):
            await asyncio.sleep(0)
        if runtime.follower is None:
            log.info("answer snapshot not written: the store's log is not followed")
            return
        srv.save_snapshot(self.service.store, runtime.follower.seq)  # the loop serves nothing now

    def _tls_context(self) -> ssl.SSLContext:
        from idr.server.tls import server_context

        if self.tls_context is None:
            cert, key, ca = tls_files(self.config)
            self.tls_context = server_context(
                self.config.data_dir,
                cert_file=cert,
                key_file=key,
                ca_file=ca,
                require_client_cert=self.config.tls.client_certs == "required",
                server_key=self.server_key,
            )
        return self.tls_context

    async def _stop_compactor(self) -> None:
        if self.compactor is not None:
            await self.compactor.stop()
            self.compactor = None

    async def _stop_access_log(self) -> None:
        if self.access_log is not None:
            self.access_log.stop()

    def _reload_templates(self, config: NodeConfig) -> list[str]:
        """Re-read ``<data>/templates`` (SIGHUP): a new template or version is published and
        checked on writes at once; a bad file raises TemplateFileError and nothing changes."""
        from idr.core.templates import TemplateRegistry

        registry = getattr(self.service, "templates", None)
        if not isinstance(registry, TemplateRegistry) or registry.directory is None:
            return []  # a recursive node holds none
        added = registry.reload()
        return [f"templates (new: {', '.join(added)})" if added else "templates"]

    async def reload(self) -> ReloadReport:
        """Re-read idr.toml and apply what can change while serving (SIGHUP); see
        idr.operations.reload for what can and what needs a restart."""
        from idr.operations.reload import reload_node

        return await reload_node(self)

    async def _stop_replicator(self) -> None:
        if self.replicator is not None:
            await self.replicator.stop()
            self.replicator = None

    def config_tag(self) -> str:
        """The node's configuration files, for the answer snapshot's fingerprint."""
        from idr.server.snapshot import config_tag

        return config_tag(self.config.path, self.config.data_dir / "federation.toml")

    async def stop(self) -> None:
        for close in reversed(self.listeners.closers):
            with contextlib.suppress(Exception):
                await close()
        self.listeners.closers.clear()

    def close(self) -> None:
        self.service.close()


def _closer(server: asyncio.Server) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        server.close()

    return close


@dataclass
class HttpGuards:
    """What a node's HTTP(S) listeners share: the failed-login back-off, the gate costly signature
    checks pass through, the ``Authorization: Handle`` sessions, the connection limits."""

    throttle: Throttle
    gate: CostGate
    sessions: SessionTable
    connections: ConnectionGuard
    walks: WalkGate
    applications: ApplicationGate  # anonymous prefix applications per source network


def tls_files(config: NodeConfig) -> tuple[Path | None, Path | None, Path | None]:
    """``[tls]`` cert, key and ca as paths (relative ones under the data directory)."""

    def path(text: str) -> Path | None:
        if not text:
            return None
        p = Path(text)
        return p if p.is_absolute() else config.data_dir / p

    return path(config.tls.cert), path(config.tls.key), path(config.tls.ca)
