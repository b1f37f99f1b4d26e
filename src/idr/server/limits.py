"""Per-client budgets of the native front-ends: what one source may cost the node.

Three small tools, each bounded in memory whatever the clients do:

- :class:`RateTable`: token buckets keyed by source (an address, or a network for UDP, where
  sources are spoofable and neighbours share a budget as in DNS response rate limiting), in a
  bounded LRU table. An evicted source starts again with a full bucket; with the table full of
  other sources that is the most an attacker rotating addresses can gain.
- :func:`source_network`: the key of a UDP source (its /24 or /56, as BIND's RRL defaults).
- :class:`CostGate`: CPU-heavy verification (PBKDF2 secret-key MACs, public-key signatures, the
  pure-Python SM2 arithmetic) off the event loop, at most ``slots`` at once on threads of its
  own and at most ``queue`` waiting; anything beyond is refused at once with SERVER_TOO_BUSY,
  so a flood costs a bounded amount of CPU and memory and never stalls resolution.

No clocks of their own: callers pass ``now`` (``time.monotonic()``), so tests drive time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from idr.model.errors import HandleError, ResponseCode

T = TypeVar("T")


class RateTable:
    """Token buckets (``rate`` per second, up to ``burst``) for at most ``capacity`` sources."""

    __slots__ = ("_table", "burst", "capacity", "rate", "refused")

    def __init__(self, rate: float, burst: float, capacity: int = 16384) -> None:
        self.rate = rate
        self.burst = burst
        self.capacity = capacity
        self._table: OrderedDict[Hashable, list[float]] = OrderedDict()  # key → [tokens, last]
        self.refused = 0

    def __len__(self) -> int:
        return len(self._table)

    def has(self, key: Hashable, cost: float, now: float) -> bool:
        """Whether ``key`` could spend ``cost`` now (nothing spent, no entry made)."""
        entry = self._table.get(key)
        return entry is None or min(self.burst, entry[0] + (now - entry[1]) * self.rate) >= cost

    def charge(self, key: Hashable, cost: float, now: float) -> None:
        """Spend ``cost`` after the fact, into debt if need be (at most one ``burst`` deep):
        for costs known only once the work is done, such as CPU time."""
        self.take(key, 0.0, now)  # refill and make sure the entry exists
        entry = self._table.get(key)
        if entry is not None:
            entry[0] = max(-self.burst, entry[0] - cost)

    def take(self, key: Hashable, cost: float, now: float) -> bool:
        """Spend ``cost`` tokens of ``key``'s bucket; False (nothing spent) when it lacks them."""
        entry = self._table.get(key)
        if entry is None:
            entry = [self.burst, now]
            self._table[key] = entry
            if len(self._table) > self.capacity:
                self._table.popitem(last=False)
        else:
            self._table.move_to_end(key)
            entry[0] = min(self.burst, entry[0] + (now - entry[1]) * self.rate)
            entry[1] = now
        if entry[0] < cost:
            self.refused += 1
            return False
        entry[0] -= cost
        return True


@functools.lru_cache(maxsize=4096)  # every HTTP request asks: parsing costs ~10 µs
def source_network(host: str, v4_prefix: int = 24, v6_prefix: int = 56) -> str:
    """``192.0.2.77`` → ``192.0.2.0/24``; what is not an IP address is its own key."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    bits = v4_prefix if addr.version == 4 else v6_prefix
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))


class CostGate:
    """Bounded concurrency for costly synchronous work (see module docstring)."""

    def __init__(self, slots: int = 1, queue: int = 16, what: str = "verification") -> None:
        self.slots = slots
        self.queue = queue
        self.what = what
        self._executor = ThreadPoolExecutor(max_workers=slots, thread_name_prefix=f"idr-{what.split()[-1]}")
        self._admitted = 0  # running + waiting
        self.refused = 0

    @property
    def busy(self) -> int:
        return self._admitted

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on the gate's threads; SERVER_TOO_BUSY when the gate is full. A slot is
        given back when the work ends, not when the caller stops waiting (a client that hangs up
        cannot pile up work behind the gate's back)."""
        if self._admitted >= self.slots + self.queue:
            self.refused += 1
            raise HandleError(ResponseCode.SERVER_TOO_BUSY, f"{self.what} queue full: try again later")
        self._admitted += 1
        loop = asyncio.get_running_loop()
        future = self._executor.submit(fn, *args)
        future.add_done_callback(lambda _: self._release_from(loop))
        return await asyncio.wrap_future(future)

    def _release_from(self, loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone (shutdown): nothing left to admit
            loop.call_soon_threadsafe(self._release)

    def _release(self) -> None:
        self._admitted -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
