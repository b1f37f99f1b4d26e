"""Assemble a node from its data directory: store, core, and the network front-ends."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from idr.core.config import ConfigError, NodeConfig
from idr.core.service import NodeService
from idr.store.base import Store

if TYPE_CHECKING:
    from idr.model.site import SiteInfo
    from idr.replication import Replicator
    from idr.server.metrics import MetricsSource
    from idr.server.native import NativeOptions

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

        return SqliteStore(config.db_path)
    if config.store == "postgres":
        from idr.store.postgres import PostgresStore

        return PostgresStore(config.dsn)
    raise ValueError(f"unknown store engine {config.store!r}")


def open_service(config: NodeConfig) -> NodeService:
    """The core for the node's role: authoritative roles refer for what they delegate; a
    recursive node resolves through the top service named in ``federation.toml``."""
    from idr.core.federation import FederationSettings, loopback_site, make_service

    store = open_store(config)
    kwargs: dict[str, Any] = {"admins": config.admins, "cache_entries": config.limits.cache_entries}
    try:
        if config.role == "recursive":
            from idr.resolver.recursive import RecursiveResolver, RecursiveService
            from idr.resolver.transport import NativeTransport

            roots = FederationSettings.load(config.data_dir).root
            if not roots:
                raise ConfigError(
                    f'a recursive node needs the top service\'s address: root = ["HOST:PORT"] '
                    f"under [federation] in {config.data_dir / 'federation.toml'} (idr init --root)"
                )
            sites = []
            for i, address in enumerate(roots):
                host, port = parse_address(address)
                sites.append(loopback_site(f"root {address}", native=port, host=host, primary=i == 0))
            return RecursiveService(store, RecursiveResolver(sites, NativeTransport()), **kwargs)
        if config.role in ("top", "secondary", "enterprise"):
            return make_service(config.role, store, **kwargs)
        return NodeService(store, **kwargs)
    except BaseException:
        store.close()
        raise


@dataclass
class Listeners:
    """Where a running node actually listens (ports resolved when 0 was asked for)."""

    https: tuple[str, int] | None = None
    http: tuple[str, int] | None = None
    native: tuple[str, int] | None = None
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


class Node:
    def __init__(self, config: NodeConfig, service: NodeService | None = None) -> None:
        self.config = config
        self.service = service or open_service(config)
        self.listeners = Listeners()
        self.replicator: Replicator | None = None
        # Gauge sources for /metrics (replication lag, recursion cache…), shared by listeners.
        self.metrics_sources: list[MetricsSource] = []
        # Handle protocol: options, and worker processes on its UDP port (``idr serve --workers``).
        self.native_options: NativeOptions | None = None
        self.workers = 1

    async def start(
        self, *, https: str | None = None, http: str | None = None, native: str | None = None
    ) -> None:
        """Open the front-ends; ``None`` means the address from the config, ``""`` means off."""
        from aiohttp import web

        from idr.console import add_console_routes
        from idr.server.converged import add_converged_routes
        from idr.server.gs1 import add_gs1_routes
        from idr.server.http import make_http_app
        from idr.server.metrics import add_metrics_routes
        from idr.server.snms import add_snms_routes
        from idr.server.tls import server_context

        https = self.config.https if https is None else https
        http = self.config.http if http is None else http
        native = self.config.native if native is None else native
        max_body = self.config.limits.max_body_bytes
        if self.config.replication.listen and self.replicator is None:
            # Before any front-end opens: a mirror or fenced site must never take a write.
            from idr.replication import Replicator

            self.replicator = Replicator(self.service, self.config.replication, self.config.data_dir)
            await self.replicator.start()
            self.listeners.closers.append(self._stop_replicator)
            self.metrics_sources.append(self.replicator.replication_metrics)
        for addr, secure in ((https, True), (http, False)):
            if not addr:
                continue
            host, port = parse_address(addr)
            app = make_http_app(self.service, tls=secure, max_body=max_body)
            add_metrics_routes(app, self.service, self.metrics_sources)
            add_gs1_routes(app, self.service)
            add_converged_routes(app, self.service)
            add_snms_routes(app, self.service)
            add_console_routes(app, self)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            ssl_ctx = server_context(self.config.data_dir) if secure else None
            site = web.TCPSite(runner, host, port, ssl_context=ssl_ctx, reuse_address=True)
            await site.start()
            bound = _bound(site)
            if secure:
                self.listeners.https = bound
            else:
                self.listeners.http = bound
            self.listeners.closers.append(runner.cleanup)
        if native:
            from idr.server.native import NativeOptions, start_native, start_workers

            host, port = parse_address(native)
            opts = self.native_options or NativeOptions.from_config(self.config.native_limits)
            if self.workers > 1:
                opts = replace(opts, reuse_port=True)
            bound_native, close = await start_native(self.service, host, port, opts)
            self.listeners.native = bound_native
            self.listeners.closers.append(close)
            if self.workers > 1:
                extra = await start_workers(str(self.config.data_dir), self.workers - 1, bound_native, opts)
                self.listeners.closers.append(extra.close)
        if self.service.site_info is None:
            self.service.site_info = self.own_site()

        if self.replicator is not None:
            ls = self.listeners
            named = (("https", ls.https), ("http", ls.http), ("native", ls.native))
            self.replicator.api = ", ".join(f"{n} {a[0]}:{a[1]}" for n, a in named if a)

    def own_site(self) -> SiteInfo:
        """This node as a one-server site (HS_SITE), from the addresses it listens on."""
        from idr.core.federation import loopback_site

        ls = self.listeners
        host = next((a[0] for a in (ls.native, ls.https, ls.http) if a), "127.0.0.1")
        return loopback_site(
            self.config.name,
            native=ls.native[1] if ls.native else None,
            http=ls.http[1] if ls.http else None,
            https=ls.https[1] if ls.https else None,
            host=host,
        )

    async def _stop_replicator(self) -> None:
        if self.replicator is not None:
            await self.replicator.stop()
            self.replicator = None

    async def stop(self) -> None:
        for close in reversed(self.listeners.closers):
            with contextlib.suppress(Exception):
                await close()
        self.listeners.closers.clear()

    def close(self) -> None:
        self.service.close()


def _bound(site: object) -> tuple[str, int]:
    server = getattr(site, "_server", None)
    sockets = getattr(server, "sockets", None) or []
    host, port = sockets[0].getsockname()[:2]
    return str(host), int(port)
