"""Structured access logs for every front-end, kept off the hot path.

One JSON object per line::

    {"time":"2026-12-01T08:00:00.123456Z","client":"10.0.0.7","interface":"udp",
     "operation":"RESOLUTION","handle":"88.100/bench-7","code":1,"bytes":233,"us":14}

``code`` is the Handle response code for the native protocol (``udp``/``tcp``) and the HTTP
status for ``http``/``https``; ``bytes`` is what was sent back; ``us`` the time from the
request's arrival to its answer being handed to the socket (or, on UDP's hot path, to the
burst's send list).

Cost. A cached UDP resolution is one dict lookup and one ``sendto``; logging it must not add a
decode, a Python call or a syscall. The UDP hot path appends a 5-tuple of references it
already holds — ``(t_arrival_ns, t_done_ns, peer, request, answer)`` — with the buffer's own
``list.append`` (``AccessLog.record``); the slower paths call :meth:`AccessLog.native` or
:meth:`AccessLog.http`. Nothing is decoded or formatted there.

Every ``FORMAT_EVERY`` (20 ms) the event loop turns the buffered records into lines — while
they are still in the CPU's cache (left for 200 ms, they cost more to format, 2.3–3.0 against
2.2–2.6 µs a line in one loaded run, and ten times as many stay alive) — with
the second's text and each client's text cached, the handle and codes read at fixed offsets
(``idr.codec.peek``), no dict and no ``orjson`` unless a string needs escaping (at most
``SLICE`` records per turn of the loop, so a backlog never stalls answering; an idle log
wakes once an ``interval``). Every
``interval`` (``[logging] flush_interval``, 0.2 s), or once ``MAX_LINES`` lines are waiting,
the lines are joined into one string and handed to the ``idr.access`` logger as one record:
its handler is a queue whose listener thread writes it with one ``write`` and rotates the file
(``idr.operations.logs``). ``bench/access_log_cost.py`` measures what it costs.

What a crash loses. A clean stop (SIGTERM, SIGINT) writes every buffered line. A kill -9 loses
the lines not yet handed to the writer — at most ``interval`` + ``FORMAT_EVERY`` seconds of
answers (0.22 s by default) and at most ``MAX_LINES`` + one turn's records — plus what the
writer thread had not yet written (normally nothing: it writes as soon as a batch arrives). A
line cut short by a crash or a full disk is ended by the next writer (``idr.operations.logs``),
so every later line is whole.

Bounds. Lines not yet written (buffered records, formatted lines, batches the writer has not
finished) are at most ``max_pending``; beyond it, when the disk stalls or the writer cannot
keep up, the newest records are dropped and counted (``dropped``, ``idr_access_log_dropped``
in ``/metrics``, and a warning per flush) rather than let memory grow. A batch the writer
could not write (disk full, the file unwritable) is counted as ``lost``
(``idr_access_log_lost``); answering never waits for the disk.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from idr.codec import peek
from idr.codec.envelope import EnvFlag, OpCode

ACCESS_LOGGER = "idr.access"
# A request ``idr.server.http.fast_path`` answered before routing carries this key; it was a
# plain GET of the REST resolution route, the raw tail of its path the handle (nothing in it
# percent-encoded).
FAST_HIT = web.RequestKey("idr.http.fast_hit", bool)
FAST_ROUTE = "/api/handles/{handle}"
FORMAT_EVERY = 0.02  # seconds between formatting passes (records formatted while cache-warm)
SLICE = 4000  # records formatted per turn of the loop (~4 ms at most), then answering resumes
MAX_LINES = 65_536  # formatted lines kept before they are handed to the writer, whatever the time
_OPS = {int(op): op.name for op in OpCode}
log = logging.getLogger("idr.accesslog")

# The UDP hot path's record: (t_arrival_ns, t_done_ns, peer, request bytes, answer bytes); the
# interface is "udp" and the bytes sent the answer's length.
HotRecord = tuple[int, int, Any, bytes, bytes]
# (interface, t_arrival_ns, t_done_ns, peer, request bytes, answer bytes, bytes sent)
NativeRecord = tuple[str, int, int, Any, bytes, bytes, int]
# (interface, t_arrival_ns, t_done_ns, client, operation, handle, status, bytes sent)
HttpRecord = tuple[str, int, int, str, str, str, int, int]


class WriteTally:
    """What the writer thread did with the batches handed to it (only that thread writes these:
    the loop reads them, so no lock). ``idr.operations.logs``'s access handler keeps it."""

    __slots__ = ("errors", "last_error", "lost", "written")

    def __init__(self) -> None:
        self.written = 0  # lines written
        self.lost = 0  # lines in batches that could not be written (disk full, unwritable file)
        self.errors = 0  # failed writes
        self.last_error = ""


