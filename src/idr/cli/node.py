"""Node commands: ``init``, ``serve``, ``import``, ``demo``."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from idr.cli.common import fail, run_async
from idr.codec.values import encode_admin
from idr.core.config import ROLES, ConfigError, NodeConfig, SiteConfig
from idr.core.federation import FederationSettings
from idr.core.interface import Core
from idr.core.secret_policy import admin_secret_problem, generate_link_secret
from idr.core.service import NodeService
from idr.core.site import ServerSpec
from idr.model.errors import HandleError
from idr.model.handle import Handle, prefix_handle
from idr.model.value import PERM_SECRET, AdminPermission, AdminRecord, HandleValue
from idr.node import AddressError, Node, open_service, parse_address
from idr.server.server_key import SERVER_KEY_NAME, create_server_key
from idr.store.base import StoreError

console = Console(stderr=True)

DataOpt = Annotated[Path, typer.Option("--data", "-d", help="The node's data directory.")]


def admin_key_values(prefix: str, index: int, secret: str | None, key_file: Path | None) -> list[HandleValue]:
    """The prefix handle's HS_ADMIN and the admin's key value at ``index``."""
    admin = AdminRecord(prefix_handle(prefix), index, AdminPermission.ALL)
    values = [HandleValue(100, "HS_ADMIN", encode_admin(admin))]
    if secret is not None:
        values.append(HandleValue(index, "HS_SECKEY", secret.encode("utf-8"), permissions=PERM_SECRET))
    elif key_file is not None:
        from idr.codec.keys import encode_public_key
        from idr.resolver.keys import load_public_key

        values.append(HandleValue(index, "HS_PUBKEY", encode_public_key(load_public_key(key_file))))
    return values


DEMO_MAX_BASE_PORT = 65535 - 63  # the demo's block: 7 nodes, 10 ports apart, up to base + 63
TOP_PREFIX = "0.NA"  # the top service is home to 0.NA: every prefix handle 0.NA/<P> is its


def init_node(
    data: Path,
    prefix: str = "",
    *,
    secret: str | None = None,
    key_file: Path | None = None,
    index: int = 300,
    role: str = "standalone",
    https: str = "127.0.0.1:8443",
    http: str = "",
    native: str = "",
    store: str = "sqlite",
    dsn: str = "",
    root: Sequence[str] = (),
    server_key_type: str = "rsa",
    server_key: Path | None = None,
    site: SiteConfig | None = None,
    name: str = "",
) -> NodeConfig:
    """Create a node in ``data``: its settings, and (except a recursive node, which holds
    nothing) its store with ``prefix`` homed and the admin's key. Everything is checked
    before anything is written, and a failure removes what this call created, so the
    corrected command can simply be run again.

    ``site``: this server's part in a site of several servers (``[site]``); it then listens
    where its entry in ``site.servers`` says, homes ``prefix`` and holds the prefix handle
    only if the site's hash gives it to this server."""
    if (data / "idr.toml").exists():
        raise ConfigError(f"{data} already holds a node (idr.toml exists)")
    if role not in ROLES:
        raise ConfigError(f"--role must be one of {', '.join(ROLES)}, not {role!r}")
    if role == "top":
        if prefix and prefix.upper() != TOP_PREFIX:
            raise ConfigError(f"the top node is home to {TOP_PREFIX} (give no --prefix, or --prefix 0.NA)")
        prefix = TOP_PREFIX
    if role == "recursive":
        if not root:
            raise ConfigError("a recursive node needs --root HOST:PORT (the top service's native address)")
        if prefix or secret is not None or key_file is not None:
            raise ConfigError(
                "a recursive node holds no prefix: give no --prefix, --admin-secret, --admin-key"
            )
    else:
        if not prefix:
            raise ConfigError(f"a {role} node needs --prefix (the prefix it is home to, e.g. 88.100)")
        Handle.parse(prefix_handle(prefix))
        if (secret is None) == (key_file is None):
            raise ConfigError("give exactly one of --admin-secret and --admin-key")
        problem = admin_secret_problem(secret) if secret is not None else None
        if problem is not None:
            raise ConfigError(f"--admin-secret: {problem}")
    if site is not None and site.multi:
        if role == "recursive":
            raise ConfigError("a recursive node holds nothing to spread over a site of several servers")
        site.check("--site-server")
        me = ServerSpec.parse(site.servers[site.index])
        host = f"[{me.host}]" if ":" in me.host else me.host
        native = f"{host}:{me.native}"
        http = f"{host}:{me.http}" if me.http else ""
        https = f"{host}:{me.https}" if me.https else ""
    if store not in ("sqlite", "postgres") or (store == "postgres") != bool(dsn):
        raise ConfigError("--store is sqlite (no --dsn) or postgres with --dsn")
    named = [("--https", https), ("--http", http), ("--native", native), *(("--root", a) for a in root)]
    for option, addr in named:
        if addr:
            try:
                parse_address(addr)
            except AddressError as e:
                raise ConfigError(f"{option}: {e}") from e
    admin_values = admin_key_values(prefix, index, secret, key_file) if role != "recursive" else []
    cfg = NodeConfig(
        data_dir=data,
        admins=[f"{index}:{prefix_handle(prefix)}"] if role != "recursive" else [],
        role=role,
        https=https,
        http=http,
        native=native,
        store=store,
        dsn=dsn,
    )
    if site is not None and site.multi:
        cfg.site = site
    if name:
        cfg.name = name
    with _undo_on_failure(data):
        create_server_key(data, server_key_type, server_key)  # checked (type, file) before the rest
        cfg.save()
        if root:
            FederationSettings(root=list(root)).save(data)
        service = open_service(cfg)
        try:
            if isinstance(service, NodeService):  # a recursive node holds nothing
                service.bootstrap(prefix, admin_values)
        finally:
            service.close()
    return cfg


