"""Replication commands: ``idr replication setup``, ``idr promote``, ``idr status``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from idr.cli.common import fail
from idr.core.config import ConfigError, NodeConfig

console = Console(stderr=True)
out = Console()

DataOpt = Annotated[Path | None, typer.Option("--data", "-d", help="The node's data directory.")]
SiteOpt = Annotated[
    str | None,
    typer.Option("--site", metavar="HOST:PORT", help="A running site's replication address."),
]
NodeAlias = Annotated[str | None, typer.Option("--node", hidden=True, help="Old name of --site.")]
SecretOpt = Annotated[str | None, typer.Option("--secret", help="Replication secret (with --site).")]


def _config(data: Path) -> NodeConfig:
    try:
        return NodeConfig.load(data)
    except ConfigError as e:
        fail(str(e))


def _target(data: Path | None, node: str | None, secret: str | None) -> tuple[tuple[str, int], str]:
    """Where a running site listens and its secret: from --site/--secret or from DATA's idr.toml."""
    from idr.replication.manager import parse_address

    if node is not None:
        if not secret:
            fail("--site needs --secret")
        listen = node
    else:
        if data is None:
            fail("give --data DIR or --site HOST:PORT --secret S")
        rc = _config(data).replication
        if not rc.listen:
            fail(f"replication is not set up in {data} (idr replication setup)")
        listen, secret = rc.listen, rc.secret
    try:
        return parse_address(listen), secret
    except ValueError as e:
        fail(str(e))


def _ask_site(
    data: Path | None, node: str | None, secret: str | None, kind: str
) -> tuple[tuple[str, int], dict[str, Any] | None]:
    """The site's address and its answer; None only when it is down and DATA was given
    (the caller then works on DATA offline)."""
    address, key = _target(data, node, secret)
    reply = asyncio.run(_ask(address, key, kind))
    if reply is None and data is None:
        fail(f"nothing listens on {address[0]}:{address[1]}")
    return address, reply


async def _ask(address: tuple[str, int], secret: str, kind: str) -> dict[str, Any] | None:
    """The running site's answer, or None when nothing listens there (the site is down)."""
    from idr.replication import admin, wire

    try:
        if kind == "promote":
            return await admin.promote_node(address, secret)
        return await admin.node_status(address, secret)
    except ConnectionRefusedError:
        return None
    except (OSError, TimeoutError, wire.LinkError) as e:
        fail(f"{address[0]}:{address[1]}: {e}")


def _offline(data: Path) -> tuple[int, Any]:
    from idr.node import open_store
    from idr.replication import ReplState

    cfg = _config(data)
    store = open_store(cfg)
    try:
        last = store.last_seq()
    finally:
        store.close()
    return last, ReplState.load(data)


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Primary/mirror replication of a service's sites.", no_args_is_help=True)
    app.add_typer(group, name="replication")

    @group.command("setup")
    def setup(
        data: Annotated[Path, typer.Option("--data", "-d", help="The node's data directory.")],
        listen: Annotated[str, typer.Option(help="This site's replication HOST:PORT.")],
        peer: Annotated[list[str], typer.Option(help="Another site's replication HOST:PORT (repeat).")],
        secret: Annotated[
            str | None,
            typer.Option(
                help="Shared by all sites of the service; omit it on the first site to generate one."
            ),
        ] = None,
        role: Annotated[str, typer.Option(help="primary or mirror (first start only).")] = "primary",
        mode: Annotated[str, typer.Option(help="sync or async.")] = "sync",
        ack_timeout: Annotated[float, typer.Option(help="sync: seconds to wait for a mirror.")] = 5.0,
        auto_promote_after: Annotated[float, typer.Option(help="Mirror: self-promote after (0=off).")] = 0.0,
    ) -> None:
        """Write the replication section of DATA/idr.toml.

        The secret is a generated 256-bit key (a captured handshake must not be testable
        against a passphrase offline): without --secret a new one is made and printed, to be
        given to the other sites' setup; a --secret that is not such a key is refused."""
        from idr.core.config import ReplicationConfig
        from idr.core.secret_policy import generate_link_secret, link_secret_problem
        from idr.replication.manager import parse_address

        cfg = _config(data)
        try:
            for a in (listen, *peer):
                parse_address(a)
        except ValueError as e:
            fail(str(e))
        if role not in ("primary", "mirror") or mode not in ("sync", "async"):
            fail("--role is primary or mirror; --mode is sync or async")
        generated = secret is None
        if secret is None:
            secret = generate_link_secret()
        problem = link_secret_problem(secret)
        if problem is not None:
            fail(f"--secret: {problem}")
        cfg.replication = ReplicationConfig(
            listen=listen,
            peers=list(peer),
            secret=secret,
            mode=mode,
            role=role,
            ack_timeout=ack_timeout,
            auto_promote_after=auto_promote_after,
        )
        cfg.save()
        console.print(f"[green]replication[/] {role} ({mode}) on {listen}, peers {', '.join(peer)}")
        if generated:
            console.print(
                f"new replication secret (kept in {cfg.path}, mode 0600); give it to the other sites:"
            )
            out.print(f"  idr replication setup … --secret {secret}", highlight=False, soft_wrap=True)

    @app.command()
    def promote(
        data: DataOpt = None, site: SiteOpt = None, secret: SecretOpt = None, node: NodeAlias = None
    ) -> None:
        """Make a mirror the primary with a new epoch (a running site, or DATA while it is down)."""
        _, reply = _ask_site(data, site or node, secret, "promote")
        if reply is None:
            assert data is not None  # _ask_site fails when the site is down and DATA is not given
            from idr.replication.admin import promote_offline

            last, _ = _offline(data)
            state = promote_offline(data, last, _config(data).replication.role)
            out.print(f"promoted (offline): primary, epoch {state.epoch}, from seq {last + 1}")
            return
        out.print(f"promoted: {reply['role']}, epoch {reply['epoch']}, last seq {reply['last_seq']}")

    @app.command()
    def status(
        data: DataOpt = None, site: SiteOpt = None, secret: SecretOpt = None, node: NodeAlias = None
    ) -> None:
        """Role, epoch, log position and replication lag (entries, seconds) of a site."""
        address, reply = _ask_site(data, site or node, secret, "status")
        table = Table(show_header=False)
        if reply is None:
            assert data is not None  # _ask_site fails when the site is down and DATA is not given
            last, state = _offline(data)
            table.add_row("running", "no")
            table.add_row("role", state.role if state else "(never started)")
            table.add_row("epoch", str(state.epoch) if state else "-")
            table.add_row("last seq", str(last))
        else:
            table.add_row("running", f"yes ({address[0]}:{address[1]})")
            for name in ("role", "epoch", "writable", "mode", "last_seq", "primary_api", "mirrors"):
                table.add_row(name.replace("_", " "), str(reply.get(name)))
            table.add_row("lag", f"{reply['lag_entries']} entries, {reply['lag_seconds']:.2f} s")
        out.print(table)
