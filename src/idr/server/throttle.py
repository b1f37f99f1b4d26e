"""Back-off for secret guessing: the console login, HTTP Basic and ``Authorization: Handle``
logins, SNMS tokens. Per source address and per claimed identity; never a permanent lockout.

The policy (``login_*`` under ``[http]`` in idr.toml; docs/security.md):

* Every failed attempt counts against its source (the client's address; an IPv6 client's /64)
  and against the identity it claimed (its handle: every key index of one handle is one
  identity here, so naming other indexes gains a guesser nothing). The first
  ``free_failures`` cost nothing; after that each failure holds back further attempts from
  that source, or at that identity, for ``backoff_base · 2^k`` seconds (k = failures beyond
  the free ones: 1 s, 2 s, 4 s…), at most ``source_max_delay`` for a source and
  ``identity_max_delay`` for an identity. A held-back attempt is refused before the secret is
  looked at (HTTP 429 with ``Retry-After``).
* The identity's cap is short on purpose: guessers spread over many addresses get about one
  guess per ``identity_max_delay`` at one identity, and the real admin waits at most that long.
  A source that authenticated as the identity before (within ``known_source_days``) is not held
  back by the identity's back-off at all, so someone else's guessing never delays the real admin
  at their usual address; that source's own failures still count against it.
* Failures are forgotten ``forget_after`` seconds after the last one. A success clears its
  source's failures and takes one back from the identity's (others may still be guessing).
* An attempt counts as a failure from the moment it starts until it succeeds, so a burst of
  parallel guesses cannot all slip in before the first failure is recorded.
* Each table keeps at most ``max_entries`` keys (least recently seen evicted first).

No I/O and no clock of its own (``clock`` is injected, so tests move time); one ``Throttle`` per
node, kept on its aiohttp applications under ``THROTTLE_KEY``.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from aiohttp import web

from idr.core.config import HttpLimits
from idr.model.handle import normalize_key
from idr.model.value import ValueReference
from idr.server.limits import source_network


@dataclass(frozen=True, slots=True)
class ThrottleLimits:
    free_failures: int = 5
    backoff_base: float = 1.0  # seconds
    source_max_delay: float = 900.0
    identity_max_delay: float = 60.0
    forget_after: float = 3600.0
    known_source_days: float = 30.0
    max_entries: int = 16384

    @classmethod
    def from_config(cls, h: HttpLimits) -> ThrottleLimits:
        return cls(
            h.login_free_failures,
            h.login_backoff_base,
            h.login_source_max_delay,
            h.login_identity_max_delay,
            h.login_forget_after,
            h.login_known_source_days,
            h.login_table_entries,
        )


class Throttled(Exception):
    """Too many failed attempts: try again in ``retry_after`` seconds."""

    def __init__(self, retry_after: float, what: str) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(f"too many failed attempts {what}: try again in {self.retry_after} s")


class _Failures:
    """key → (failures, time of the last one), LRU-bounded."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.table: OrderedDict[Hashable, tuple[int, float]] = OrderedDict()

    def get(self, key: Hashable, now: float, forget: float) -> tuple[int, float]:
        n, last = self.table.get(key, (0, now))
        return (0, now) if now - last > forget else (n, last)

    def put(self, key: Hashable, n: int, last: float) -> None:
        if n <= 0:
            self.table.pop(key, None)
            return
        self.table[key] = (n, last)
        self.table.move_to_end(key)
        while len(self.table) > self.capacity:
            self.table.popitem(last=False)


def source_key(address: str | None) -> str:
    """The source a failure counts against: the address, an IPv6 client's /64."""
    return source_network(address or "?", 32, 64)


class Throttle:
    """See the module docstring. ``begin`` before checking a secret, then ``succeeded``."""

    def __init__(self, limits: ThrottleLimits | None = None, clock: Callable[[], float] = time.monotonic):
        self.limits = lim = limits or ThrottleLimits()
        self.clock = clock
        self._sources = _Failures(lim.max_entries)
        self._identities = _Failures(lim.max_entries)
        self._known: OrderedDict[tuple[str, str], float] = OrderedDict()  # (source, identity) → when
        self.refused = 0

    def __len__(self) -> int:
        return len(self._sources.table) + len(self._identities.table) + len(self._known)

    def _delay(self, n: int, cap: float) -> float:
        """How long after the last of ``n`` failures the next attempt waits."""
        k = n - self.limits.free_failures
        if k < 0:
            return 0.0
        return min(cap, self.limits.backoff_base * 2.0 ** min(k, 62))

    def _known_source(self, source: str, identity: str, now: float) -> bool:
        seen = self._known.get((source, identity))
        return seen is not None and now - seen <= self.limits.known_source_days * 86400

    def begin(self, address: str | None, identity: ValueReference) -> None:
        """An attempt from ``address`` as ``identity`` is about to check a secret: Throttled if
        either must wait; otherwise it is counted as a failure until ``succeeded``."""
        lim, now = self.limits, self.clock()
        source, ident = source_key(address), normalize_key(identity.handle)
        n_src, last_src = self._sources.get(source, now, lim.forget_after)
        wait = last_src + self._delay(n_src, lim.source_max_delay) - now
        if wait > 0:
            self.refused += 1
            raise Throttled(wait, "from this address")
        n_id, last_id = self._identities.get(ident, now, lim.forget_after)
        if not self._known_source(source, ident, now):
            wait = last_id + self._delay(n_id, lim.identity_max_delay) - now
            if wait > 0:
                self.refused += 1
                raise Throttled(wait, f"for {identity.handle}")
        self._sources.put(source, n_src + 1, now)
        self._identities.put(ident, n_id + 1, now)

    def cancel(self, address: str | None, identity: ValueReference) -> None:
        """The attempt ``begin`` counted never got to check the secret (the node was busy)."""
        now = self.clock()
        for table, key in (
            (self._sources, source_key(address)),
            (self._identities, normalize_key(identity.handle)),
        ):
            n, last = table.get(key, now, self.limits.forget_after)
            table.put(key, n - 1, last)

    def succeeded(self, address: str | None, identity: ValueReference) -> None:
        """The attempt ``begin`` counted proved the secret."""
        lim, now = self.limits, self.clock()
        source, ident = source_key(address), normalize_key(identity.handle)
        self._sources.put(source, 0, now)
        n_id, last_id = self._identities.get(ident, now, lim.forget_after)
        self._identities.put(ident, n_id - 1, last_id)
        self._known[(source, ident)] = now
        self._known.move_to_end((source, ident))
        while len(self._known) > lim.max_entries:
            self._known.popitem(last=False)


# One per node, shared by its HTTPS and HTTP applications (the console and SNMS routes on them too).
THROTTLE_KEY = web.AppKey("idr.throttle", Throttle)


def install(app: web.Application, throttle: Throttle | None = None) -> Throttle:
    """The application's throttle: ``throttle``, the one it already has, or a new one."""
    if throttle is not None:
        app[THROTTLE_KEY] = throttle
    elif THROTTLE_KEY not in app:
        app[THROTTLE_KEY] = Throttle()
    return app[THROTTLE_KEY]


__all__ = ["THROTTLE_KEY", "Throttle", "ThrottleLimits", "Throttled", "install", "source_key"]
