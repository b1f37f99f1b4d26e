"""The core as every front-end sees it: one small interface, two implementations.

``Core`` is what UDP, TCP, HTTP, SNMS, the console and the federation routes hold. The
authoritative implementation is :class:`idr.core.service.NodeService` (with its federated
subclass); the recursive one is :class:`idr.resolver.recursive.RecursiveService`. A
front-end never asks which one it holds:

* ``answer_now(req)`` answers at once when that needs no waiting (a cached record, a
  recursive node's cached answer, any read on an embedded store) and returns None when it
  would: then ``await submit(req)``, which reads off the event loop or walks the federation.
  The native slow path uses the pair so that a cache hit costs no task.
* ``submit(req)`` answers any request; writes take the node's one write path (write gate →
  commit in a group → durability wait → notify) and are acknowledged only after it.
* ``add_listener(fn)``: ``fn(keys)`` runs on the event loop after every commit (this
  process's or, through the log follower, any other writer's) with the keys it changed,
  before the write is acknowledged; ``EVERYTHING`` means "drop all you hold".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from idr.core.request import Request, Response
from idr.model.handle import Handle
from idr.model.site import SiteInfo
from idr.model.value import HandleValue, ValueReference
from idr.store.base import Store
from idr.store.cache import RecordCache

Listener = Callable[[Sequence[str]], None]

# A change listeners cannot narrow down (a whole-store copy, the set of homed prefixes): a key
# under the reserved homed prefix, which every cache already treats as "drop everything".
EVERYTHING: tuple[str, ...] = ("0.HOMED/*",)
HOMED_KEY_PREFIX = "0.HOMED/"


def drops_everything(keys: Sequence[str]) -> bool:
    """Whether a commit of ``keys`` changes answers beyond those keys (homed prefixes moved)."""
    return any(k.startswith(HOMED_KEY_PREFIX) for k in keys)


@runtime_checkable
class Core(Protocol):
    """What front-ends call; see the module docstring."""

    role: str
    site_info: SiteInfo | None
    counters: dict[str, int]

    @property
    def store(self) -> Store:
        """The node's own store (its data directory: a recursive node keeps its admins there)."""

    @property
    def cache(self) -> RecordCache:
        """That store's record cache (its hit counts are metrics)."""

    def is_responsible(self, h: Handle) -> bool:
        """Whether ``h`` is under a prefix this node is home to (its own identities included)."""

    def add_listener(self, fn: Listener) -> None: ...

    def answer_now(self, req: Request) -> Response | None:
        """The answer when it needs no waiting (never blocks, never writes), else None."""

    async def submit(self, req: Request) -> Response:
        """The answer to any request; writes are durable (by the node's policy) when it returns."""

    def homed_prefixes(self) -> list[str]: ...

    async def preload(self, handles: Sequence[str]) -> None:
        """Have these handles' records cached (read off the loop where the store may block), so
        the synchronous identity lookups that follow (``authenticate_secret``,
        ``identity_values``) never wait on the store."""

    def authenticate_secret(self, identity: ValueReference, secret: bytes) -> bool:
        """Whether ``secret`` is ``identity``'s HS_SECKEY (for Basic and console logins)."""

    def identity_values(self, identity: ValueReference, type_: str) -> list[HandleValue]:
        """The key values (HS_PUBKEY, HS_SECKEY) that authenticate ``identity`` here."""

    def close(self) -> None: ...


__all__ = ["EVERYTHING", "Core", "Listener", "drops_everything"]
