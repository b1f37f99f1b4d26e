"""``idr site``: a site of several servers (docs/sites.md).

``reshare`` finishes adding servers to a site: once every server runs with the new
``[site] servers`` list, each old server moves the records the hash now gives another server
(``idr.site.link.reshare``), asked over the site link with the site's key.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from idr.cli.common import fail
from idr.cli.node import DataOpt
from idr.core.config import ConfigError, NodeConfig
from idr.model.errors import HandleError

out = Console()


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="A site of several servers (the Handle protocol's hash).", no_args_is_help=True)
    app.add_typer(group, name="site")

    @group.command("reshare")
    def reshare(
        data: DataOpt,
        timeout: Annotated[float, typer.Option(help="Seconds to wait for the move.")] = 3600.0,
    ) -> None:
        """Move the records this server holds that its site's hash gives another server.

        Run on each server that was in the site before it grew, once every server of the
        site runs with the new [site] servers list (the server at DATA must be running)."""
        from idr.site import SitePeers

        try:
            cfg = NodeConfig.load(data)
        except (ConfigError, OSError) as e:
            fail(str(e))
        s = cfg.site
        if not s.multi:
            fail(f"{data} is not a server of a site of several servers ([site] in idr.toml)")
        # An outsider to the site's servers (index -1) that knows its key: the server itself moves.
        peers = SitePeers(s.servers, -1, s.secret.encode("utf-8"), s.hash, timeout=timeout)
        try:
            moved = peers.reshare(s.index)
        except HandleError as e:
            fail(e.message)
        finally:
            peers.close()
        out.print(
            f"server {s.index}: [green]{moved['moved']}[/] records moved to other servers of the site, "
            f"{moved['kept']} kept"
        )
