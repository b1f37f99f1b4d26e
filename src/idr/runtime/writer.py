"""The node's write path and reads that may block, around a core that knows no threads.

Writes (``NodeService.write`` / ``submit``): a job is queued for the one writer thread,
which takes every job queued by the time it is free (at most ``MAX_GROUP``) and runs them as
one group (``NodeService.run_group``: planned in order, one transaction, one log entry and
seq per job, one fsync). While a group's fsync runs, the next group gathers: concurrent
writers share a commit instead of queueing behind one fsync each, and a lone writer pays
nothing extra (it is taken at once). The group's keys go to the listeners on the event loop
— the front-ends' caches are dropped — before any job of the group is completed; the job's
caller then waits for durability (sync replication: one mirror round trip covers the group,
whose last seq the mirror acknowledges).

Reads that may block (``Store.blocking_reads``: PostgreSQL) run on a small pool of reader
threads, so a record-cache miss never stalls UDP, TCP or HTTP clients.

Notifications from other threads (a replication applier) are handed to the loop; the loop
is the only thread that touches the front-ends' caches, so their check-then-insert needs no
lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from idr.core.service import NodeService
from idr.core.writes import MAX_GROUP, WriteJob
from idr.runtime.follow import FOLLOW_INTERVAL, LogFollower

log = logging.getLogger("idr.runtime")
T = TypeVar("T")

READERS = 4  # threads for blocking store reads (a pool of connections serves them)
MAX_OWN = 100_000  # own seqs remembered for the follower (beyond: it re-notifies, harmlessly)


class NodeRuntime:
    """Writer thread, readers, notification delivery and log follower for one core."""

    def __init__(
        self, service: NodeService, *, follow: float = FOLLOW_INTERVAL, max_group: int = MAX_GROUP
    ) -> None:
        self.service = service
        self.max_group = max_group
        self._queue: deque[tuple[WriteJob, asyncio.Future[None]]] = deque()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._readers: ThreadPoolExecutor | None = None
        # Seqs this process committed: the follower skips them (their listeners already ran).
        self.own: set[int] = set()
        # Groups the writer thread began and finished marking (commit, then ``seen``): a log
        # entry read while a commit was between the two may be ours though not yet in ``own``.
        self.commits_begun = 0
        self.commits_marked = 0
        self.follower = LogFollower(service, self, follow) if follow > 0 else None
        self.groups = 0  # groups committed (a bench reads writes/groups)
        self.grouped = 0  # jobs committed in them

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Attach to ``service`` (its ``submit``/``write`` now come here) and start."""
        self._loop = asyncio.get_running_loop()
        if self.service.reads_may_block:
            self._readers = ThreadPoolExecutor(READERS, thread_name_prefix="idr-reader")
        self._thread = threading.Thread(target=self._run, name="idr-writer", daemon=True)
        self._thread.start()
        self.service.runtime = self
        if self.follower is not None:
            await self.follower.start()

    async def stop(self) -> None:
        """Finish the queued writes, stop the writer, the readers and the follower."""
        if self.follower is not None:
            await self.follower.stop()
        with self._cv:
            self._stopping = True
            self._cv.notify()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
            self._thread = None
        if self._readers is not None:
            self._readers.shutdown(wait=True)
            self._readers = None
        if self.service.runtime is self:
            self.service.runtime = None

    def write_metrics(self) -> dict[str, float]:
        """Gauges for ``/metrics``: how writes share commits (writes ÷ groups = writes per fsync)
        and how many other writers' log entries the follower brought to this node's caches."""
        return {
            "idr_write_groups": float(self.groups),
            "idr_writes_grouped": float(self.grouped),
            "idr_log_entries_followed": float(self.follower.reported if self.follower else 0),
        }

    # ------------------------------------------------------------------ Runtime (idr.core.service)

    async def write(self, job: WriteJob) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._cv:
            if self._stopping or self._thread is None:
                raise RuntimeError("the node's writer is stopped")
            self._queue.append((job, fut))
            self._cv.notify()
        # A cancelled caller does not un-commit its write: the job stays queued, and the writer
        # skips a future already done (no shield: it costs a future and callbacks per write).
        await fut

    async def read(self, fn: Callable[[], T]) -> T:
        if self._readers is None:
            return fn()
        return await asyncio.get_running_loop().run_in_executor(self._readers, fn)

    def seen(self, seqs: Sequence[int]) -> None:
        if len(self.own) > MAX_OWN:
            self.own.clear()
        self.own.update(seqs)

    def notify(self, keys: Sequence[str]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            self.service.notify(keys)
        elif _on(loop):
            self._deliver(keys)
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(self._deliver, keys)

    # ------------------------------------------------------------------ the writer thread

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stopping:
                    self._cv.wait()
                if not self._queue:
                    return
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), self.max_group))]
            jobs = [job for job, _ in batch]
            self.commits_begun += 1
            try:
                keys = self.service.run_group(jobs)
            except BaseException as e:  # a bug in the core: fail the group, keep the writer
                log.exception("write group failed")
                keys = []
                for job in jobs:
                    if job.error is None and not job.seq:
                        job.error = e
            committed = [job.seq for job in jobs if job.seq]
            if committed:
                self.seen(committed)
                self.groups += 1
                self.grouped += len(committed)
            self.commits_marked = self.commits_begun
            by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
            for _, fut in batch:
                by_loop.setdefault(fut.get_loop(), []).append(fut)
            for i, (loop, futs) in enumerate(by_loop.items()):
                with contextlib.suppress(RuntimeError):  # that loop is gone: nobody waits
                    loop.call_soon_threadsafe(self._finish, keys if i == 0 else [], futs)

    def _finish(self, keys: list[str], futs: list[asyncio.Future[None]]) -> None:
        """On the loop: listeners first (no cache may answer the old value once a write is
        acknowledged), then the group's writers resume."""
        if keys:
            self._deliver(keys)
        for fut in futs:
            if not fut.done():
                fut.set_result(None)

    def _deliver(self, keys: Sequence[str]) -> None:
        try:
            self.service.notify(keys)
        except Exception:
            log.exception("a commit listener failed")


def _on(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


__all__ = ["NodeRuntime"]
