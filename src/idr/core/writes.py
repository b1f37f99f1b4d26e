"""The one write path, as the core sees it: write jobs planned in a group, committed together.

Every write — a request from any front-end, a prefix application, a filing, an import
batch, a node's bootstrap — is a :class:`WriteJob`: a function that checks the rules and
*stages* at most one commit (``NodeService.stage``). A driver (the node's writer thread,
``idr.runtime.writer``; or :meth:`NodeService.write_now` for a tool without an event loop)
hands jobs to :meth:`NodeService.run_group`, which plans them one after another — each
job's reads see what the jobs before it in the group staged (:class:`Plan`'s overlay), as if
they had already committed — then commits all of them in one store transaction (one log
entry and seq each, one fsync), and invalidates the record cache before the next group is
planned. A job that fails its rules fails alone; if the engine refuses the group's
transaction, each job is planned and committed again on its own, so only the one the
engine refuses fails. Job functions must therefore be re-runnable: they read and stage,
nothing else.

Nothing here is concurrent: the driver guarantees one group at a time. Which job is being
planned is a context variable, so reads on other threads (the event loop) never see a
plan's uncommitted overlay.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from idr.model.value import HandleRecord
from idr.store.base import Write

# Jobs per group: bounds a group's transaction (and the time its first writer waits).
MAX_GROUP = 256


@dataclass
class Staged:
    """What one job asks to commit: one transaction with one log entry."""

    op: str
    actor: str
    writes: list[Write] = field(default_factory=list)
    # An import batch: committed alone through ``Store.bulk_load`` (COPY on PostgreSQL).
    bulk: list[HandleRecord] | None = None
    checkpoint: tuple[str, int] | None = None
    # Durable counters this commit adds to (``idr.core.stats.count``), committed with it.
    counts: dict[str, int] = field(default_factory=dict)

    def keys(self) -> list[str]:
        return [w.key for w in self.writes]


@dataclass
class Plan:
    """The group being planned: what earlier jobs staged (key → record, None = deleted), and
    the records the group's jobs named up front, read from the store in one query."""

    overlay: dict[str, HandleRecord | None] = field(default_factory=dict)
    prefetched: dict[str, HandleRecord | None] = field(default_factory=dict)
    staged: Staged | None = None  # the current job's
    counts: dict[str, int] = field(default_factory=dict)  # the current job's (idr.core.stats)


PLANNING: ContextVar[Plan | None] = ContextVar("idr_planning", default=None)
# Set while answering without waiting (``answer_now``): a read that would block raises.
NO_WAIT: ContextVar[bool] = ContextVar("idr_no_wait", default=False)


class WouldBlock(Exception):
    """``answer_now`` needs a store read that may wait: the caller must ``submit``."""


@dataclass(eq=False)
class WriteJob:
    """One write through the write path; ``fn`` runs the rules and stages (see module doc)."""

    fn: Callable[[], Any]
    # Keys ``fn`` will read that are likely not cached (the handle a request writes): the
    # group reads them all in one query before planning (one round trip, not one per write).
    reads: tuple[str, ...] = ()
    result: Any = None
    error: BaseException | None = None
    staged: Staged | None = None
    seq: int = 0

    def changed(self) -> list[str]:
        """The keys this job's commit writes."""
        if self.staged is None:
            return []
        if self.staged.bulk is not None:
            from idr.model.handle import normalize_key

            return [normalize_key(r.handle) for r in self.staged.bulk]
        return self.staged.keys()


def changed_keys(jobs: Sequence[WriteJob]) -> list[str]:
    """Every key the committed jobs of a group changed, once each, in order."""
    return list(dict.fromkeys(k for j in jobs if j.seq for k in j.changed()))


__all__ = ["MAX_GROUP", "NO_WAIT", "PLANNING", "Plan", "Staged", "WouldBlock", "WriteJob", "changed_keys"]
