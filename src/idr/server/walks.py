"""Walks across the federation that one anonymous request sets off: the supply-chain tree (the
console's ``/console/chain``, a recursive node's ``/api/federation/trace``). Each node of the tree
is a resolution that may take several remote hops, each up to its own timeout, so one request
could otherwise cost hundreds of outgoing requests and many minutes. A node runs at most
``slots`` walks at once (more get 503 at once) and each within ``seconds`` (what is not resolved
by then is shown as not resolved).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from aiohttp import web

from idr.model.errors import HandleError, ResponseCode

MAX_WALKS = 4
WALK_SECONDS = 10.0


class WalksBusy(HandleError):
    """Every walk slot is taken (SERVER_TOO_BUSY: HTTP 503)."""

    def __init__(self) -> None:
        super().__init__(ResponseCode.SERVER_TOO_BUSY, "too many traces running: try again shortly")


class WalkGate:
    def __init__(self, slots: int = MAX_WALKS, seconds: float = WALK_SECONDS) -> None:
        self.slots = slots
        self.seconds = seconds
        self.running = 0
        self.refused = 0

    @contextlib.contextmanager
    def walk(self) -> Iterator[float]:
        """A slot for one walk, and its deadline (``time.monotonic()``); SERVER_TOO_BUSY if none."""
        if self.running >= self.slots:
            self.refused += 1
            raise WalksBusy
        self.running += 1
        try:
            yield time.monotonic() + self.seconds
        finally:
            self.running -= 1


WALKS_KEY = web.AppKey("idr.walks", WalkGate)


def install(app: web.Application, gate: WalkGate | None = None) -> WalkGate:
    """The application's walk gate: ``gate``, the one it already has, or a new one."""
    if gate is not None:
        app[WALKS_KEY] = gate
    elif WALKS_KEY not in app:
        app[WALKS_KEY] = WalkGate()
    return app[WALKS_KEY]


__all__ = ["MAX_WALKS", "WALKS_KEY", "WALK_SECONDS", "WalkGate", "WalksBusy", "install"]