@contextlib.contextmanager
def _undo_on_failure(data: Path) -> Iterator[None]:
    """Remove what the block created in ``data`` (the directory itself if it was new) when it fails."""
    existed = data.exists()
    before = {p.name for p in data.iterdir()} if existed else set()
    try:
        yield
    except BaseException:
        if not existed:
            shutil.rmtree(data, ignore_errors=True)
        elif data.is_dir():
            for p in data.iterdir():
                if p.name not in before:
                    if p.is_dir():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink(missing_ok=True)
        raise


def register(app: typer.Typer) -> None:
    @app.command()
    def init(
        data: DataOpt,
        prefix: Annotated[
            str,
            typer.Option(help="The prefix this node is home to, e.g. 88.100 (a top node: 0.NA, implied)."),
        ] = "",
        admin_secret: Annotated[str | None, typer.Option(help="Secret key (HS_SECKEY) of the admin.")] = None,
        admin_key: Annotated[
            Path | None, typer.Option(metavar="FILE", help="Public key file (PEM) of the admin.")
        ] = None,
        admin_index: Annotated[
            int, typer.Option(min=1, max=2**31 - 1, help="Index of the admin's key value.")
        ] = 300,
        role: Annotated[str, typer.Option(help="standalone, top, secondary, enterprise, recursive")] = (
            "standalone"
        ),
        https: Annotated[
            str | None,
            typer.Option(metavar="HOST:PORT", help='HTTPS listen address ("" = off; default 127.0.0.1:8443)'),
        ] = None,
        http: Annotated[
            str, typer.Option(metavar="HOST:PORT", help="Plain HTTP listen address (read-only API).")
        ] = "",
        native: Annotated[
            str, typer.Option(metavar="HOST:PORT", help="Handle protocol UDP+TCP listen address.")
        ] = "",
        store: Annotated[str, typer.Option(help="Storage engine: sqlite or postgres.")] = "sqlite",
        dsn: Annotated[str, typer.Option(help="PostgreSQL connection string (--store postgres).")] = "",
        root: Annotated[
            list[str] | None,
            typer.Option(
                metavar="HOST:PORT", help="Top service's Handle protocol address, primary first; repeatable."
            ),
        ] = None,
        server_key_type: Annotated[
            str, typer.Option(help="The server's own key pair: rsa (as Handle.Net), dsa or sm2.")
        ] = "rsa",
        server_key: Annotated[
            Path | None, typer.Option(help="Use this PEM private key as the server's key instead.")
        ] = None,
        site_servers: Annotated[
            int, typer.Option(min=1, max=1024, help="Servers in this server's site (1: a site of its own).")
        ] = 1,
        site_index: Annotated[int, typer.Option(min=0, help="This server in its site (0-based).")] = 0,
        site_server: Annotated[
            list[str] | None,
            typer.Option(
                metavar="HOST:PORT,https=P,http=P,link=P",
                help="Each server of the site, in HS_SITE order (repeat --site-servers times).",
            ),
        ] = None,
        site_secret: Annotated[
            str | None, typer.Option(help="The site link's key (the one the site's first server printed).")
        ] = None,
        site_hash: Annotated[str, typer.Option(help="What the site's hash reads: whole, prefix, suffix.")] = (
            "whole"
        ),
        name: Annotated[
            str, typer.Option(help="What the node is called (its site's desc, the console).")
        ] = "",
    ) -> None:
        """Create a node home to PREFIX whose admin is 300:0.NA/PREFIX.

        A top node is home to 0.NA; a recursive node holds nothing (no prefix, no admin), only
        --root, the top service's address.

        Every node gets its server key pair (DATA/server_key.pem): it signs certified answers
        and session setups and is published in the site's server record.

        A server of a site of several servers (--site-servers N, --site-index I, --site-server
        ×N): it listens where its --site-server entry says and holds the handles the site's
        hash gives it. Every server of the site shares the server key pair (give the first
        server's server_key.pem to the others: --server-key) and the link key (--site-secret;
        generated by the first when not given)."""
        specs = list(site_server or ())
        site: SiteConfig | None = None
        generated = False
        if site_servers > 1 or specs:
            if len(specs) != site_servers:
                fail(f"--site-servers {site_servers} needs as many --site-server entries, not {len(specs)}")
            if site_index >= site_servers:
                fail(f"--site-index {site_index} is not one of 0…{site_servers - 1}")
            generated = site_secret is None
            site = SiteConfig(
                servers=specs,
                index=site_index,
                hash=site_hash,
                secret=site_secret if site_secret is not None else generate_link_secret(),
            )
        try:
            cfg = init_node(
                data,
                prefix,
                secret=admin_secret,
                key_file=admin_key,
                index=admin_index,
                role=role,
                https="127.0.0.1:8443" if https is None else https,
                http=http,
                native=native,
                store=store,
                dsn=dsn,
                root=root or (),
                server_key_type=server_key_type,
                server_key=server_key,
                site=site,
                name=name,
            )
        except (ConfigError, HandleError, AddressError, OSError, ValueError, StoreError) as e:
            fail(str(e))
        if cfg.role == "recursive":
            console.print(
                f"[green]initialised[/] recursive node in {cfg.data_dir} (root {', '.join(root or ())})"
            )
        else:
            home = prefix or "0.NA"
            console.print(f"[green]initialised[/] {cfg.role} node home to [bold]{home}[/] in {cfg.data_dir}")
            console.print(f"admin identity: [bold]{cfg.admins[0]}[/]")
        console.print(f"settings: {cfg.path}")
        if site is not None:
            console.print(f"server {site.index} of a site of {site_servers} (hash: {site.hash})")
            if generated:
                console.print(
                    "give the other servers of the site this server's key pair and the link key:\n"
                    f"  --server-key {cfg.data_dir / SERVER_KEY_NAME} --site-secret {site.secret}"
                )

    @app.command()
    def serve(
        data: DataOpt,
        https: Annotated[str | None, typer.Option(help='HTTPS address ("" = off).')] = None,
        http: Annotated[str | None, typer.Option(help='HTTP address ("" = off).')] = None,
        native: Annotated[str | None, typer.Option(help="Handle protocol UDP+TCP address.")] = None,
        workers: Annotated[
            int, typer.Option(min=1, max=64, help="Processes answering native UDP (SO_REUSEPORT).")
        ] = 1,
        warm: Annotated[
            bool | None,
            typer.Option(
                help="Fill the native answer cache from the store at start, in a helper process "
                "([native] warm, default off)."
            ),
        ] = None,
    ) -> None:
        """Serve the node in DATA until interrupted (SIGINT or SIGTERM).

        With --workers N, N-1 extra processes answer native UDP resolutions on the same port,
        each with its own caches kept coherent by following the store's log; writes, TCP and
        HTTP stay with this process (see idr.server.native)."""
        from idr.operations.logs import LogSetup
        from idr.server.gcpace import pace_for_server
        from idr.server.native import NativeOptions

        cfg = _load(data)
        if not (cfg.data_dir / SERVER_KEY_NAME).exists():  # a node made before nodes had keys
            path = create_server_key(cfg.data_dir)
            console.print(f"made the server's key pair: {path}")
        logs = LogSetup(cfg.data_dir)
        try:
            logs.apply(cfg.logging)
        except (ConfigError, OSError) as e:
            fail(f"logging: {e}")
        try:
            node = Node(cfg, _open(cfg))
            node.log_setup, node.access_log = logs, logs.access
            node.workers = workers
            # this process serves: the collector stays off the answer caches (native._GcPause)
            warm_up = cfg.native_limits.warm if warm is None else warm
            node.native_options = NativeOptions.from_config(cfg.native_limits, warm=warm_up, freeze_gc=True)
            pace_for_server()  # young objects die before the collector walks them (gcpace)
            try:
                run_async(_serve(node, https=https, http=http, native=native))
            finally:
                node.close()
        finally:
            logs.close()

    @app.command("import")
    def import_(
        data: DataOpt,
        file: Annotated[Path, typer.Argument(help="JSON lines: {handle, values: [REST JSON values]}")],
        batch: Annotated[int, typer.Option(help="Handles per transaction.")] = 1000,
        restart: Annotated[bool, typer.Option(help="Ignore a previous run's checkpoint.")] = False,
    ) -> None:
        """Bulk-load handles; bad lines are reported (and in FILE.errors.jsonl) and skipped.

        Resumable: re-running after an interruption skips the lines already committed."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from idr.core.importer import import_file

        cfg = _load(data)
        if not file.is_file():
            fail(f"{file} is not a file")
        size = file.stat().st_size
        service = _open(cfg)
        if not isinstance(service, NodeService):
            service.close()
            fail("a recursive node holds no identifiers: import into the node home to their prefix")
        try:
            with Progress(
                TextColumn("importing"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            ) as progress:
                task = progress.add_task("import", total=size)
                report = asyncio.run(
                    import_file(
                        service,
                        file,
                        batch=batch,
                        restart=restart,
                        on_progress=lambda done: progress.update(task, completed=done),
                    )
                )
        except (StoreError, HandleError) as e:
            fail(f"import stopped: {e}. Committed batches are kept: run the same command to resume.")
        finally:
            service.close()
        for line_no, message in report.errors[:50]:
            console.print(f"[red]line {line_no}[/]: {message}")
        if len(report.errors) > 50:
            console.print(f"… and {len(report.errors) - 50} more bad lines")
        rejected = len(report.errors)
        if report.resumed_after:
            console.print(f"resumed after line {report.resumed_after} (committed by an earlier run)")
        if report.errors_path and report.errors_path.exists():
            console.print(f"rejected lines: {report.errors_path}")
        if report.elsewhere:
            console.print(f"{report.elsewhere} handles left to the other servers of this site (the hash)")
        console.print(f"[green]{report.loaded}[/] handles loaded, [red]{rejected}[/] lines rejected")
        if report.loaded == 0 and report.errors:
            raise typer.Exit(1)

    @app.command()
    def demo(
        data: Annotated[
            Path | None, typer.Option(metavar="DIR", help="Keep the federation's data here.")
        ] = None,
        base_port: Annotated[
            int,
            typer.Option(min=0, max=DEMO_MAX_BASE_PORT, help="First port of the block (0 = any free ports)."),
        ] = 26400,
        seconds: Annotated[float, typer.Option(min=0, help="Stop after this long (0 = until Ctrl-C).")] = 0,
    ) -> None:
        """Start the twin-city federation on 127.0.0.1 — top node (Chongqing + Chengdu mirror), two
        secondary nodes, two enterprise nodes, a recursive node — with a supply chain, and print
        what to try."""
        from idr.cli.federation import run_demo

        run_demo(data, base_port, seconds)


def _load(data: Path) -> NodeConfig:
    try:
        return NodeConfig.load(data)
    except ConfigError as e:
        fail(str(e))


def _open(cfg: NodeConfig) -> Core:
    """The node's core on its store, or a clear error (a corrupt or unreachable store…)."""
    try:
        return open_service(cfg)
    except (StoreError, ConfigError, HandleError) as e:
        fail(str(e))


