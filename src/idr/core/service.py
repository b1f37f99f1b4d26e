"""The node's core: every front-end's ``Request`` is answered here, the same way.

The rules only: no threads, no event loop. Reads go to a bounded record cache first
(``idr.store.cache``). Writes are jobs of the one write path (``idr.core.writes``): a driver
outside the core — the node's writer thread (``idr.runtime``), or :meth:`write_now` for a
tool without an event loop — plans them in groups and commits each group in one
transaction; then the record cache drops the keys it touched and listeners hear of them
(front-ends keep pre-encoded answers and drop them on that signal).

``submit``/``write`` are the asynchronous entry points every front-end uses; they hand the
work to the attached :class:`Runtime` (``idr.runtime.NodeRuntime``, attached by the node's
assembly) and only fall back to doing it inline when none is attached (unit tests, tools).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache, partial
from typing import Any, ClassVar, Protocol, TypeVar

from idr.codec.values import MAX_RECORD_BYTES, encode_admin
from idr.core import authz, stats
from idr.core.interface import Listener, drops_everything
from idr.core.request import WRITE_OPS, Op, Request, Response
from idr.core.site import WRONG_SERVER, Peers, SiteShare
from idr.core.templates import TemplateRegistry
from idr.core.validate import check_record_size, check_values
from idr.core.writes import NO_WAIT, PLANNING, Plan, Staged, WouldBlock, WriteJob, changed_keys
from idr.model.errors import HandleError, ResponseCode
from idr.model.handle import NA_PREFIX, Handle, normalize_key, prefix_handle
from idr.model.site import SiteInfo
from idr.model.value import AdminPermission, AdminRecord, HandleRecord, HandleValue, ValueReference
from idr.store.base import Commit, Store, StoreError, StoreUnavailable, Write, store_failure
from idr.store.cache import MISSING, RecordCache
from idr.store.search import MAX_LIMIT, SearchError, Term, check_page, make_terms

# Homed prefixes are records too (so they are logged and replicated), under a reserved
# prefix that no request can reach: ``0.HOMED/<PREFIX>`` → record named by the prefix.
HOMED_PREFIX = "0.HOMED"
NA_KEY = NA_PREFIX.upper()
DEFAULT_ADMIN_INDEX = 100
_CREATOR_RIGHTS = int(AdminPermission.ALL & ~AdminPermission.LIST_HANDLES)


@lru_cache(maxsize=1024)
def _creator_admin(handle: str, index: int) -> bytes:
    """The HS_ADMIN data a handle created without one gets: its creator, every right but
    listing (encoded once per creator: enum flag arithmetic and the encoder cost per write)."""
    return encode_admin(AdminRecord(handle, index, _CREATOR_RIGHTS))


@lru_cache(maxsize=1024)
def _identity_key(handle: str) -> str | None:
    """The store key of an identity's handle, None if it is no valid handle: a client
    authenticates as the same few identities on every request, parsed once each."""
    try:
        return Handle.parse(handle).key
    except HandleError:
        return None


def _by_index(v: HandleValue) -> int:
    return v.index


MINT_ATTEMPTS = 16
# A search over a site of several servers merges pages in memory: how deep it may page.
SITE_SEARCH_DEPTH = 2 * MAX_LIMIT

T = TypeVar("T")

# Raises HandleError when this node must not take writes now (a mirror, a fenced old primary).
WriteGate = Callable[[], None]
# Completes when the write with this sequence number is as durable as the node's policy asks
# (e.g. held by a mirror in sync replication); raises HandleError when it cannot be.
Durability = Callable[[int], Awaitable[None]]

__all__ = ["HOMED_PREFIX", "Durability", "Listener", "NodeService", "RecordCache", "Runtime", "WriteGate"]


class Runtime(Protocol):
    """What runs the core's work for an asyncio node (``idr.runtime.NodeRuntime``)."""

    async def write(self, job: WriteJob) -> None:
        """Run ``job`` through the write path: planned and committed in the writer's next
        group, listeners notified; returns when committed (the caller waits for durability)."""

    async def read(self, fn: Callable[[], T]) -> T:
        """``fn()`` where it may block (a store read across a network), off the event loop."""

    def notify(self, keys: Sequence[str]) -> None:
        """Deliver ``keys`` to the listeners on the event loop (callable from any thread)."""

    def seen(self, seqs: Sequence[int]) -> None:
        """These log entries were reported already (the log follower skips them)."""


@dataclass(frozen=True, slots=True)
class SiteListing:
    """Listing primitives over every server of a multi-server site."""

    count: Callable[[], int]
    names: Callable[[str | None, int], list[str]]


def _fail(code: ResponseCode, message: str = "") -> HandleError:
    return HandleError(code, message)


def _write_reads(req: Request) -> tuple[str, ...]:
    """The key a write request reads first (its handle's), for the group's prefetch."""
    if req.mint:
        return ()
    try:
        return (Handle.parse(req.handle).key,)
    except HandleError:
        return ()


def _is_admin(v: HandleValue) -> bool:
    return v.type.upper() == "HS_ADMIN"


def replacement_rights(
    old: Iterable[HandleValue], new: Iterable[HandleValue]
) -> tuple[AdminPermission, dict[int, HandleValue]]:
    """The rights replacing ``old`` values with ``new`` needs, index by index, as Handle.Net's
    ``getPermsAndSetTimestampsForCreationWithOverwrite``: add/remove/modify value, the admin
    rights for HS_ADMIN values, both kinds when one becomes the other. Also the old values that
    do not change (they keep their timestamps)."""
    before = {v.index: v for v in old}
    needed = AdminPermission(0)
    unchanged: dict[int, HandleValue] = {}
    for v in new:
        was = before.pop(v.index, None)
        if was is None:
            needed |= AdminPermission.ADD_ADMIN if _is_admin(v) else AdminPermission.ADD_VALUE
        elif replace(was, timestamp=0) == replace(v, timestamp=0):
            unchanged[v.index] = was
        elif _is_admin(was) and _is_admin(v):
            needed |= AdminPermission.MODIFY_ADMIN
        elif _is_admin(was):
            needed |= AdminPermission.REMOVE_ADMIN | AdminPermission.MODIFY_VALUE
        elif _is_admin(v):
            needed |= AdminPermission.MODIFY_VALUE | AdminPermission.ADD_ADMIN
        else:
            needed |= AdminPermission.MODIFY_VALUE
    for was in before.values():
        needed |= AdminPermission.REMOVE_ADMIN if _is_admin(was) else AdminPermission.REMOVE_VALUE
    return needed, unchanged


