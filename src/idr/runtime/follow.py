"""Cross-process coherence: a running node follows its store's transaction log.

Any writer may commit to a node's store besides the node's own writer thread: ``idr import``
run against the data directory of a running node, a second ``idr serve`` on the same
PostgreSQL database, the primary whose PostgreSQL hot standby this node reads, the worker
processes' worker 0. Their commits must reach this process's caches — the record cache,
the native hot answers and negative answers, the HTTP pre-built bodies — or those would keep
answering the old value (or "not found") until a restart.

So every node polls ``Store.last_seq()`` every ``interval`` seconds (default 10 ms; one
index probe: SQLite reads it in microseconds on the loop, PostgreSQL in a reader thread)
and, when it moved, reads the new entries (``log_since``) and hands their keys to
``NodeService.on_external_commit`` — the path a replication mirror uses — which drops the
record cache's copies and tells the listeners. Entries this process committed itself are
skipped (their listeners ran before they were acknowledged). The writer thread marks its seqs
just after its commit returns, so an entry read in between may be ours though not yet marked:
such an entry is held until that commit is marked (``NodeRuntime.commits_marked``), then
skipped or reported — not reported twice as another writer's. Another process's
whole-store copy (``REPLICA_COPY_OP``: a mirror re-copied from its primary), or a gap in the
log (entries compacted before this process read them), drops everything; a copy this
process applied was announced by it already.

The bound: a commit by another writer is answered by this node within ``interval`` plus
the time to read the entries (one poll, typically < 1 ms), i.e. about 10 ms by default —
``tests/runtime/test_coherence.py`` checks each case against ``COHERENCE_BOUND`` with
separate processes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from idr.core.interface import EVERYTHING
from idr.core.service import NodeService
from idr.runtime.tasks import cancel_and_wait
from idr.store.base import REPLICA_COPY_OP, LogEntry, StoreError

if TYPE_CHECKING:
    from idr.runtime.writer import NodeRuntime

log = logging.getLogger("idr.runtime.follow")

FOLLOW_INTERVAL = 0.01  # s between polls of the store's last seq
BATCH = 1000  # log entries read per call


class LogFollower:
    """Polls the store's log and reports other writers' commits (see the module docstring)."""

    def __init__(self, service: NodeService, runtime: NodeRuntime, interval: float = FOLLOW_INTERVAL) -> None:
        self.service = service
        self.runtime = runtime
        self.interval = interval
        self.seq = 0
        self.reported = 0  # entries of other writers handed on (tests and metrics read it)
        # Entries read while this process's writer was between a commit and marking its seqs,
        # with the writer's commit count then: decided once that many commits are marked.
        self._held: list[tuple[int, LogEntry]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # Before any answer is cached: a commit after this seq is reported, so none slips by.
        self.seq = await self.runtime.read(self.service.store.last_seq)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.poll()
            except StoreError as e:  # a busy or vanished store: try again at the next tick
                log.warning("following the store's log: %s", e)

    async def poll(self) -> int:
        """Report what other writers committed since the last poll; returns how many entries."""
        store = self.service.store
        own = self.runtime.own
        n = self._decide_held() if self._held else 0
        last = await self.runtime.read(store.last_seq)
        if last < self.seq:  # the log was replaced by a shorter one (a re-copy): read it anew
            self.seq = 0
        if last <= self.seq:
            return n
        # Usually every new entry is this process's own: then there is nothing to read.
        if last - self.seq <= BATCH and all(s in own for s in range(self.seq + 1, last + 1)):
            own.difference_update(range(self.seq + 1, last + 1))
            self.seq = last
            return n
        while self.seq < last:
            entries = await self.runtime.read(lambda: store.log_since(self.seq, BATCH))
            if not entries:
                break
            # Read after the entries: any commit of ours among them is one of these.
            begun = self.runtime.commits_begun
            settled = self.runtime.commits_marked >= begun
            # A gap: entries after our position were compacted away (idr.operations.compaction)
            # before we read them, so which records changed is unknown: drop everything.
            # A copy this process applied itself (a mirror's re-copy: its seq is ours) replaced
            # the whole log and was announced whole already: not a gap to announce again.
            first = entries[0]
            copied_here = first.op == REPLICA_COPY_OP and first.seq in own
            gap = first.seq != self.seq + 1 and not copied_here
            self.seq = entries[-1].seq
            foreign: list[LogEntry] = []
            for e in entries:
                if e.seq in own:
                    own.discard(e.seq)
                elif settled:
                    foreign.append(e)
                else:
                    self._held.append((begun, e))
            n += self._report(foreign, everything=gap)
        return n

    def _decide_held(self) -> int:
        """Held entries whose commit is now marked: ours are skipped, the rest reported."""
        marked = self.runtime.commits_marked
        own = self.runtime.own
        ready = [e for begun, e in self._held if begun <= marked]
        self._held = [(begun, e) for begun, e in self._held if begun > marked]
        foreign: list[LogEntry] = []
        for e in ready:
            if e.seq in own:
                own.discard(e.seq)
            else:
                foreign.append(e)
        return self._report(foreign)

    def _report(self, entries: list[LogEntry], *, everything: bool = False) -> int:
        """Hand ``entries``' keys to the core (everything on a copy); returns how many."""
        everything = everything or any(e.op == REPLICA_COPY_OP for e in entries)
        if everything:
            self.service.cache.clear()
            self.service.on_external_commit(EVERYTHING)
        elif entries:
            keys = [w.key for e in entries for w in e.writes]
            self.service.on_external_commit(list(dict.fromkeys(keys)))
        self.reported += len(entries)
        return len(entries)


__all__ = ["FOLLOW_INTERVAL", "LogFollower"]