class AccessLog:
    """A process's access log buffer (one per process: worker processes have their own)."""

    def __init__(
        self,
        logger: logging.Logger | None = None,
        *,
        interval: float = 0.2,
        max_pending: int = 262_144,
        clock: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        self.logger = logger or logging.getLogger(ACCESS_LOGGER)
        self.interval = interval
        self.max_pending = max_pending
        self.clock = clock
        self.pending: list[Any] = []  # never replaced: ``record`` is its append
        self.record = self.pending.append  # the UDP hot path's: a HotRecord, no Python call
        self.lines: list[str] = []  # formatted, waiting for the next write
        self.dropped = 0  # since the last warning
        self.dropped_total = 0
        self.written = 0  # lines handed to the writer
        self.tally: WriteTally | None = None  # set by a handler that reports (idr.operations.logs)
        self._handle: asyncio.TimerHandle | asyncio.Handle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_write = 0.0
        self._second = -1  # the second whose text is cached (wall clock, ns // 1e9)
        self._second_text = ""
        self._clients: dict[Any, str] = {}  # host → its JSON text (bounded: cleared when full)

    # ---------------------------------------------------------------- front-end side

    def native(self, interface: str, t0: int, peer: Any, request: bytes, answer: bytes, sent: int) -> None:
        """One native answer (``peer``: the address tuple or host as the transport gave it)."""
        if len(self.pending) < self.max_pending:
            self.pending.append((interface, t0, self.clock(), peer, request, answer, sent))
        else:
            self.dropped += 1

    def http(
        self, interface: str, t0: int, client: str, operation: str, handle: str, status: int, sent: int
    ) -> None:
        if len(self.pending) < self.max_pending:
            self.pending.append((interface, t0, self.clock(), client, operation, handle, status, sent))
        else:
            self.dropped += 1

    # ---------------------------------------------------------------- formatting and writing

    def start(self) -> None:
        """Format every ``FORMAT_EVERY`` and write every ``interval`` on the running loop until ``stop``."""
        self._loop = asyncio.get_running_loop()
        self._next_write = self._loop.time() + self.interval
        self._handle = self._loop.call_later(FORMAT_EVERY, self._tick)

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        busy = bool(self.pending)
        more = self.format(SLICE)
        if self.lines and (loop.time() >= self._next_write or len(self.lines) >= MAX_LINES):
            self.write()
            self._next_write = loop.time() + self.interval
        # A backlog is formatted slice by slice between other callbacks, not all at once; an
        # idle log wakes once an ``interval`` (a record then waits at most that long, as before)
        later = FORMAT_EVERY if busy else self.interval
        self._handle = loop.call_soon(self._tick) if more else loop.call_later(later, self._tick)

    def stop(self) -> None:
        """Cancel the timer and write everything still buffered (at shutdown)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.flush()

    def flush(self, limit: int | None = None) -> bool:
        """Format up to ``limit`` buffered records (all by default) and write every formatted
        line; True when more records remain."""
        more = self.format(limit)
        self.write()
        return more

    def format(self, limit: int | None = None) -> bool:
        """Turn up to ``limit`` buffered records into lines; True when more remain."""
        pending = self.pending
        if not pending:
            return False
        over = len(pending) + len(self.lines) + self.unwritten() - self.max_pending
        if over > 0:  # the writer is behind: the newest records go, counted
            over = min(over, len(pending))
            del pending[len(pending) - over :]
            self.dropped += over
            self.dropped_total += over
        n = len(pending) if limit is None else min(limit, len(pending))
        if n == len(pending):
            batch = pending.copy()
            pending.clear()
        else:
            batch = pending[:n]
            del pending[:n]
        # perf_counter_ns → wall clock, with the offset as of now (both clocks read together)
        self._format(batch, time.time_ns() - self.clock())
        return bool(pending)

    def unwritten(self) -> int:
        """Lines handed to the writer that it has not finished with (0 when it does not say)."""
        t = self.tally
        return 0 if t is None else self.written - t.written - t.lost

    def write(self) -> None:
        """Hand every formatted line to the writer as one record (one string, one write)."""
        if self.dropped:
            log.warning("access log: %d records dropped (the log cannot keep up)", self.dropped)
            self.dropped = 0
        lines = self.lines
        if not lines:
            return
        n = len(lines)
        text = "\n".join(lines)
        lines.clear()
        self.written += n
        self.logger.info(text, extra={"access_lines": n})

    def metrics(self) -> dict[str, float]:
        """For ``/metrics`` (``Node.metrics_sources``)."""
        t = self.tally or WriteTally()
        return {
            "idr_access_log_lines": t.written,
            "idr_access_log_dropped": self.dropped_total,
            "idr_access_log_lost": t.lost,
            "idr_access_log_write_errors": t.errors,
        }

    def _time(self, wall_ns: int) -> str:
        seconds, ns = divmod(wall_ns, 1_000_000_000)
        return f"{self._second_prefix(seconds)[9:]}{ns // 1000:06d}Z"

    def _second_prefix(self, seconds: int) -> str:
        """``{"time":"YYYY-MM-DDTHH:MM:SS.`` for this second (cached: it changes once a second)."""
        if seconds != self._second:
            self._second = seconds
            text = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second_text = f'{{"time":"{text}.'
        return self._second_text

    def _client(self, host: Any) -> str:
        """``"<host>","interface":"udp","operation":`` — a hot record's text up to its operation."""
        text = self._clients.get(host)
        if text is None:
            if len(self._clients) >= 4096:
                self._clients.clear()
            text = f'{_json_str(host)},"interface":"udp","operation":'
            self._clients[host] = text
        return text

    def _format(self, batch: list[Any], offset: int) -> None:
        """Append ``batch``'s lines to ``self.lines``. The hot records' loop is written out in
        full (no call per record): it is most of what logging costs. (A cache of each key's
        text, operation to bytes, was tried: with 100,000 handles asked evenly it cost more
        than it saved — misses, and the memory it kept hot.)"""
        add = self.lines.append
        clients = self._clients
        frombytes = int.from_bytes
        plain = _PLAIN
        ops = _HOT_OPS
        second = self._second
        prefix = self._second_text
        base = second * 1_000_000_000
        nxt = base + 1_000_000_000
        for rec in batch:
            if len(rec) != 5:
                add(self._line(rec, offset))
                second, prefix = self._second, self._second_text
                base = second * 1_000_000_000
                nxt = base + 1_000_000_000
                continue
            t0, t1, peer, request, answer = rec
            wall = t0 + offset
            if not base <= wall < nxt:
                second = wall // 1_000_000_000
                prefix = self._second_prefix(second)
                base = second * 1_000_000_000
                nxt = base + 1_000_000_000
            client = clients.get(peer[0]) or self._client(peer[0])
            # ops: the opcode's 4 bytes → its JSON text, for the operations whose body starts
            # with the handle; anything else (and any odd message) takes the general line
            op = ops.get(request[20:24])
            if op is None or request[2] & _EC or len(request) < _BODY + 4:
                add(self._line(("udp", t0, t1, peer, request, answer, len(answer)), offset))
                continue
            n = frombytes(request[_BODY : _BODY + 4], "big")
            raw = request[_BODY + 4 : _BODY + 4 + n]
            if not 0 < n <= peek.MAX_HANDLE or len(raw) != n or raw.translate(None, plain):
                add(self._line(("udp", t0, t1, peer, request, answer, len(answer)), offset))
                continue
            code = frombytes(answer[24:28], "big") if len(answer) >= 28 else -1
            add(
                f'{prefix}{(wall - base) // 1000:06d}Z","client":{client}{op}"{raw.decode()}",'
                f'"code":{code},"bytes":{len(answer)},"us":{(t1 - t0) // 1000}}}'
            )

    def _line(self, rec: Any, offset: int) -> str:
        t0, t1 = rec[1], rec[2]
        if len(rec) == 7:  # native: read from the bytes at fixed offsets (``idr.codec.peek``)
            request, answer, peer = rec[4], rec[5], rec[3]
            op = int.from_bytes(request[20:24], "big") if len(request) >= 24 else -1
            code = int.from_bytes(answer[24:28], "big") if len(answer) >= 28 else -1
            client = _json_str(peer[0] if isinstance(peer, tuple) else str(peer))
            return (
                f'{{"time":"{self._time(t0 + offset)}","client":{client},"interface":"{rec[0]}",'
                f'"operation":"{_OPS.get(op) or op}","handle":{_json_str(_handle(request, op))},'
                f'"code":{code},"bytes":{rec[6]},"us":{(t1 - t0) // 1000}}}'
            )
        doc = {
            "time": self._time(t0 + offset),
            "client": rec[3],
            "interface": rec[0],
            "operation": rec[4],
            "handle": rec[5],
            "code": rec[6],
            "bytes": rec[7],
            "us": (t1 - t0) // 1000,
        }
        return orjson.dumps(doc).decode()


# A native record is formatted by hand, its fields read at the fixed offsets ``idr.codec.peek``
# documents (OpCode at 20, ResponseCode at 24): a dict, ``orjson.dumps`` and the ``peek`` calls
# per record cost ~1.5x as much of the serving process's CPU. The line is what ``orjson.dumps``
# of the same fields gives, which tests/server/test_accesslog_format.py checks.
_EC = int(EnvFlag.EC)
_HANDLE_FIRST = frozenset(int(op) for op in peek.HANDLE_FIRST)
_BODY = peek.BODY_OFFSET
# The hot loop's operations: those whose body starts with the handle, by their 4 wire bytes.
_HOT_OPS = {int(op).to_bytes(4, "big"): f'"{op.name}","handle":' for op in peek.HANDLE_FIRST}
# Bytes a handle may hold to be written between quotes as it is (printable ASCII but " and \):
# ``raw.translate(None, _PLAIN)`` is empty for those, one C call per handle.
_PLAIN = bytes(c for c in range(0x20, 0x7F) if c not in b'"\\')


def _handle(message: bytes, op: int) -> str:
    """``peek.handle`` with the opcode already read."""
    if op not in _HANDLE_FIRST or len(message) < _BODY + 4 or message[2] & _EC:
        return ""
    n = int.from_bytes(message[_BODY : _BODY + 4], "big")
    end = _BODY + 4 + min(n, peek.MAX_HANDLE)
    if n == 0 or end > len(message):
        return ""
    return message[_BODY + 4 : end].decode("utf-8", "replace")


def _json_str(text: str) -> str:
    """``text`` as a JSON string: as is between quotes when nothing in it needs escaping (the
    usual handle or address), else as orjson writes it."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return orjson.dumps(text).decode()


class HttpAccessLogger(AbstractAccessLogger):
    """aiohttp's access-log hook, writing into an :class:`AccessLog` (``AppRunner(access_log_class=…)``).

    aiohttp calls ``log`` after each response with the seconds it took; the operation is the
    method and the route's pattern (``GET /api/handles/{handle}``), the handle the route's
    ``handle`` (or the ``handle``/``id`` query parameter)."""

    sink: AccessLog | None = None  # set per node by ``bind``

    @classmethod
    def bind(cls, sink: AccessLog) -> type[HttpAccessLogger]:
        return type("BoundHttpAccessLogger", (cls,), {"sink": sink})

    @property
    def enabled(self) -> bool:
        return self.sink is not None

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        sink = self.sink
        if sink is None:
            return
        t0 = sink.clock() - int(time * 1e9)
        route = ""
        handle = ""
        # answered before routing (no match_info to read): the route it would have taken
        fast = request.get(FAST_HIT)
        match = None if fast else getattr(request, "match_info", None)
        if fast:
            route = FAST_ROUTE
            handle = request.raw_path[len(FAST_ROUTE) - len("{handle}") :]
        elif match is not None:
            resource = match.route.resource
            route = resource.canonical if resource is not None else ""
            handle = match.get("handle") or match.get("prefix") or ""
            if not handle and match.get("tail") is not None:
                handle = request.path
        if not handle:
            handle = request.query.get("handle") or request.query.get("id") or ""
        operation = f"{request.method} {route or request.path}"
        client = request.remote or ""
        sent = response.body_length
        sink.http("https" if request.secure else "http", t0, client, operation, handle, response.status, sent)