async def _serve(node: Node, **addresses: str | None) -> None:
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # SIGTERM ends as Ctrl-C does: listeners closed and worker processes stopped, none orphaned.
    # Handled from before the first listener opens: a client that sees the node answer may stop
    # it at once (a SIGTERM during the start is acted on when the start is over).
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await node.start(**addresses)
    except (OSError, AddressError) as e:
        await node.stop()  # whatever did start (worker processes included)
        fail(f"cannot listen: {e}")
    except ConfigError as e:
        await node.stop()
        fail(str(e))
    _print_listeners(node)
    # SIGHUP re-reads idr.toml (idr.operations.reload: what reloads, what needs a restart).
    reloads: set[asyncio.Task[object]] = set()

    def reload() -> None:
        task: asyncio.Task[object] = loop.create_task(node.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        await stop.wait()
    finally:
        await node.stop()


def _print_listeners(node: Node) -> None:
    table = Table(title=f"idr node — {', '.join(node.service.homed_prefixes())}", show_header=False)
    ls = node.listeners
    if ls.https:
        table.add_row("HTTPS API", f"https://{ls.https[0]}:{ls.https[1]}/api/handles/…")
    if ls.http:
        table.add_row("HTTP (read-only)", f"http://{ls.http[0]}:{ls.http[1]}/api/handles/…")
    if ls.native:
        extra = f" ({node.workers} UDP workers)" if node.workers > 1 else ""
        table.add_row("Handle protocol", f"udp+tcp {ls.native[0]}:{ls.native[1]}{extra}")
    console.print(table)
