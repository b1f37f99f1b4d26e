"""Node commands: ``init``, ``serve``, ``import``, ``demo``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from idr.cli.common import fail, run_async
from idr.codec.values import encode_admin
from idr.core.config import ROLES, ConfigError, NodeConfig
from idr.core.federation import FederationSettings
from idr.model.errors import HandleError
from idr.model.handle import prefix_handle
from idr.model.value import PERM_SECRET, AdminPermission, AdminRecord, HandleValue
from idr.node import AddressError, Node, open_service, parse_address
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


def init_node(
    data: Path,
    prefix: str,
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
) -> NodeConfig:
    if (data / "idr.toml").exists():
        raise ConfigError(f"{data} already holds a node (idr.toml exists)")
    if role not in ROLES:
        raise ConfigError(f"--role must be one of {', '.join(ROLES)}, not {role!r}")
    if role == "recursive" and not root:
        raise ConfigError("a recursive node needs --root HOST:PORT (the top service's native address)")
    if store not in ("sqlite", "postgres") or (store == "postgres") != bool(dsn):
        raise ConfigError("--store is sqlite (no --dsn) or postgres with --dsn")
    cfg = NodeConfig(
        data_dir=data,
        admins=[f"{index}:{prefix_handle(prefix)}"],
        role=role,
        https=https,
        http=http,
        native=native,
        store=store,
        dsn=dsn,
    )
    for addr in (https, http, native, *root):
        if addr:
            parse_address(addr)
    cfg.save()
    if root:
        FederationSettings(root=list(root)).save(data)
    service = open_service(cfg)
    try:
        service.bootstrap(prefix, admin_key_values(prefix, index, secret, key_file))
    finally:
        service.close()
    return cfg


def register(app: typer.Typer) -> None:
    @app.command()
    def init(
        data: DataOpt,
        prefix: Annotated[str, typer.Option(help="The prefix this node is home to, e.g. 88.100.")],
        admin_secret: Annotated[str | None, typer.Option(help="Secret key (HS_SECKEY) of the admin.")] = None,
        admin_key: Annotated[Path | None, typer.Option(help="Public key file (PEM) of the admin.")] = None,
        admin_index: Annotated[int, typer.Option(help="Index of the admin's key value.")] = 300,
        role: Annotated[str, typer.Option(help="standalone, top, secondary, enterprise, recursive")] = (
            "standalone"
        ),
        https: Annotated[str, typer.Option(help="HTTPS listen address.")] = "127.0.0.1:8443",
        http: Annotated[str, typer.Option(help="Plain HTTP listen address (read-only API).")] = "",
        native: Annotated[str, typer.Option(help="Handle protocol UDP+TCP listen address.")] = "",
        store: Annotated[str, typer.Option(help="Storage engine: sqlite or postgres.")] = "sqlite",
        dsn: Annotated[str, typer.Option(help="PostgreSQL connection string (--store postgres).")] = "",
        root: Annotated[
            list[str] | None, typer.Option(help="Top service HOST:PORT (native), primary first; repeatable.")
        ] = None,
    ) -> None:
        """Create a node home to PREFIX whose admin is 300:0.NA/PREFIX."""
        if (admin_secret is None) == (admin_key is None):
            fail("give exactly one of --admin-secret and --admin-key")
        try:
            cfg = init_node(
                data,
                prefix,
                secret=admin_secret,
                key_file=admin_key,
                index=admin_index,
                role=role,
                https=https,
                http=http,
                native=native,
                store=store,
                dsn=dsn,
                root=root or (),
            )
        except (ConfigError, HandleError, AddressError, OSError, ValueError, StoreError) as e:
            fail(str(e))
        console.print(f"[green]initialised[/] node home to [bold]{prefix}[/] in {cfg.data_dir}")
        console.print(f"admin identity: [bold]{cfg.admins[0]}[/]   settings: {cfg.path}")

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
            bool, typer.Option(help="Fill the native answer cache from the store at start.")
        ] = False,
    ) -> None:
        """Serve the node in DATA until interrupted (SIGINT or SIGTERM).

        With --workers N, N-1 extra processes answer native UDP resolutions on the same port,
        each with its own caches kept coherent by following the store's log; writes, TCP and
        HTTP stay with this process (see idr.server.native)."""
        from idr.server.native import NativeOptions

        cfg = _load(data)
        node = Node(cfg)
        node.workers = workers
        node.native_options = NativeOptions(warm=warm)
        try:
            run_async(_serve(node, https=https, http=http, native=native))
        finally:
            node.close()

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
        service = open_service(cfg)
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
                report = import_file(
                    service,
                    file,
                    batch=batch,
                    restart=restart,
                    on_progress=lambda done: progress.update(task, completed=done),
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
        console.print(f"[green]{report.loaded}[/] handles loaded, [red]{rejected}[/] lines rejected")
        if report.loaded == 0 and report.errors:
            raise typer.Exit(1)

    @app.command()
    def demo(
        data: Annotated[Path | None, typer.Option(help="Keep the federation's data here.")] = None,
        base_port: Annotated[int, typer.Option(help="First port of the block (0 = any free ports).")] = 26400,
        seconds: Annotated[float, typer.Option(help="Stop after this long (0 = until Ctrl-C).")] = 0,
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


async def _serve(node: Node, **addresses: str | None) -> None:
    import signal

    try:
        await node.start(**addresses)
    except (OSError, AddressError) as e:
        await node.stop()  # whatever did start (worker processes included)
        fail(f"cannot listen: {e}")
    _print_listeners(node)
    stop = asyncio.Event()
    # SIGTERM ends as Ctrl-C does: listeners closed and worker processes stopped, none orphaned.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
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
