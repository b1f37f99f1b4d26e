"""Anonymous prefix applications per source network (REST ``POST /api/federation/applications``
and the console's form share one gate per node).

Anyone may apply for a prefix, and each application is a stored record a reviewer must read,
so one client could fill the store and the review queue. A source network (IPv4 /24, IPv6 /56:
an attacker rarely has one address only) gets a burst of ``burst`` applications, then one per
``interval`` seconds; beyond that HTTP 429 with ``Retry-After``, before anything is stored.
Only applications that were stored count: a form refused for a bad credit code costs nothing
but the request. The total waiting for review is the core's bound (``max_pending_applications``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from idr.core.config import HttpLimits
from idr.core.prefixes import Application, PrefixRegistry, TooManyApplications
from idr.model.errors import HandleError
from idr.server.limits import RateTable, source_network


class ApplicationGate:
    def __init__(
        self,
        burst: int = 5,
        interval: float = 600.0,
        capacity: int = 16384,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.clock = clock
        self._table = RateTable(1.0 / interval if interval > 0 else math.inf, float(burst), capacity)

    @classmethod
    def from_config(cls, h: HttpLimits) -> ApplicationGate:
        return cls(h.applications_per_source, h.application_interval)

    @property
    def refused(self) -> int:
        return self._table.refused

    def admit(self, address: str | None) -> str:
        """Take one application from ``address``'s network (its key, for :meth:`refund`);
        TooManyApplications when that network has used its share."""
        key = source_network(address or "?", 24, 56)
        if not self._table.take(key, 1.0, self.clock()):
            wait = max(1, math.ceil(self.interval))
            raise TooManyApplications(
                f"too many prefix applications from your network: apply again in {wait} s", wait
            )
        return key

    def refund(self, key: str) -> None:
        """The application was not stored (refused for its content): it does not count."""
        self._table.charge(key, -1.0, self.clock())


APPLICATIONS_KEY = web.AppKey("idr.applications", ApplicationGate)


def install(app: web.Application, gate: ApplicationGate | None = None) -> ApplicationGate:
    """The application's gate: ``gate``, the one it already has, or a new one."""
    if gate is not None:
        app[APPLICATIONS_KEY] = gate
    elif APPLICATIONS_KEY not in app:
        app[APPLICATIONS_KEY] = ApplicationGate()
    return app[APPLICATIONS_KEY]


async def apply_counted(request: web.Request, reg: PrefixRegistry, **fields: Any) -> Application:
    """``reg.apply(**fields)`` counted against the client's source network: TooManyApplications
    past its share; an application that was not stored is given back."""
    gate = install(request.app)
    key = gate.admit(request.remote)
    try:
        return await reg.apply(**fields)
    except HandleError:
        gate.refund(key)
        raise


__all__ = ["APPLICATIONS_KEY", "ApplicationGate", "apply_counted", "install"]
