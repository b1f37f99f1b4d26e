"""Fail over between the sites of one service, and come back to the primary when it returns.

A client holds the service's sites in preference order (primary first, as ``HS_SITE``
lists them). Calls go to the site that last worked, so a dead primary costs one timeout,
not one per call; while on a mirror, the preferred site is tried again every
``retry_preferred`` seconds, so clients return to the primary by themselves. Writes go to
whichever site accepts them: a mirror's SERVER_READ_ONLY answer moves the write on.

Transport-neutral: ``call(fn)`` runs ``fn(site)``; helpers below adapt the native client
(``HandleClient``) and the REST API (``resolve_http``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from idr.model.errors import ResponseCode
from idr.model.value import HandleValue
from idr.resolver.client import ClientError, HandleClient, ResponseError, resolve_http

S = TypeVar("S")
T = TypeVar("T")

# Answers after which another site may do better: busy, or a mirror asked to write.
_MOVE_ON_CODES = frozenset({ResponseCode.SERVER_TOO_BUSY, ResponseCode.SERVER_READ_ONLY})


class SiteUnavailable(Exception):
    """Raised by a call (or by ``call`` when every site failed): try another site."""


def _moves_on(e: BaseException) -> bool:
    if isinstance(e, ResponseError):
        return e.code in _MOVE_ON_CODES
    return isinstance(e, SiteUnavailable | ClientError | OSError | TimeoutError)


class Failover(Generic[S]):
    """Sticky, self-healing choice of a site; one instance per service, shared by callers."""

    def __init__(
        self,
        sites: Sequence[S],
        *,
        retry_preferred: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not sites:
            raise ValueError("a service has at least one site")
        self.sites = list(sites)
        self.retry_preferred = retry_preferred
        self.clock = clock
        self._current = {False: 0, True: 0}  # read / write → index of the site that last worked
        self._left_preferred_at = {False: 0.0, True: 0.0}
        self.failovers = 0

    def current(self, write: bool = False) -> S:
        return self.sites[self._current[write]]

    def _order(self, write: bool) -> list[int]:
        cur = self._current[write]
        order = [cur] + [i for i in range(len(self.sites)) if i != cur]
        if cur != 0 and self.clock() - self._left_preferred_at[write] >= self.retry_preferred:
            # Time to see whether the primary is back: try it first once.
            self._left_preferred_at[write] = self.clock()
            order.remove(0)
            order.insert(0, 0)
        return order

    async def call(self, fn: Callable[[S], Awaitable[T]], *, write: bool = False) -> T:
        """``fn(site)`` on the first site that answers; the last error if none does."""
        last: BaseException | None = None
        for i in self._order(write):
            try:
                result = await fn(self.sites[i])
            except Exception as e:
                if not _moves_on(e):
                    raise
                last = e
                continue
            if i != self._current[write]:
                self.failovers += 1
                if self._current[write] == 0:
                    self._left_preferred_at[write] = self.clock()
                self._current[write] = i
            return result
        raise SiteUnavailable(f"no site of the service answered: {last}") from last


def native_resolver(
    sites: Sequence[tuple[str, int]], *, timeout: float = 0.5, retry_preferred: float = 2.0
) -> Callable[[str], Awaitable[tuple[HandleValue, ...]]]:
    """``resolve(handle)`` over the Handle protocol with failover between ``(host, port)`` sites."""
    fo: Failover[tuple[str, int]] = Failover(sites, retry_preferred=retry_preferred)

    async def resolve(handle: str) -> tuple[HandleValue, ...]:
        async def one(site: tuple[str, int]) -> tuple[HandleValue, ...]:
            async with HandleClient(site[0], site[1], timeout=timeout, retries=0) as c:
                return await c.resolve_values(handle)

        return await fo.call(one)

    return resolve


def http_resolver(
    base_urls: Sequence[str], *, insecure: bool = False, timeout: float = 0.5, retry_preferred: float = 2.0
) -> Callable[[str], Awaitable[tuple[HandleValue, ...]]]:
    """``resolve(handle)`` over the REST API with failover between the sites' base URLs."""
    fo: Failover[str] = Failover(base_urls, retry_preferred=retry_preferred)

    async def resolve(handle: str) -> tuple[HandleValue, ...]:
        return await fo.call(lambda url: resolve_http(url, handle, insecure=insecure, timeout=timeout))

    return resolve
