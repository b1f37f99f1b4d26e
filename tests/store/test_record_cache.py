"""The record cache in front of the store: a fill that raced a commit never lands (issue 11
item 4(c)): the generation check and the insert are one step against invalidations."""

from __future__ import annotations

import threading

from idr.model.value import HandleRecord, HandleValue
from idr.store.cache import MISSING, RecordCache

URL = HandleValue(1, "URL", b"https://example.org/new")


class SlowHashKey(str):
    """A key whose hash, once armed, lets another thread's invalidation run right then —
    between the cache's generation check and its insert — and waits (bounded) for it."""

    armed: threading.Event | None = None
    other: threading.Thread | None = None

    def __hash__(self) -> int:
        if self.armed is not None and self.armed.is_set() and self.other is not None:
            self.armed.clear()
            self.other.start()
            self.other.join(0.5)  # a lock held here makes it wait: that is the fix
        return str.__hash__(self)


def test_an_invalidation_between_the_check_and_the_insert_is_not_lost() -> None:
    cache = RecordCache(10)
    stale = HandleRecord("88.100/x", ())
    fresh = HandleRecord("88.100/x", (URL,))
    key = SlowHashKey("88.100/X")
    key.armed = threading.Event()
    key.other = threading.Thread(target=cache.invalidate, args=(["88.100/X"],))

    def load(_k: str) -> HandleRecord:
        key.armed.set()  # type: ignore[union-attr]  # the commit lands as the read finishes
        return stale  # read before the commit

    assert cache.get(key, load) is stale
    key.other.join(5)
    assert not key.other.is_alive()
    # The write's invalidation came after the read: the stale record must not be cached.
    assert cache.lookup("88.100/X") is MISSING
    assert cache.get("88.100/X", lambda _k: fresh) is fresh


def test_a_load_that_raced_an_invalidation_is_not_kept() -> None:
    cache = RecordCache(10)
    stale = HandleRecord("88.100/x", ())

    def load_then_commit_lands(key: str) -> HandleRecord:
        cache.invalidate([key])  # a commit's invalidation while the read was in flight
        return stale

    assert cache.get("88.100/X", load_then_commit_lands) is stale
    fresh = HandleRecord("88.100/x", (URL,))
    assert cache.get("88.100/X", lambda _k: fresh) is fresh  # the raced read was not kept
    assert cache.get("88.100/X", lambda _k: stale) is fresh  # now it is cached