class NodeService:
    """One node's identifiers: resolution, administration, authorisation."""

    role = "standalone"

    def __init__(
        self,
        store: Store,
        *,
        admins: Iterable[str] = (),
        cache_entries: int = 100_000,
        site_info: SiteInfo | None = None,
        clock: Callable[[], float] = time.time,
        max_list_page: int = 10_000,
        search_access: str = "authenticated",
        templates: TemplateRegistry | None = None,
        max_record_bytes: int = MAX_RECORD_BYTES,
    ) -> None:
        self.store = store
        self.max_list_page = max_list_page  # the most handle names one list answer holds
        # The most a record's encoded values may take (every write: checked where it is staged).
        self.max_record_bytes = max_record_bytes
        self.search_access = search_access  # [search] access: anonymous | authenticated | admins
        # Identifier data templates, checked on every write of a record (core.templates).
        self.templates = templates if templates is not None else TemplateRegistry.builtin()
        self.admins = tuple(ValueReference.parse(a) for a in admins)
        self.site_info = site_info
        self.clock = clock
        self.cache = RecordCache(cache_entries)
        self._listeners: list[Listener] = []
        self._homed: dict[str, str] = {}  # normalised prefix → as first written
        self.write_gate: WriteGate | None = None
        self.durability: Durability | None = None
        self.runtime: Runtime | None = None
        # A site of several servers (idr.core.site): which handles are this server's, and the
        # other servers (attached by the node's assembly with the site link).
        self.share: SiteShare | None = None
        self.peers: Peers | None = None
        self.reload_homed()
        self.counters: dict[str, int] = {"resolutions": 0, "registrations": 0, "writes": 0, "errors": 0}
        # This process's durable counters (idr.core.stats): its own record in the store.
        self.writer_id = stats.new_writer_id()
        self._writer_totals: dict[str, int] = {}

    # ----------------------------------------------------------------- plumbing

    def close(self) -> None:
        self.store.close()

    def add_listener(self, fn: Listener) -> None:
        """``fn(keys)`` runs after every commit with the normalised keys it changed (on the
        event loop when a runtime is attached)."""
        self._listeners.append(fn)

    def notify(self, keys: Sequence[str]) -> None:
        """Tell every listener about ``keys`` now, in this thread (the runtime calls this on
        the event loop; see ``Runtime.notify``)."""
        for fn in self._listeners:
            fn(keys)

    def reload_homed(self) -> None:
        names = self.store.list_handles(HOMED_PREFIX, None, 1_000_000)
        self._homed = {normalize_key(p): p for p in names}

    @property
    def reads_may_block(self) -> bool:
        """Whether a read may wait: on the store (PostgreSQL) or on another server of the site."""
        return self.store.blocking_reads or self.peers is not None

    async def preload(self, handles: Sequence[str]) -> None:
        """See ``Core.preload``: each record not cached is read by the runtime's readers (from
        the store, or from the server of the site that holds it)."""
        if not self.reads_may_block or self.runtime is None:
            return
        for handle in handles:
            try:
                key = Handle.parse(handle).key
            except HandleError:
                continue
            owner = self._remote(key)
            if owner is not None:
                if self.peers is not None and self.peers.cached(owner, key) is MISSING:
                    await self.runtime.read(partial(self.peers.get, owner, [key]))
            elif self.store.blocking_reads and self.cache.lookup(key) is MISSING:
                await self.runtime.read(partial(self.cache.get, key, self.store.get))

    def homed_prefixes(self) -> list[str]:
        """The prefixes this node is home to, sorted by key (from memory: never blocks)."""
        return [self._homed[k] for k in sorted(self._homed)]

    async def publish_site(self, site: SiteInfo) -> list[str]:
        """Keep ``site`` (this node's own, as GET_SITE_INFO answers it) as the HS_SITE of the
        prefix handle of every prefix homed here (``with_own_site``), in one logged write;
        returns the prefix handles it changed. Delegations (``0.NA/<P>`` of prefixes served
        elsewhere, the top's referrals) are not homed here and are never touched."""
        from idr.core.federation import with_own_site  # builds on this module: late

        def job() -> list[str]:
            changed: list[tuple[str, HandleRecord | None]] = []
            for prefix in self.homed_prefixes():
                name = prefix_handle(prefix)
                rec = self._load(normalize_key(name))
                if rec is None:
                    continue
                values = with_own_site(rec.values, site)
                if values is None:
                    continue
                changed.append((name, HandleRecord(rec.handle, self._stamp_changed(rec.values, values))))
            if changed:
                self.stage("site", None, changed)
            return [h for h, _ in changed]

        result: list[str] = await self.write(job)
        return result

    @staticmethod
    def _homed_key(prefix: str) -> str:
        return f"{HOMED_PREFIX}/{normalize_key(prefix)}"

    def _remote(self, key: str) -> int | None:
        """The index of the server of this site that holds ``key`` when it is not this one:
        handles under homed prefixes and prefix handles are spread by the hash; this server's
        own records (homing, applications, statistics) are not."""
        share = self.share
        if share is None:
            return None
        prefix = key.partition("/")[0]
        if prefix != NA_KEY and prefix not in self._homed:
            return None
        owner = share.owner(key)
        return None if owner == share.index else owner

    def site_owner(self, key: str) -> int | None:
        """On a multi-server site, the server holding ``key`` (normalised) if not this one."""
        return self._remote(key) if self.share is not None else None

    def _load_remote(self, owner: int, key: str) -> HandleRecord | None:
        peers = self.peers
        if peers is None:
            raise _fail(ResponseCode.ERROR, f"{key} is on server {owner} of this site, which is not linked")
        if NO_WAIT.get():
            rec = peers.cached(owner, key)
            if rec is MISSING:
                raise WouldBlock(key)
            return rec  # type: ignore[return-value]
        return peers.get(owner, [key]).get(key)

    def _load(self, key: str) -> HandleRecord | None:
        plan = PLANNING.get()
        if plan is not None:
            if key in plan.overlay:
                return plan.overlay[key]
            if key in plan.prefetched:
                return plan.prefetched[key]
        if self.share is not None:
            owner = self._remote(key)
            if owner is not None:
                return self._load_remote(owner, key)
        if NO_WAIT.get() and self.store.blocking_reads:
            rec = self.cache.lookup(key)
            if rec is MISSING:
                raise WouldBlock(key)
            return rec  # type: ignore[return-value]
        return self.cache.get(key, self.store.get)

    def _values_of(self, key: str) -> tuple[HandleValue, ...] | None:
        record = self._load(key)
        return record.values if record is not None else None

    def _commit(self, op: str, actor: ValueReference | str | None, writes: Sequence[Write]) -> int:
        """Stage ``writes`` as the current write job's commit (see ``idr.core.writes``); the
        job's seq is known once its group commits (0 until then)."""
        plan = PLANNING.get()
        if plan is None:
            raise RuntimeError("a write outside the write path: run it as a job (write/submit)")
        for w in writes:
            if w.record is not None:
                check_record_size(
                    w.record.handle, w.record.values, self.max_record_bytes, partial(self._values_of, w.key)
                )
        staged = plan.staged
        if staged is None:
            plan.staged = Staged(op, str(actor or ""), list(writes))
        else:  # one job, one transaction, one log entry
            staged.writes.extend(writes)
        return 0

    def stage(
        self, op: str, actor: ValueReference | None, records: Sequence[tuple[str, HandleRecord | None]]
    ) -> None:
        """Inside a write job: write ``records`` (internal ones too: applications, filings,
        prefix handles, homing) as this job's one logged transaction."""
        self._commit(op, actor, [Write(normalize_key(k), r) for k, r in records])

    def on_external_commit(self, keys: Sequence[str], seqs: Sequence[int] = ()) -> None:
        """A change applied to the store by someone else (a replication follower, another
        process followed through the log): drop cached copies now, tell listeners on the loop.
        ``seqs``: the log entries it was (the log follower need not report them again)."""
        self.cache.invalidate(keys)
        if drops_everything(keys):
            self.reload_homed()
        if self.runtime is not None:
            self.runtime.seen(seqs)
            self.runtime.notify(keys)
        else:
            self.notify(keys)

    # ----------------------------------------------------------------- the write path

    def run_group(self, jobs: Sequence[WriteJob]) -> list[str]:
        """Plan and commit ``jobs`` (the driver's one group at a time; see ``idr.core.writes``).

        Each job ends with ``result`` or ``error`` and, when it committed, ``seq``. Returns
        the keys the group changed (for the listeners). Splits into several transactions
        where a job needs one of its own (an import batch) or changes the homed prefixes
        (later jobs must be planned against the new set)."""
        changed: list[str] = []
        rest = list(jobs)
        while rest:
            plan = Plan(prefetched=self._prefetch(rest))
            planned: list[WriteJob] = []
            while rest:
                job = rest[0]
                # An import batch is only ever planned first (below), and commits alone.
                if planned and planned[0].staged is not None and planned[0].staged.bulk is not None:
                    break
                rest.pop(0)
                self._plan(job, plan)
                if job.staged is None:
                    continue
                if job.staged.bulk is not None and planned:
                    rest.insert(0, job)  # an import batch commits alone: next transaction
                    job.staged = None
                    break
                planned.append(job)
                if job.staged.bulk is None:
                    plan.overlay.update((w.key, w.record) for w in job.staged.writes)
                if drops_everything(job.changed()):
                    break
            if planned:
                self._commit_planned(planned)
                # The writer's counter record is no listener's business (nothing serves it).
                changed.extend(k for k in changed_keys(planned) if not stats.is_counter_key(k))
        return list(dict.fromkeys(changed))

    def _prefetch(self, jobs: Sequence[WriteJob]) -> dict[str, HandleRecord | None]:
        """The records the jobs name (``WriteJob.reads``) that the cache lacks, in one store
        query; absent keys map to None."""
        wanted = [
            k for j in jobs for k in j.reads if self.cache.lookup(k) is MISSING and self._remote(k) is None
        ]
        if len(wanted) < 2:
            return {}  # one key: the ordinary cached read costs the same
        try:
            found = self.store.get_many(wanted)
        except StoreError:
            return {}  # planning reads them one by one (and reports the failure there)
        return {k: found.get(k) for k in wanted}

    def _plan(self, job: WriteJob, plan: Plan) -> None:
        plan.staged = None
        plan.counts = {}
        token = PLANNING.set(plan)
        try:
            job.result = job.fn()
            job.error = None
        except Exception as e:  # the job's own failure: never its group's
            job.error = e
            job.result = None
        finally:
            PLANNING.reset(token)
        staged, plan.staged = plan.staged, None
        ok = job.error is None and not (isinstance(job.result, Response) and not job.result.ok)
        job.staged = (
            staged if ok and staged is not None and (staged.writes or staged.bulk is not None) else None
        )
        if job.staged is not None:
            job.staged.counts = plan.counts
        plan.counts = {}

    def _commit_planned(self, planned: list[WriteJob]) -> None:
        counted = self._count_in(planned)
        keys = list(dict.fromkeys(k for j in planned for k in j.changed()))
        try:
            if len(planned) == 1 and planned[0].staged and planned[0].staged.bulk is not None:
                st = planned[0].staged
                seqs = [self.store.bulk_load(st.bulk or (), st.op, st.actor, checkpoint=st.checkpoint)]
            else:
                commits = [Commit(s.op, s.actor, tuple(s.writes)) for s in (j.staged for j in planned) if s]
                seqs = self.store.commit_many(commits)
        except StoreError as e:
            self.cache.invalidate(keys)  # even a failed commit drops cached copies
            if isinstance(e, StoreUnavailable):
                # The store is out of reach: every job of the group is told so now (one by one
                # they would each wait for a connection in turn).
                for job in planned:
                    job.staged = None
                    job.error = store_failure(e)
                    job.result = None
                return
            if len(planned) > 1:
                # The engine refused the group: each job again on its own, so only the one
                # it refuses fails (re-planned: earlier jobs' overlay is gone).
                for job in planned:
                    job.staged = None
                    self.run_group([job])
                return
            job = planned[0]
            job.staged = None
            job.error = store_failure(e)
            job.result = None
            return
        self.cache.invalidate(keys)
        if counted is not None:
            self._writer_totals = counted
        if drops_everything(keys):
            self.reload_homed()
        for job, seq in zip(planned, seqs, strict=True):
            job.seq = seq
            if isinstance(job.result, Response):
                job.result = replace(job.result, seq=seq)
        self.counters["writes"] += len(planned)

    def _count_in(self, planned: list[WriteJob]) -> dict[str, int] | None:
        """Add this transaction's counts (``idr.core.stats.count``) to this writer's counter
        record, written by the transaction's last job; the new totals, or None if nothing
        counted. The totals in memory move only once the transaction commits."""
        deltas = stats.sum_counts([j.staged.counts for j in planned if j.staged and j.staged.counts])
        if not any(deltas.values()):
            return None
        totals = stats.add_counts(dict(self._writer_totals), deltas)
        record = stats.counters_record(self.writer_id, totals)
        last = planned[-1].staged
        assert last is not None
        if last.bulk is not None:
            last.bulk.append(record)
        else:
            last.writes.append(Write(stats.writer_key(self.writer_id), record))
        return totals

    def durable_counts(self) -> dict[str, int]:
        """Identifiers registered and deleted, prefixes allocated and filed, since the store
        was made (every writer's record; see ``idr.core.stats``). May block on the store."""
        return stats.durable_counts(self.store)

    def write_now(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` as a write job right here, alone (the write path's synchronous driver,
        for tools and tests without an event loop; no durability wait). A running node's
        writes go through :meth:`write` / :meth:`submit` instead."""
        if self.runtime is not None:
            raise RuntimeError("this node's writes go through its writer: use write()/submit()")
        if self.write_gate is not None:
            self.write_gate()
        job = self._run_inline(WriteJob(fn))
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[no-any-return]

    def _run_inline(self, job: WriteJob) -> WriteJob:
        keys = self.run_group([job])
        if keys:
            self.notify(keys)
        return job

    async def write(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (rules, then ``stage``) as a write job of the node's write path:
        write gate → group commit → listeners → durability wait. Returns ``fn``'s result;
        raises its error, or HandleError when the write gate or durability refuses."""
        job = await self.write_job(fn)
        return job.result  # type: ignore[no-any-return]

    async def write_job(self, fn: Callable[[], Any], reads: tuple[str, ...] = ()) -> WriteJob:
        """:meth:`write`, returning the finished job (its ``seq``, 0 if nothing was staged);
        ``reads``: keys ``fn`` will read (see ``WriteJob.reads``)."""
        if self.write_gate is not None:
            self.write_gate()
        job = WriteJob(fn, reads)
        if self.runtime is None:
            self._run_inline(job)
        else:
            await self.runtime.write(job)
        if job.error is not None:
            raise job.error
        if job.seq and self.durability is not None:
            await self.durability(job.seq)
        return job

    # ----------------------------------------------------------------- entry points

    def handle(self, req: Request) -> Response:
        """Answer one request synchronously; every failure becomes a Response with its code.
        Writes run through :meth:`write_now` (tools and tests); front-ends use ``submit``."""
        if req.op in WRITE_OPS:
            try:
                return self.write_now(lambda: self._execute(req))
            except HandleError as e:
                self.counters["errors"] += 1
                return Response(e.code, req.handle, message=e.message)
        return self._execute(req)

    def _execute(self, req: Request) -> Response:
        try:
            return self._dispatch(req)
        except StoreError as e:
            return self._execute_failed(req, store_failure(e))
        except HandleError as e:
            return self._execute_failed(req, e)

    def _execute_failed(self, req: Request, e: HandleError) -> Response:
        self.counters["errors"] += 1
        return Response(e.code, req.handle, message=e.message)

    # Reads that always leave the event loop: they walk the store beyond one record.
    _OFF_LOOP: ClassVar[frozenset[Op]] = frozenset({Op.LIST_HANDLES, Op.SEARCH})

    def answer_now(self, req: Request) -> Response | None:
        """A read's answer if it needs no waiting: from the record cache (any engine) or an
        embedded store; None when a store read could block, or for a list (``submit`` it)."""
        if req.op in WRITE_OPS or req.op in self._OFF_LOOP:
            return None
        if self.share is not None and self._relay_to(req) is not None:
            return None
        token = NO_WAIT.set(True)
        try:
            return self._execute(req)
        except WouldBlock:
            return None
        finally:
            NO_WAIT.reset(token)

    async def submit(self, req: Request) -> Response:
        """Any request, for asyncio front-ends: reads answered at once or off the loop; writes
        through :meth:`write`, acknowledged only once durable by the node's policy."""
        if self.share is not None:
            owner = self._relay_to(req)
            if owner is not None:
                return await self._relay(owner, req)
        if req.op not in WRITE_OPS:
            resp = self.answer_now(req)
            if resp is not None:
                return resp
            if self.runtime is None:
                return self._execute(req)
            return await self.runtime.read(lambda: self._execute(req))
        try:
            job = await self.write_job(lambda: self._execute(req), reads=_write_reads(req))
            return job.result  # type: ignore[no-any-return]
        except HandleError as e:
            self.counters["errors"] += 1
            return Response(e.code, req.handle, message=e.message)

    def _dispatch(self, req: Request) -> Response:
        match req.op:
            case Op.RESOLUTION:
                return self.resolve(req)
            case Op.GET_SITE_INFO:
                if self.site_info is None:
                    raise _fail(ResponseCode.OPERATION_NOT_SUPPORTED, "this node has no site info")
                return Response(ResponseCode.SUCCESS, req.handle, extra={"site": self.site_info})
            case Op.CREATE_HANDLE:
                return self.create(req)
            case Op.DELETE_HANDLE:
                return self.delete(req)
            case Op.ADD_VALUE:
                return self.add_values(req)
            case Op.MODIFY_VALUE:
                return self.modify_values(req)
            case Op.REMOVE_VALUE:
                return self.remove_values(req)
            case Op.LIST_HANDLES:
                return self.list_handles(req)
            case Op.HOME_NA:
                return self.home(req, True)
            case Op.UNHOME_NA:
                return self.home(req, False)
            case Op.LIST_HOMED_NAS:
                return Response(ResponseCode.SUCCESS, handles=tuple(sorted(self.homed_prefixes())))
            case Op.SEARCH:
                return self.search(req)
        raise _fail(ResponseCode.OPERATION_NOT_SUPPORTED, f"operation {req.op} not supported")

    # ----------------------------------------------------------------- a site of several servers

    # Requests about one handle: relayed whole to the server that holds it.
    _HANDLE_OPS: ClassVar[frozenset[Op]] = frozenset(
        {Op.RESOLUTION, Op.CREATE_HANDLE, Op.DELETE_HANDLE, Op.ADD_VALUE, Op.MODIFY_VALUE, Op.REMOVE_VALUE}
    )

    def _relay_to(self, req: Request) -> int | None:
        """The server of this site to relay ``req`` to (see ``Request.relay``), or None to
        answer here: a list is answered here from every server's share (``list_handles``)."""
        share = self.share
        if share is None or self.peers is None or not (req.relay or share.relay_native):
            return None
        if req.op not in self._HANDLE_OPS or req.mint:  # a minted name is one this server holds
            return None
        try:
            key = Handle.parse(req.handle).key
        except HandleError:
            return None  # answered here, with its error
        return self._remote(key)

    async def _relay(self, owner: int, req: Request) -> Response:
        peers = self.peers
        assert peers is not None
        call = partial(peers.call, owner, replace(req, relay=False))
        try:
            return await self.runtime.read(call) if self.runtime is not None else call()
        except HandleError as e:
            return Response(e.code, req.handle, message=e.message)

    async def read_local(self, keys: Sequence[str]) -> dict[str, HandleRecord | None]:
        """Records as this server holds them (another server of the site asks, over the link)."""

        def read() -> dict[str, HandleRecord | None]:
            return {k: self.cache.get(k, self.store.get) for k in keys}

        return await self.runtime.read(read) if self.runtime is not None else read()

    async def take_records(self, items: Sequence[tuple[str, HandleRecord | None]]) -> int:
        """Store records exactly as another server of the site held them (values, timestamps;
        None deletes): re-sharing moves handles this way. One logged transaction."""
        writes = [Write(normalize_key(k), r) for k, r in items]
        if writes:
            await self.write(lambda: self._commit("site-take", "site", writes))
        return len(writes)

    def _check_share(self, h: Handle) -> None:
        """Refuse a handle this server of a multi-server site does not hold (Handle.Net checks
        the hash before anything else: ``HandleServer.errorIfNotHaveHandle``)."""
        if self.share is not None and self._remote(h.key) is not None:
            raise _fail(ResponseCode.SERVER_NOT_RESPONSIBLE, WRONG_SERVER)

    # ----------------------------------------------------------------- responsibility

    def is_responsible(self, h: Handle) -> bool:
        """A node answers for handles under its homed prefixes, and for their prefix handles;
        on a multi-server site, for those the site's hash gives this server."""
        if self.share is not None and self._remote(h.key) is not None:
            return False
        return self._serves(h)

    def _serves(self, h: Handle) -> bool:
        homed = self._homed
        if h.is_prefix_handle:
            if NA_PREFIX.upper() in homed:
                return True
            name = normalize_key(h.suffix)
        else:
            name = normalize_key(h.prefix)
        # A homed prefix also covers derived prefixes under it only if homed itself.
        return name in homed

    def _parse(self, handle: str, *, hashed: bool = True) -> Handle:
        """``handle`` parsed, if this node answers for it (``hashed``: and holds it, on a
        multi-server site; False for a prefix named as the scope of a list or a mint)."""
        h = Handle.parse(handle)
        if hashed:
            self._check_share(h)
        if not self._serves(h):
            raise _fail(ResponseCode.SERVER_NOT_RESPONSIBLE, "That prefix doesn't live here")
        return h

    # ----------------------------------------------------------------- authorisation

    def _lookup(self, key: str) -> HandleRecord | None:
        return self._load(key)

    def is_server_admin(self, identity: ValueReference) -> bool:
        return any(authz.is_member(identity, a, self._lookup) for a in self.admins)

    def _require_identity(self, req: Request) -> ValueReference:
        if req.identity is None:
            raise _fail(ResponseCode.AUTHENTICATION_NEEDED, "authentication needed for this operation")
        return req.identity

    def _allowed(self, identity: ValueReference, record: HandleRecord | None, perm: AdminPermission) -> bool:
        if self.is_server_admin(identity):
            return True
        return record is not None and authz.grants(
            identity, authz.admin_records(record.values), perm, self._lookup
        )

    def _parent_record(self, h: Handle) -> HandleRecord | None:
        """The prefix handle whose admins govern creating ``h``."""
        if h.is_prefix_handle:
            parent, dot, _ = h.suffix.rpartition(".")
            return self._load(normalize_key(prefix_handle(parent))) if dot else None
        return self._load(normalize_key(prefix_handle(h.prefix)))

    def _require(
        self, identity: ValueReference, record: HandleRecord | None, perm: AdminPermission, what: str
    ) -> None:
        if not self._allowed(identity, record, perm):
            raise _fail(ResponseCode.INSUFFICIENT_PERMISSIONS, f"{identity} may not {what}")

    def authenticate_secret(self, identity: ValueReference, secret: bytes) -> bool:
        """Check ``secret`` against the identity's HS_SECKEY value (index 0: any of them). An
        empty secret proves nothing, whatever an old record holds."""
        if not secret:
            return False
        key = _identity_key(identity.handle)
        if key is None:
            return False
        record = self._load(key)
        if record is None:
            return False
        ok = False
        for v in record.values:
            if v.type.upper() == "HS_SECKEY" and identity.index in (0, v.index):
                ok |= hmac.compare_digest(v.data, secret)
        return ok

    def identity_values(self, identity: ValueReference, type_: str) -> list[HandleValue]:
        """The key values (HS_PUBKEY, HS_SECKEY) that authenticate ``identity``."""
        key = _identity_key(identity.handle)
        if key is None:
            return []
        record = self._load(key)
        if record is None:
            return []
        return [v for v in record.values if v.type.upper() == type_ and identity.index in (0, v.index)]

    # ----------------------------------------------------------------- reads

    def resolve(self, req: Request) -> Response:
        h = self._parse(req.handle)
        self.counters["resolutions"] += 1
        record = self._load(h.key)
        if record is None:
            raise _fail(ResponseCode.HANDLE_NOT_FOUND, "handle not found")
        values: Iterable[HandleValue] = record.values
        if req.indexes or req.types:
            idx = set(req.indexes)
            values = [v for v in values if v.index in idx or any(v.type_matches(t) for t in req.types)]
        values = list(values)
        private = [v for v in values if not v.public_read]
        if private:
            if req.public_only:
                values = [v for v in values if v.public_read]
            elif req.identity is None:
                raise _fail(ResponseCode.AUTHENTICATION_NEEDED, "non-public values need authentication")
            elif not self._allowed(req.identity, record, AdminPermission.READ_VALUE):
                raise _fail(ResponseCode.INSUFFICIENT_PERMISSIONS, f"{req.identity} may not read values")
            else:
                values = [v for v in values if v.public_read or v.admin_read]
        if not values:
            raise _fail(ResponseCode.VALUES_NOT_FOUND, "no values match")
        return Response(ResponseCode.SUCCESS, req.handle, tuple(values))

    def list_handles(self, req: Request) -> Response:
        """Handles under a prefix, given as ``P`` or ``0.NA/P``; paged by key."""
        prefix = req.handle
        if "/" in prefix:
            h = Handle.parse(prefix)
            if not h.is_prefix_handle:
                raise _fail(ResponseCode.INVALID_HANDLE, "list handles wants a prefix or 0.NA/<prefix>")
            prefix = h.suffix
        # Not hashed: on a multi-server site every server lists its own share (as Handle.Net's
        # servers do; its clients ask each), and a relaying front-end gets them all merged.
        h = Handle.parse(prefix_handle(prefix))
        if not self._serves(h):
            raise _fail(ResponseCode.SERVER_NOT_RESPONSIBLE, "That prefix doesn't live here")
        identity = self._require_identity(req)
        self._require(identity, self._load(h.key), AdminPermission.LIST_HANDLES, f"list {prefix}")
        pkey = normalize_key(prefix)
        listing = self._site_listing(req, prefix, pkey) if self._lists_site(req) else None
        count = listing.count if listing else partial(self.store.count, pkey)
        names = listing.names if listing else partial(self.store.list_handles, pkey)
        limit = self.max_list_page
        size = req.page_size
        if req.page is not None and size is not None and size >= 0:
            if size > limit:
                raise _fail(
                    ResponseCode.INVALID_VALUE, f"pageSize {size} is more than this node's limit of {limit}"
                )
            total = count()
            if size == 0:
                return Response(ResponseCode.SUCCESS, prefix, total=total)
            # Skip to the page by key, up to ``limit`` names a step (never an OFFSET scan, never
            # one query per page of a page number the client made up); past the end: nothing.
            skip = req.page * size
            after = None
            while 0 < skip < total:
                chunk = names(after, min(skip, limit))
                if not chunk:
                    break
                after = normalize_key(chunk[-1])
                skip -= len(chunk)
            page = names(after, size) if skip == 0 else []
            return Response(ResponseCode.SUCCESS, prefix, handles=tuple(page), total=total)
        if req.after is not None or size is not None:
            n = min(size, limit) if size and size > 0 else min(1000, limit)
            page = names(normalize_key(req.after) if req.after else None, n)
            return Response(ResponseCode.SUCCESS, prefix, handles=tuple(page), total=count())
        # Everything, in one answer (the native protocol cannot page): at most ``limit`` names.
        everything = names(None, limit + 1)
        if len(everything) > limit:
            raise _fail(
                ResponseCode.INVALID_VALUE,
                f"more than {limit} handles under {prefix}: list them page by page "
                f"(GET /api/handles?prefix={prefix}&page=0&pageSize={limit}), or raise max_list_page",
            )
        return Response(ResponseCode.SUCCESS, prefix, handles=tuple(everything), total=len(everything))

    def _lists_site(self, req: Request) -> bool:
        share = self.share
        return share is not None and self.peers is not None and (req.relay or share.relay_native)

    def _site_listing(self, req: Request, prefix: str, pkey: str) -> SiteListing:
        """The names under ``prefix`` on every server of the site, merged in key order: each
        server lists its own share (a request that is not relayed further)."""
        peers, share = self.peers, self.share
        assert peers is not None and share is not None
        others = [i for i in range(share.size) if i != share.index]

        def ask(i: int, **kw: Any) -> Response:
            fields: dict[str, Any] = {"relay": False, "page": None, "after": None, **kw}
            resp = peers.call(i, replace(req, **fields))
            if not resp.ok:
                raise _fail(resp.code, f"server {i} of this site: {resp.message}")
            return resp

        def count() -> int:
            return self.store.count(pkey) + sum(ask(i, page=0, page_size=0).total or 0 for i in others)

        def names(after: str | None, n: int) -> list[str]:
            found = list(self.store.list_handles(pkey, after, n))
            for i in others:
                found += ask(i, after=after, page_size=n).handles
            return sorted(found, key=normalize_key)[:n]

        return SiteListing(count, names)

    def search(self, req: Request) -> Response:
        """Reverse lookup: handles with values of each term's type matching its pattern
        (``idr.store.search``), for whom ``[search] access`` allows. Only public values are
        indexed, so a search shows nothing a resolution would not."""
        if self.search_access != "anonymous":
            identity = self._require_identity(req)
            if self.search_access == "admins" and not self.is_server_admin(identity):
                raise _fail(ResponseCode.INSUFFICIENT_PERMISSIONS, f"{identity} may not search: admins only")
        try:
            terms = make_terms(req.terms)
            limit, offset = check_page(req.page_size, req.offset)
            if self._lists_site(req):
                handles = self._site_search(req, terms, limit, offset)
            else:
                handles = self.store.search(terms, limit, offset)
        except SearchError as e:
            code = (
                ResponseCode.OPERATION_NOT_SUPPORTED
                if self.store.search_mode == "off"
                else ResponseCode.PROTOCOL_ERROR
            )
            raise _fail(code, str(e)) from e
        except StoreError as e:
            raise store_failure(e) from e
        return Response(ResponseCode.SUCCESS, handles=tuple(handles))

    def _site_search(self, req: Request, terms: Sequence[Term], limit: int, offset: int) -> list[str]:
        """A search over every server of the site, merged in key order as one store's would be:
        the page ``[offset, offset + limit)`` of the merge holds at most ``offset + limit``
        names from any one server, so each is asked for that many (a request not relayed
        further), and no more than ``SITE_SEARCH_DEPTH`` (deeper pages: narrow the search)."""
        peers, share = self.peers, self.share
        assert peers is not None and share is not None
        depth = offset + limit
        if depth > SITE_SEARCH_DEPTH:
            raise SearchError(
                f"page past the first {SITE_SEARCH_DEPTH} results of a site of {share.size} servers "
                f"(page {offset} + limit {limit}): narrow the search"
            )
        found = list(self.store.search(terms, depth, 0))
        for i in range(share.size):
            if i == share.index:
                continue
            resp = peers.call(i, replace(req, relay=False, page_size=depth, offset=0))
            if not resp.ok:
                raise _fail(resp.code, f"server {i} of this site: {resp.message}")
            found += resp.handles
        merged = sorted(set(found), key=normalize_key)
        return merged[offset : offset + limit]

    # ----------------------------------------------------------------- writes

    def _stamp_changed(
        self, before: Iterable[HandleValue], after: Iterable[HandleValue]
    ) -> tuple[HandleValue, ...]:
        """``after`` with the values that are not in ``before`` stamped now."""
        old = {v.index: v for v in before}
        now = int(self.clock())
        return tuple(v if old.get(v.index) == v else v.with_timestamp(now) for v in after)

    def _stamp(self, values: Iterable[HandleValue]) -> tuple[HandleValue, ...]:
        now = int(self.clock())
        return tuple(sorted((v.with_timestamp(now) for v in values), key=_by_index))

    def _mint(self, base: str) -> Handle:
        if not base.endswith("/"):
            base += "/" if "/" not in base else ""
        # On a multi-server site only a name this server holds (one in ``share.size`` is).
        for _ in range(MINT_ATTEMPTS * (self.share.size if self.share else 1)):
            candidate = Handle.parse(base + secrets.token_hex(8).upper())
            if self.share is not None and self._remote(candidate.key) is not None:
                continue
            if self._load(candidate.key) is None:
                return candidate
        raise _fail(ResponseCode.ERROR, "could not mint a unique suffix")

    def create(self, req: Request) -> Response:
        identity = self._require_identity(req)
        if req.mint:
            prefix = req.handle.partition("/")[0]
            self._parse(prefix_handle(prefix) if prefix else req.handle, hashed=False)
            h = self._mint(req.handle)
        else:
            h = self._parse(req.handle)
        values = check_values(req.values, allow_empty=True)
        existing = self._load(h.key)
        perm = AdminPermission.ADD_DERIVED_PREFIX if h.is_prefix_handle else AdminPermission.ADD_HANDLE
        if existing is not None and not req.overwrite:
            raise _fail(ResponseCode.HANDLE_ALREADY_EXISTS, f"handle {h} already exists")
        if not any(v.type.upper() == "HS_ADMIN" for v in values):
            values = (*values, self._default_admin(identity, values))
        if existing is None:
            if not self._allowed(identity, self._parent_record(h), perm):
                raise _fail(ResponseCode.INSUFFICIENT_PERMISSIONS, f"{identity} may not create handles here")
            stamped = self._stamp(values)
        else:
            stamped = self._require_replace(identity, h, existing, values, perm)
        name = str(h) if req.mint or existing is None else existing.handle
        record = HandleRecord(name, stamped)
        self._check_template(str(h), existing, record)
        self._commit("create", identity, [Write(h.key, record)])
        self.counters["registrations"] += 1
        if existing is None and not h.is_prefix_handle:
            stats.count(stats.REGISTERED)
        return Response(
            ResponseCode.SUCCESS,
            str(h) if req.mint else req.handle,
            extra={"created": existing is None},
        )

    def _require_replace(
        self,
        identity: ValueReference,
        h: Handle,
        existing: HandleRecord,
        values: Sequence[HandleValue],
        create_perm: AdminPermission,
    ) -> tuple[HandleValue, ...]:
        """Create with overwrite replaces a whole record: allowed, as Handle.Net's server allows
        it (``HandleServer.doCreateHandle``), to one admin record holding every right the
        changes need; or to one that may add admins (it could grant itself the rest); or to
        one that may delete the record and create it again. Values that do not change keep
        their timestamps. Returns the values to store."""
        needed, kept = replacement_rights(existing.values, values)
        ok = (
            not needed
            or (not needed & AdminPermission.ADD_ADMIN and self._allowed(identity, existing, needed))
            or self._allowed(identity, existing, AdminPermission.ADD_ADMIN)
            or (
                self._allowed(identity, existing, AdminPermission.DELETE_HANDLE)
                and self._allowed(identity, self._parent_record(h), create_perm)
            )
        )
        if not ok:
            rights = ", ".join(p.name.lower() for p in AdminPermission if p in needed and p.name)
            raise _fail(
                ResponseCode.INSUFFICIENT_PERMISSIONS, f"{identity} may not replace {h} (it needs {rights})"
            )
        now = int(self.clock())
        return tuple(sorted((kept.get(v.index) or v.with_timestamp(now) for v in values), key=_by_index))

    def _default_admin(self, identity: ValueReference, values: Sequence[HandleValue]) -> HandleValue:
        """A handle written without HS_ADMIN gets its creator as admin, so someone can manage it."""
        used = {v.index for v in values}
        index = DEFAULT_ADMIN_INDEX
        while index in used:
            index += 1
        return HandleValue(index, "HS_ADMIN", _creator_admin(identity.handle, identity.index))

    def _existing(self, handle: str) -> tuple[Handle, HandleRecord]:
        h = self._parse(handle)
        record = self._load(h.key)
        if record is None:
            raise _fail(ResponseCode.HANDLE_NOT_FOUND, f"handle {h} not found")
        return h, record

    def delete(self, req: Request) -> Response:
        identity = self._require_identity(req)
        h, record = self._existing(req.handle)
        self._require(identity, record, AdminPermission.DELETE_HANDLE, f"delete {h}")
        self._commit("delete", identity, [Write(h.key, None)])
        if not h.is_prefix_handle:
            stats.count(stats.DELETED)
        return Response(ResponseCode.SUCCESS, req.handle)

    # Which right a value change needs: admin values are guarded by the *_ADMIN rights.
    _VALUE_RIGHTS: ClassVar[dict[str, tuple[AdminPermission, AdminPermission]]] = {
        "add": (AdminPermission.ADD_VALUE, AdminPermission.ADD_ADMIN),
        "modify": (AdminPermission.MODIFY_VALUE, AdminPermission.MODIFY_ADMIN),
        "remove": (AdminPermission.REMOVE_VALUE, AdminPermission.REMOVE_ADMIN),
    }

    def _require_value_right(
        self, identity: ValueReference, h: Handle, record: HandleRecord, v: HandleValue, change: str
    ) -> None:
        value_right, admin_right = self._VALUE_RIGHTS[change]
        right = admin_right if v.type.upper() == "HS_ADMIN" else value_right
        self._require(identity, record, right, f"{change} value {v.index} of {h}")

    def add_values(self, req: Request) -> Response:
        return self._write_values(req, adding=True)

    def modify_values(self, req: Request) -> Response:
        return self._write_values(req, adding=False)

    def _write_values(self, req: Request, *, adding: bool) -> Response:
        """Add (replacing existing indexes only with ``overwrite``) or modify (indexes must exist)."""
        identity = self._require_identity(req)
        h, record = self._existing(req.handle)
        values = check_values(req.values)
        current = {v.index: v for v in record.values}
        for v in values:
            old = current.get(v.index)
            if old is None:
                if not adding:
                    raise _fail(ResponseCode.VALUES_NOT_FOUND, f"value {v.index} of {h} not found")
                self._require_value_right(identity, h, record, v, "add")
                continue
            if adding and not req.overwrite:
                raise _fail(ResponseCode.VALUE_ALREADY_EXISTS, f"value {v.index} of {h} already exists")
            self._require_value_right(identity, h, record, old, "modify")
            self._require_value_right(identity, h, record, v, "modify")
        current.update({v.index: v for v in self._stamp(values)})
        return self._replace(h, record, current, "add" if adding else "modify", identity)

    def remove_values(self, req: Request) -> Response:
        identity = self._require_identity(req)
        h, record = self._existing(req.handle)
        if not req.indexes:
            raise _fail(ResponseCode.INVALID_VALUE, "no value indexes given to remove")
        current = {v.index: v for v in record.values}
        for i in req.indexes:
            old = current.get(i)
            if old is None:
                raise _fail(ResponseCode.VALUES_NOT_FOUND, f"value {i} of {h} not found")
            self._require_value_right(identity, h, record, old, "remove")
        for i in req.indexes:
            current.pop(i, None)
        return self._replace(h, record, current, "remove", identity)

    def _replace(
        self, h: Handle, record: HandleRecord, values: dict[int, HandleValue], op: str, actor: ValueReference
    ) -> Response:
        new = HandleRecord(record.handle, tuple(values[i] for i in sorted(values)))
        self._check_template(str(h), record, new)
        self._commit(op, actor, [Write(h.key, new)])
        return Response(ResponseCode.SUCCESS, str(h))

    def _check_template(self, handle: str, before: HandleRecord | None, after: HandleRecord) -> None:
        """The record a write leaves must satisfy the template it claims (and keep claiming one):
        creates, value changes and removals alike (core.templates)."""
        errors = self.templates.check_change(before.values if before else None, after.values)
        if errors is not None:
            raise _fail(ResponseCode.INVALID_VALUE, errors.message(handle))

    def home(self, req: Request, home: bool) -> Response:
        identity = self._require_identity(req)
        if not self.is_server_admin(identity):
            raise _fail(ResponseCode.INSUFFICIENT_PERMISSIONS, f"{identity} is not an admin of this server")
        prefix = req.handle
        if "/" in prefix:
            h = Handle.parse(prefix)
            if not h.is_prefix_handle:
                raise _fail(ResponseCode.INVALID_HANDLE, "home/unhome wants a prefix or 0.NA/<prefix>")
            prefix = h.suffix
        Handle.parse(prefix_handle(prefix))
        key = self._homed_key(prefix)
        rec = HandleRecord(prefix, ()) if home else None
        writes = [Write(key, rec)]
        handle = self._load(normalize_key(prefix_handle(prefix)))
        if handle is not None and self.site_info is not None:
            from idr.core.federation import with_own_site, without_own_site  # build on this module

            # The prefix handle names this node while it serves the prefix (publish_site), and
            # stops when it no longer does: it would refer the prefix's handles to itself.
            values = (with_own_site if home else without_own_site)(handle.values, self.site_info)
            if values is not None:
                changed = HandleRecord(handle.handle, self._stamp_changed(handle.values, values))
                writes.append(Write(normalize_key(prefix_handle(prefix)), changed))
        self._commit("home" if home else "unhome", identity, writes)
        return Response(ResponseCode.SUCCESS, prefix)

    async def import_records(
        self,
        records: Sequence[HandleRecord],
        actor: str = "import",
        checkpoint: tuple[str, int] | None = None,
    ) -> int:
        """Store already-validated records in one logged transaction (the write path's bulk
        job: ``COPY`` on PostgreSQL); returns how many.

        ``checkpoint`` (name, line) is stored in the same transaction, so a resumed import
        knows exactly which batches landed.
        """
        n: int = await self.write(self._import_job(records, actor, checkpoint))
        return n

    def import_now(
        self,
        records: Sequence[HandleRecord],
        actor: str = "import",
        checkpoint: tuple[str, int] | None = None,
    ) -> int:
        """:meth:`import_records` through the synchronous driver (``write_now``)."""
        n: int = self.write_now(self._import_job(records, actor, checkpoint))
        return n

    def _import_job(
        self, records: Sequence[HandleRecord], actor: str, checkpoint: tuple[str, int] | None
    ) -> Callable[[], int]:
        stamped = [HandleRecord(r.handle, self._stamp(r.values)) for r in records]
        for r in stamped:  # the importer refuses such lines first, one by one
            check_record_size(r.handle, r.values, self.max_record_bytes)

        def job() -> int:
            plan = PLANNING.get()
            if plan is None:  # pragma: no cover - the drivers always plan
                raise RuntimeError("import outside the write path")
            if stamped or checkpoint is not None:
                plan.staged = Staged("import", actor, bulk=list(stamped), checkpoint=checkpoint)
            self.counters["registrations"] += len(stamped)
            stats.count(stats.REGISTERED, self._new_names(stamped))
            return len(stamped)

        return job

    def _new_names(self, records: Sequence[HandleRecord]) -> int:
        """How many distinct identifiers among ``records`` the store does not hold yet (an
        import replaces existing ones: only new ones are registrations). One query."""
        keys = {normalize_key(r.handle) for r in records if not Handle.parse(r.handle).is_prefix_handle}
        if not keys:
            return 0
        return len(keys) - len(self.store.get_many(list(keys)))

    def bootstrap(self, prefix: str, admin_values: Sequence[HandleValue], actor: str = "init") -> int:
        """A new node: home ``prefix`` and write its prefix handle with the admin's key values.

        Runs before anyone can authenticate (there is no key yet), so it skips the checks, and
        before the node serves, so through the write path's synchronous driver; returns the seq.
        """
        Handle.parse(prefix_handle(prefix))
        writes = [Write(self._homed_key(prefix), HandleRecord(prefix, ()))]
        ph = prefix_handle(prefix)
        # On a multi-server site every server homes the prefix; its prefix handle lives on the
        # server the hash gives it.
        if self.share is None or self.share.owns(ph):
            writes.append(Write(normalize_key(ph), HandleRecord(ph, self._stamp(check_values(admin_values)))))
        job = self._run_inline(WriteJob(lambda: self._commit("init", actor, writes)))
        if job.error is not None:
            raise job.error
        return job.seq
