"""Operations commands: ``backup``, ``restore``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from idr.cli.common import fail
from idr.core.config import ConfigError

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    @app.command()
    def backup(
        data: Annotated[Path, typer.Option("--data", "-d", help="The node's data directory.")],
        out: Annotated[Path, typer.Argument(help="New directory to write the backup into.")],
    ) -> None:
        """Copy the node in DATA into OUT while it keeps serving: a consistent copy of the store
        (SQLite's backup API; pg_dump in an exported snapshot) with its log position, and the
        node's settings, keys and replication state."""
        from idr.operations.backup import BackupError
        from idr.operations.backup import backup as make_backup

        try:
            m = make_backup(data, out)
        except (BackupError, ConfigError, OSError) as e:
            fail(f"backup failed: {e}")
        console.print(
            f"[green]backed up[/] {m.node} ({m.store}) to {out}: log position [bold]{m.seq}[/], "
            f"store copied in {m.seconds:.2f} s"
        )
        typer.echo(f"seq={m.seq}")

    @app.command()
    def restore(
        src: Annotated[Path, typer.Argument(help="A directory written by idr backup.")],
        data: Annotated[Path, typer.Option("--data", "-d", help="Empty directory to restore the node into.")],
        dsn: Annotated[
            str | None, typer.Option(help="PostgreSQL: restore into this (empty) database instead.")
        ] = None,
    ) -> None:
        """Restore a backup as the node in DATA; then start it with idr serve --data DATA."""
        from idr.operations.backup import BackupError
        from idr.operations.backup import restore as do_restore

        try:
            r = do_restore(src, data, dsn=dsn)
        except (BackupError, ConfigError, OSError) as e:
            fail(f"restore failed: {e}")
        m = r.manifest
        console.print(f"[green]restored[/] {m.node} ({m.store}) into {data} at log position [bold]{m.seq}[/]")
        if r.role == "primary":
            console.print(
                f"replication: primary, new epoch {r.epoch} from seq {m.seq + 1}. Mirrors behind the "
                "backup catch up from the log; a mirror that holds later entries is re-copied and "
                "loses them — if one does, promote it instead (idr promote) and restore nothing."
            )
        elif r.role is not None:
            console.print("replication: mirror; it re-copies from its primary on first contact")
        typer.echo(f"seq={m.seq}")
