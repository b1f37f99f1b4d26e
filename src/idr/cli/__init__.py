"""``idr`` — one command for every node role and for clients."""

from __future__ import annotations

import typer

from idr.cli import client as _client
from idr.cli import federation as _federation
from idr.cli import gs1 as _gs1
from idr.cli import node as _node
from idr.cli import operations as _operations
from idr.cli import replication as _replication
from idr.cli import site as _site
from idr.cli import sites as _sites
from idr.cli import stats as _stats
from idr.cli import trust as _trust

app = typer.Typer(
    name="idr",
    help="Identifier registration and resolution (Handle protocol) for the industrial internet.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_node.register(app)
_client.register(app)
_federation.register(app)
_replication.register(app)
_gs1.register(app)
_operations.register(app)
_sites.register(app)
_site.register(app)
_stats.register(app)
_trust.register(app)


def main() -> None:
    app()
