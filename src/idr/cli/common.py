"""Helpers shared by the CLI commands."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, NoReturn

import typer
from rich.console import Console

err = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a clear error (never a traceback) and exit non-zero."""
    err.print(f"[red]error:[/] {message}")
    raise typer.Exit(code)


def run_async(coro: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop; Ctrl-C ends quietly."""
    import uvloop

    try:
        uvloop.run(coro)
    except KeyboardInterrupt:
        err.print("stopped")
    finally:
        asyncio.set_event_loop_policy(None)
