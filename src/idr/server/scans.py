"""Reads that walk the store beyond a record or two: the audit trail over the transaction log,
a secondary's review queue, the top's filing register.

They run off the event loop on a thread of their own, whatever the store engine (SQLite's
reads are microseconds on the loop for one record, but a walk over a large log takes seconds,
and PostgreSQL's are network round trips), one at a time per node with a few waiting; more get
SERVER_TOO_BUSY (HTTP 503) at once. So an admin's audit query, or many at once, costs the node
one thread and never stalls resolution.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from aiohttp import web

from idr.server.limits import CostGate

T = TypeVar("T")

SCAN_SLOTS = 1
SCAN_QUEUE = 8

SCANS_KEY = web.AppKey("idr.scans", CostGate)


def install(app: web.Application, gate: CostGate | None = None) -> CostGate:
    """The application's scan gate: ``gate``, the one it already has, or a new one (closed
    with the application)."""
    if gate is not None:
        app[SCANS_KEY] = gate
    elif SCANS_KEY not in app:
        made = app[SCANS_KEY] = CostGate(SCAN_SLOTS, SCAN_QUEUE, what="store scan")

        async def close(_: web.Application) -> None:
            made.close()

        app.on_cleanup.append(close)
    return app[SCANS_KEY]


async def off_loop(request: web.Request, fn: Callable[[], T]) -> T:
    """``fn()`` on the scan gate's thread (SERVER_TOO_BUSY when the gate is full)."""
    return await request.app[SCANS_KEY].run(fn)


__all__ = ["SCANS_KEY", "install", "off_loop"]
