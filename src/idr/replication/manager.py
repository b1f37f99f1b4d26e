"""One site's replication: serve the log to mirrors (as primary), follow it (as mirror),
promote, and fence. docs/replication.md describes the protocol and what it guarantees.

Everything runs on the node's event loop except store work, which goes to one applier
thread: applying entries, restoring a snapshot and promotion's read of ``last_seq`` are
serialised there, so a promotion can never slip between an entry's apply and its ack.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import orjson

from idr.codec.wire import ProtocolError
from idr.core.config import ConfigError, ReplicationConfig
from idr.core.secret_policy import link_secret_problem
from idr.core.service import NodeService
from idr.model.errors import HandleError, ResponseCode
from idr.replication import wire
from idr.replication.state import MIRROR, PRIMARY, ReplState, logs_match
from idr.store.base import REPLICA_COPY_OP, LogEntry, RawEntry, StoreError

log = logging.getLogger("idr.replication")
T = TypeVar("T")

SNAPSHOT_BATCH = 1000
LOG_BATCH = 256
MAX_WAITERS = 10_000  # sync writes awaiting a mirror before timed-out ones are swept
INLINE_APPLY = 256 * 1024  # a mirror applies batches up to this size on its loop (``_stream``)
PUSH_BUFFER = 1 << 20  # bytes a mirror may have unread before entries wait for its reads
_LINK_ERRORS = (OSError, TimeoutError, wire.LinkError, ProtocolError, StoreError, KeyError, ValueError)


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"replication address must be HOST:PORT, not {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


def _history(raw: Any) -> list[tuple[int, int]]:
    return [(int(e), int(s)) for e, s in raw]


@dataclass(eq=False)
class _Session:
    """A mirror being fed by this primary: ``pos`` is the last seq sent to it."""

    node: str
    epoch: int
    ch: wire.Channel
    pos: int
    last_ts: float
    acked: int = 0
    reading: bool = False  # its task is reading the log: entries go out from there
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class Replicator:
    """Replication for one site; ``start`` installs the service's write gate and durability."""

    def __init__(
        self,
        service: NodeService,
        cfg: ReplicationConfig,
        data_dir: Path,
        *,
        api: str = "",
        heartbeat: float = 0.25,
        link_timeout: float = 2.0,
    ) -> None:
        if not cfg.secret:
            raise ConfigError("replication needs a shared secret ([replication] secret in idr.toml)")
        problem = link_secret_problem(cfg.secret)
        if problem is not None:  # a captured handshake would let anyone test guesses offline
            raise ConfigError(f"[replication] secret in idr.toml: {problem}")
        self.service = service
        self.store = service.store
        self.cfg = cfg
        self.data_dir = data_dir
        self.api = api  # where clients reach this site (named in a mirror's refusal)
        self.heartbeat = heartbeat
        self.link_timeout = link_timeout
        self.secret = cfg.secret.encode("utf-8")
        self.peers = [parse_address(p) for p in cfg.peers]
        self.state = ReplState.load(data_dir) or ReplState.initial(cfg.role)
        self.address: tuple[str, int] | None = None
        self.primary_api = ""
        self.conflict = False  # another primary of the same epoch was seen: refuse writes
        # primary side
        self._sessions: set[_Session] = set()
        self._acked = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []  # a heap by seq
        self._tiebreak = itertools.count()
        # mirror side
        self.primary_seq = 0
        self.primary_ts = 0.0
        self.applied_ts = 0.0
        self.last_contact = time.monotonic()
        self._applier = ThreadPoolExecutor(max_workers=1, thread_name_prefix="idr-repl-apply")
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._follower: asyncio.Task[bool] | None = None
        self._role_changed = asyncio.Event()
        self._promote_lock = asyncio.Lock()
        self._stopping = False

    # ----------------------------------------------------------------- lifecycle

    @property
    def writable(self) -> bool:
        return self.state.role == PRIMARY and not self.conflict

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.state.save(self.data_dir)
        self.service.write_gate = self._gate
        if self.cfg.mode == "sync":
            self.service.durability = self._durable
        self.service.add_listener(self._on_commit)
        if self.state.role == PRIMARY:
            # A restarted old primary must not take writes if a newer one exists.
            await self._probe_peers()
        host, port = parse_address(self.cfg.listen)
        self._server = await asyncio.start_server(self._serve_conn, host, port, reuse_address=True)
        self.address = self._server.sockets[0].getsockname()[:2]
        self._spawn(self._run())
        log.info("replication %s epoch %d on %s", self.state.role, self.state.epoch, self.address)

    async def stop(self) -> None:
        self._stopping = True
        self._role_changed.set()
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t
        self._fail_waiters("the node is stopping")
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._applier.shutdown(wait=True)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _in_applier(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._applier, fn)

    async def _run(self) -> None:
        """Primary: probe peers for a higher epoch. Mirror: follow whichever peer is primary."""
        while not self._stopping:
            self._role_changed.clear()
            if self.state.role == PRIMARY:
                await self._probe_peers()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._role_changed.wait(), self.heartbeat * 2)
                continue
            self._follower = self._spawn(self._follow_any())
            await asyncio.wait({self._follower})
            due = not self._follower.cancelled() and self._follower.exception() is None
            if due and self._follower.result():
                log.warning("no primary for %.1fs: promoting this mirror", self.cfg.auto_promote_after)
                await self.promote()

    # ----------------------------------------------------------------- core hooks

    def _gate(self) -> None:
        if self.writable:
            return
        if self.conflict:
            raise HandleError(
                ResponseCode.SERVER_READ_ONLY,
                f"two primaries of epoch {self.state.epoch} were seen; writes are refused until one "
                "is promoted (idr promote)",
            )
        where = self.primary_api or "unknown (no primary reachable now)"
        raise HandleError(
            ResponseCode.SERVER_READ_ONLY,
            f"this site is a read-only mirror (epoch {self.state.epoch}); the primary is at {where}",
        )

    def _on_commit(self, keys: object) -> None:
        """A commit listener (on the event loop, or from another thread for a node without a
        runtime): ship the new entries to every mirror, or wake its session to."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if _running_loop() is not loop:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._on_commit, keys)
            return
        for s in list(self._sessions):
            self._kick(s)

    def _kick(self, session: _Session) -> None:
        """On the loop, as the group's writers resume: the entries this process just committed
        go out now, from memory (``Store.log_recent``), in one write — the session's task would
        run loop iterations later (a wake-up, a read in a thread), and on a node busy with 64
        clients an iteration is milliseconds every sync write would wait more. Entries the
        store does not hold in memory (another writer's, an import's), or a mirror not reading,
        are left to the session's task."""
        busy = session.reading or session.ch.unsent() > PUSH_BUFFER
        if not busy and self.writable and session.epoch == self.state.epoch:
            try:
                entries = self.store.log_recent(session.pos, LOG_BATCH)
                if self._push(session, entries) and len(entries) < LOG_BATCH:
                    return  # (a full batch: the task sends what follows)
            except _LINK_ERRORS:  # the task finds it again and ends the session
                pass
        session.wake.set()

    def _push(self, session: _Session, entries: list[RawEntry]) -> bool:
        """Send ``entries`` (read after ``session.pos``) in one write; False when there are none.
        As stored: payloads go out without being decoded and encoded again."""
        if not entries:
            return False
        if entries[0].seq != session.pos + 1 or any(e.op == REPLICA_COPY_OP for e in entries):
            raise wire.LinkError(f"log does not continue after {session.pos}; the mirror must re-copy")
        session.ch.put(wire.ENTRY, [wire.encode_raw_entry(e) for e in entries])
        session.pos, session.last_ts = entries[-1].seq, entries[-1].timestamp
        return True

    async def _durable(self, seq: int) -> None:
        """Sync mode: the write is acknowledged only once a mirror of this epoch holds it.

        Waiters sit in a heap by seq; a mirror's (cumulative) ack releases every waiter up to
        it, so one ack completes a whole group commit's writes."""
        if not self.writable:
            raise HandleError(ResponseCode.ERROR, f"write {seq} not acknowledged: this site was fenced")
        if self._acked >= seq:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        if len(self._waiters) > MAX_WAITERS:  # no ack for long: drop those that timed out
            self._waiters = [w for w in self._waiters if not w[2].done()]
            heapq.heapify(self._waiters)
        heapq.heappush(self._waiters, (seq, next(self._tiebreak), fut))
        timer = loop.call_later(self.cfg.ack_timeout, _expire, fut)
        try:
            await fut
        except TimeoutError:
            raise HandleError(
                ResponseCode.ERROR,
                f"write {seq} reached the primary but no mirror confirmed it within "
                f"{self.cfg.ack_timeout:g}s; it is NOT acknowledged (sync replication)",
            ) from None
        finally:
            timer.cancel()

    def _on_ack(self, session: _Session, seq: int) -> None:
        session.acked = max(session.acked, seq)
        if not self.writable or session.epoch != self.state.epoch:
            return
        self._acked = max(self._acked, seq)
        waiters = self._waiters
        while waiters and waiters[0][0] <= self._acked:
            _, _, fut = heapq.heappop(waiters)
            if not fut.done():
                fut.set_result(None)

    def _fail_waiters(self, why: str) -> None:
        waiters, self._waiters = self._waiters, []
        for s, _, fut in waiters:
            if not fut.done():
                fut.set_exception(HandleError(ResponseCode.ERROR, f"write {s} not acknowledged: {why}"))

    # ----------------------------------------------------------------- epochs

    def learn_epoch(self, epoch: int, source: str) -> None:
        """Any peer contact reports its epoch; a higher one fences this site at once."""
        if epoch <= self.state.epoch:
            return
        was_primary = self.state.role == PRIMARY
        self.state.epoch = epoch
        self.state.role = MIRROR  # the gate refuses from this instruction on
        self.state.save(self.data_dir)
        if was_primary:
            log.warning("fenced: %s has epoch %d; this site now follows as a mirror", source, epoch)
            self._fail_waiters(f"this site was fenced by epoch {epoch}")
            self._acked = 0
            self._role_changed.set()

    async def promote(self) -> int:
        """Make this site the primary with a new epoch (mirror → primary); returns the epoch."""
        async with self._promote_lock:
            if self.state.role == PRIMARY and not self.conflict:
                return self.state.epoch
            if self._follower is not None and not self._follower.done():
                self._follower.cancel()
                await asyncio.wait({self._follower})
            last = await self._in_applier(self.store.last_seq)  # after any apply in flight
            new = self.state.epoch + 1
            self.state.history = [*self.state.history, (new, last + 1)]
            self.state.epoch = new
            self.state.save(self.data_dir)
            # Tell every reachable peer the new epoch before taking a write, so a live old
            # primary is fenced first; one we cannot reach cannot get sync acks from us.
            await self._probe_peers()
            self.state.role = PRIMARY
            self.state.save(self.data_dir)
            self.conflict = False
            self._acked = 0
            self.primary_api = self.api
            self._role_changed.set()
            log.warning("promoted to primary, epoch %d from seq %d", new, last + 1)
            return new

    # ----------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        lag_entries, lag_seconds = self.lag()
        return {
            "t": "status",
            "node": self.state.node_id,
            "role": self.state.role,
            "epoch": self.state.epoch,
            "writable": self.writable,
            "mode": self.cfg.mode,
            "last_seq": self.store.last_seq(),
            "api": self.api,
            "primary_api": self.api if self.writable else self.primary_api,
            "mirrors": len(self._sessions),
            "acked_seq": self._acked,
            "lag_entries": lag_entries,
            "lag_seconds": lag_seconds,
        }

    def mirrors_need(self) -> int | None:
        """The oldest log entry a connected mirror has not acknowledged (None: no mirror is
        connected, or this site is not the primary). Log compaction keeps it and everything
        after; a mirror that is not connected gets a snapshot if it comes back too late."""
        if self.state.role != PRIMARY or not self._sessions:
            return None
        return min(s.acked for s in self._sessions) + 1

    def lag(self) -> tuple[int, float]:
        """Entries and seconds the mirror(s) are behind (primary) or this mirror is (mirror)."""
        last = self.store.last_seq()
        if self.state.role == PRIMARY:
            best = max((s.acked for s in self._sessions), default=self._acked)
            behind = max(0, last - best)
            if behind == 0:
                return 0, 0.0
            oldest = self.store.log_since(best, 1)
            return behind, max(0.0, time.time() - oldest[0].timestamp) if oldest else 0.0
        behind = max(0, self.primary_seq - last)
        return behind, max(0.0, self.primary_ts - self.applied_ts) if behind else 0.0

    def replication_metrics(self) -> dict[str, float]:
        """Prometheus-ready gauges (name → value) for the node's ``/metrics``."""
        lag_entries, lag_seconds = self.lag()
        return {
            "idr_replication_epoch": float(self.state.epoch),
            "idr_replication_is_primary": float(self.state.role == PRIMARY),
            "idr_replication_writable": float(self.writable),
            "idr_replication_last_seq": float(self.store.last_seq()),
            "idr_replication_acked_seq": float(self._acked),
            "idr_replication_mirrors_connected": float(len(self._sessions)),
            "idr_replication_lag_entries": float(lag_entries),
            "idr_replication_lag_seconds": lag_seconds,
        }

    # ----------------------------------------------------------------- server side

    async def _serve_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Tracked, so ``stop`` ends the sessions it shipped to (closing the listener does not).
        me = asyncio.current_task()
        if me is not None:
            self._tasks.add(me)
        try:
            async with asyncio.timeout(self.link_timeout):
                ch = await wire.server_handshake(reader, writer, self.secret, self.state.node_id)
                msg = await ch.recv_json()
            self._note_peer(msg, f"peer {ch.peer}")
            kind = msg.get("t")
            if kind == "status":
                await ch.send_json(self.status())
            elif kind == "promote":
                await self.promote()
                await ch.send_json(self.status())
            elif kind == "follow":
                await self._ship(ch, msg)
        except _LINK_ERRORS as e:
            log.debug("replication connection ended: %r", e)
        except asyncio.CancelledError:
            # The site is stopping. Ending normally: Python 3.11's stream server reports a
            # cancelled connection handler as an "unhandled exception" (fixed in 3.12).
            pass
        finally:
            writer.close()
            if me is not None:
                self._tasks.discard(me)

    def _note_peer(self, msg: dict[str, Any], source: str) -> None:
        self.learn_epoch(int(msg.get("epoch", 0)), source)
        same_epoch_primary = msg.get("role") == PRIMARY and int(msg.get("epoch", 0)) == self.state.epoch
        if same_epoch_primary and self.state.role == PRIMARY and msg.get("node") != self.state.node_id:
            if not self.conflict:
                log.error("%s is also primary of epoch %d: refusing writes", source, self.state.epoch)
            self.conflict = True

    def _plan(self, mirror_last: int, mirror_history: list[tuple[int, int]]) -> str:
        """``log`` when the mirror's log is a prefix of ours and we still hold what follows."""
        last = self.store.last_seq()
        if mirror_last > last or not logs_match(mirror_history, self.state.history, mirror_last):
            return "snapshot"
        if mirror_last == last:
            return "log"
        nxt = self.store.log_since(mirror_last, 1)
        if not nxt or nxt[0].seq != mirror_last + 1 or nxt[0].op == REPLICA_COPY_OP:
            return "snapshot"
        return "log"

    async def _ship(self, ch: wire.Channel, msg: dict[str, Any]) -> None:
        if not self.writable:
            await ch.send_json({**self.status(), "t": "not_primary"})
            return
        loop = asyncio.get_running_loop()
        mirror_last = int(msg["last_seq"])
        plan = await loop.run_in_executor(None, self._plan, mirror_last, _history(msg["history"]))
        last, epoch = self.store.last_seq(), self.state.epoch
        await ch.send_json(
            {"t": "start", "mode": plan, "epoch": epoch, "history": self.state.history,
             "api": self.api, "seq": last, "ts": time.time()}
        )  # fmt: skip
        if plan == "snapshot":
            mirror_last = await self._send_snapshot(ch)
        session = _Session(ch.peer, epoch, ch, mirror_last, time.time())
        self._sessions.add(session)
        acks = asyncio.ensure_future(self._read_acks(ch, session))
        read = self.store.log_raw_since
        timed_out = True  # the first pass tells the mirror where this primary is
        try:
            while self.writable and self.state.epoch == session.epoch and not acks.done():
                session.wake.clear()
                await ch.drain()  # a mirror not reading holds the session here, not in memory
                entries = self.store.log_recent(session.pos, LOG_BATCH)
                if not entries:
                    session.reading = True  # off the loop: a mirror catching up may need megabytes
                    try:
                        entries = await loop.run_in_executor(None, read, session.pos, LOG_BATCH)
                    finally:
                        session.reading = False
                if self._push(session, entries):
                    continue
                if timed_out:  # idle for a heartbeat (entries in between need none)
                    hb = {"t": "hb", "epoch": self.state.epoch, "seq": session.pos, "ts": session.last_ts}
                    await ch.send_json(hb)
                try:
                    await asyncio.wait_for(session.wake.wait(), self.heartbeat)
                    timed_out = False
                except TimeoutError:
                    timed_out = True
        finally:
            self._sessions.discard(session)
            acks.cancel()
            with contextlib.suppress(BaseException):
                await acks

    async def _send_snapshot(self, ch: wire.Channel) -> int:
        loop = asyncio.get_running_loop()
        seq, records = await loop.run_in_executor(None, self.store.snapshot)
        try:
            while True:
                batch = await loop.run_in_executor(None, lambda: list(islice(records, SNAPSHOT_BATCH)))
                if not batch:
                    break
                await ch.send(wire.CHUNK, wire.encode_chunk(batch))
        finally:
            close = getattr(records, "close", None)
            if close is not None:
                await loop.run_in_executor(None, close)
        await ch.send_json({"t": "snap_end", "seq": seq})
        return seq

    async def _read_acks(self, ch: wire.Channel, session: _Session) -> None:
        with contextlib.suppress(*_LINK_ERRORS):
            while True:
                msg = await ch.recv_json()
                if msg.get("t") == "ack":
                    self._on_ack(session, int(msg["seq"]))

    # ----------------------------------------------------------------- client side

    async def _request(self, address: tuple[str, int], msg: dict[str, Any]) -> dict[str, Any]:
        ch = await wire.connect(address, self.secret, self.state.node_id, self.link_timeout)
        try:
            async with asyncio.timeout(self.link_timeout):
                await ch.send_json(msg)
                return await ch.recv_json()
        finally:
            ch.close()

    def _hello(self, kind: str) -> dict[str, Any]:
        return {"t": kind, "epoch": self.state.epoch, "role": self.state.role, "node": self.state.node_id}

    async def _probe_peers(self) -> None:
        async def one(addr: tuple[str, int]) -> dict[str, Any] | None:
            try:
                return await self._request(addr, self._hello("status"))
            except _LINK_ERRORS:
                return None

        replies = await asyncio.gather(*(one(a) for a in self.peers))
        conflict = False
        for addr, st in zip(self.peers, replies, strict=True):
            if st is None:
                continue
            self._note_peer(st, f"peer {addr[0]}:{addr[1]}")
            conflict |= st.get("role") == PRIMARY and int(st.get("epoch", 0)) == self.state.epoch
            if st.get("role") == PRIMARY and int(st.get("epoch", 0)) >= self.state.epoch:
                self.primary_api = str(st.get("api", ""))
        self.conflict = conflict and self.state.role == PRIMARY

    async def _follow_any(self) -> bool:
        """Follow a primary among the peers until this site stops being a mirror.

        Returns True when automatic promotion is due (no primary for the configured time).
        """
        self.last_contact = time.monotonic()
        rounds = 0
        while self.state.role == MIRROR and not self._stopping:
            rounds += 1
            for addr in self.peers:
                try:
                    await self._follow(addr)
                except _LINK_ERRORS as e:
                    log.debug("following %s:%d ended: %r", addr[0], addr[1], e)
                if self.state.role != MIRROR:
                    return False
            quiet = time.monotonic() - self.last_contact
            if self.cfg.auto_promote_after > 0 and quiet >= self.cfg.auto_promote_after:
                return True
            await asyncio.sleep(min(0.2, 0.02 * rounds))
        return False

    async def _follow(self, address: tuple[str, int]) -> None:
        ch = await wire.connect(address, self.secret, self.state.node_id, self.link_timeout)
        try:
            last = await self._in_applier(self.store.last_seq)
            await ch.send_json({**self._hello("follow"), "last_seq": last, "history": self.state.history})
            async with asyncio.timeout(self.link_timeout * 2):
                start = await ch.recv_json()
            self._note_peer(start, f"peer {address[0]}:{address[1]}")
            if start.get("t") != "start" or int(start["epoch"]) < self.state.epoch:
                return
            history = _history(start["history"])
            self.primary_api = str(start.get("api", ""))
            self.primary_seq, self.primary_ts = int(start["seq"]), float(start["ts"])
            self.last_contact = time.monotonic()
            if start["mode"] == "snapshot":
                last = await self._receive_snapshot(ch, history)
                await ch.send_json({"t": "ack", "seq": last})
            else:
                self.state.history = history
                self.state.save(self.data_dir)
            await self._stream(ch)
        finally:
            ch.close()

    async def _receive_snapshot(self, ch: wire.Channel, history: list[tuple[int, int]]) -> int:
        # Forget our history first: if we crash mid-copy, the next contact re-copies.
        self.state.history = []
        self.state.save(self.data_dir)
        chunks: list[bytes] = []
        while True:
            async with asyncio.timeout(self.link_timeout * 4):
                kind, payload = await ch.recv()
            self.last_contact = time.monotonic()
            if kind == wire.CHUNK:
                chunks.append(payload)
                continue
            msg = orjson.loads(payload)
            if msg.get("t") == "snap_end":
                seq = int(msg["seq"])
                break
        store, service = self.store, self.service

        def restore() -> None:
            _, old = store.snapshot()
            keys = {k for k, _ in old}
            new = list(wire.iter_chunks(chunks))
            keys.update(k for k, _ in new)
            store.replace_all(new, seq)
            service.cache.clear()
            # The copy's log entry is ours: the log follower must not announce it again.
            service.on_external_commit(sorted(keys), seqs=[seq] if seq > 0 else [])

        await self._in_applier(restore)
        self.state.history = history
        self.state.save(self.data_dir)
        self.applied_ts = time.time()
        log.info("re-copied the primary's records at seq %d", seq)
        return seq

    async def _stream(self, ch: wire.Channel) -> None:
        """Apply the primary's entries as they come, all that arrived while the last batch
        was being applied in one transaction (one fsync: a primary's group commit costs the
        mirror one too), and acknowledge the batch's last seq (acks are cumulative).

        A batch of up to ``INLINE_APPLY`` bytes on a store whose writes do not wait for a
        network is applied here on the loop: its Python work holds the GIL in the applier
        thread just as well, and the two thread hand-offs per batch (each a wake-up that waits
        for a core on a busy host) were most of what a sync write waited for the mirror."""
        store, service = self.store, self.service
        arrived: asyncio.Queue[tuple[LogEntry, int]] = asyncio.Queue()

        async def receive() -> None:
            while self.state.role == MIRROR:
                kind, payload = await ch.recv()  # the loop below bounds the silence
                self.last_contact = time.monotonic()
                if kind == wire.ENTRY:
                    arrived.put_nowait((wire.decode_entry(payload), len(payload)))
                elif kind == wire.JSON:
                    msg = orjson.loads(payload)
                    if msg.get("t") == "hb":
                        self.learn_epoch(int(msg.get("epoch", 0)), "primary")
                        self.primary_seq, self.primary_ts = int(msg["seq"]), float(msg["ts"])

        receiver = asyncio.ensure_future(receive())
        try:
            silence = self.link_timeout * 2  # one timer per batch here, not one per frame
            while self.state.role == MIRROR:
                left = silence - (time.monotonic() - self.last_contact)
                if left <= 0:
                    raise TimeoutError(f"no frame from the primary for {silence:g} s")
                nxt = asyncio.ensure_future(arrived.get())
                await asyncio.wait({nxt, receiver}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                if not nxt.done():
                    nxt.cancel()
                    if receiver.done():
                        receiver.result()  # the link's error (or its end) ends the stream
                        return
                    continue
                first, size = nxt.result()
                batch = [first]
                while not arrived.empty():
                    entry, n = arrived.get_nowait()
                    batch.append(entry)
                    size += n

                def apply(entries: list[LogEntry] = batch) -> int:
                    done = store.apply_entries(entries)
                    if done:
                        keys = [w.key for e in entries for w in e.writes]
                        service.on_external_commit(list(dict.fromkeys(keys)), seqs=[e.seq for e in entries])
                    return done

                if size <= INLINE_APPLY and not store.blocking_reads:
                    apply()  # nothing else applies meanwhile: the applier is only awaited
                else:
                    await self._in_applier(apply)
                self.applied_ts = batch[-1].timestamp
                self.primary_seq = max(self.primary_seq, batch[-1].seq)
                await ch.send_json({"t": "ack", "seq": batch[-1].seq})
        finally:
            receiver.cancel()
            with contextlib.suppress(BaseException):
                await receiver
