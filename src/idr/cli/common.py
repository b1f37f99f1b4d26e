"""Helpers shared by the CLI commands, and the conventions every command follows.

Option names mean one thing everywhere: ``--node`` is a node's HTTP(S) API (a URL, or
``HOST:PORT``), ``--server`` a Handle protocol ``HOST:PORT``, ``--site`` a replication
``HOST:PORT``; ``--auth INDEX:HANDLE`` is who you are and ``--secret``/``--key`` proves it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, NoReturn
from urllib.parse import urlsplit

import typer
import typer.core
from rich.console import Console

err = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a clear error (never a traceback) and exit non-zero."""
    err.print(f"[red]error:[/] {message}", highlight=False)
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


def host_port(text: str, option: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``) → (host, port), or a clear error naming ``option``."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in host:
        fail(f"{option} must be HOST:PORT (e.g. 127.0.0.1:2641), not {text!r}")
    return host, int(port)


def node_url(text: str, option: str = "--node", *, secure: bool = False) -> str:
    """A node's API base URL from ``http(s)://HOST:PORT`` or ``HOST:PORT``.

    Without a scheme, ``secure`` picks HTTPS (commands that send credentials) or HTTP (reads).
    """
    raw = text.strip().rstrip("/")
    if "://" not in raw:
        host, port = host_port(raw, option) if ":" in raw else (raw, 0)
        if not port:
            fail(f"{option} must be a URL (https://HOST:PORT) or HOST:PORT, not {text!r}")
        shown = f"[{host}]" if ":" in host else host
        return f"{'https' if secure else 'http'}://{shown}:{port}"
    try:
        parts = urlsplit(raw)
        _ = parts.port  # raises on a port that is not a number in range
    except ValueError:
        fail(f"{option} is not a usable URL: {text!r}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        fail(f"{option} must be an http:// or https:// URL (or HOST:PORT), not {text!r}")
    if parts.query or parts.fragment:
        fail(f"{option} is a node's base URL, without a query: {text!r}")
    return raw


# --------------------------------------------------------------------------- help text

_display_type_rich = typer.core.TyperOption.display_type_rich


def _option_type(self: typer.core.TyperOption, ctx: Any) -> str | None:
    """What the help's type column shows: an option's metavar if it has one, nothing for a
    flag (typer would print ``<bool>`` on every flag), typer's type name otherwise."""
    if self.metavar is not None:
        return self.metavar
    if self.is_flag:
        return None
    return _display_type_rich(self, ctx)


typer.core.TyperOption.display_type_rich = _option_type  # type: ignore[method-assign]
