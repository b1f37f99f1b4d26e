"""Structured access logs for every front-end, kept off the hot path.

One JSON object per line::

    {"time":"2026-12-01T08:00:00.123456Z","client":"10.0.0.7","interface":"udp",
     "operation":"RESOLUTION","handle":"88.100/bench-7","code":1,"bytes":233,"us":14}

``code`` is the Handle response code for the native protocol (``udp``/``tcp``) and the HTTP
status for ``http``/``https``; ``bytes`` is what was sent back; ``us`` the time from the
request's arrival to its answer being handed to the kernel.

Cost. A cached UDP resolution is one dict lookup and one ``sendto``; logging it must not add a
decode or a syscall. So a front-end only appends a tuple of references it already holds (the
request and answer bytes, the peer, two ``perf_counter_ns`` readings) to a list; nothing is
decoded or formatted there. Every ``interval`` seconds the event loop turns the buffered tuples
into JSON lines in slices of ``SLICE`` records (yielding to the loop between slices, so a
burst never stalls answering), and hands each slice to the ``idr.access`` logger as one
record: its handler is a queue whose listener thread writes and rotates the file
(``idr.operations.logs``). ``bench/access_log_cost.py`` measures what it costs.

The buffer is bounded (``max_pending``): beyond it, records are counted in ``dropped`` (and
reported once per flush as a warning) rather than let memory grow when the disk stalls.
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
SLICE = 500  # records formatted per turn of the loop: ~1-2 ms, then answering resumes
_OPS = {int(op): op.name for op in OpCode}
log = logging.getLogger("idr.accesslog")

# (interface, t_arrival_ns, t_done_ns, peer, request bytes, answer bytes, bytes sent)
NativeRecord = tuple[str, int, int, Any, bytes, bytes, int]
# (interface, t_arrival_ns, t_done_ns, client, operation, handle, status, bytes sent)
HttpRecord = tuple[str, int, int, str, str, str, int, int]


class AccessLog:
    """A process's access log buffer (one per process: worker processes have their own)."""

    def __init__(
        self,
        logger: logging.Logger | None = None,
        *,
        interval: float = 0.2,
        max_pending: int = 1_000_000,
        clock: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        self.logger = logger or logging.getLogger(ACCESS_LOGGER)
        self.interval = interval
        self.max_pending = max_pending
        self.clock = clock
        self.pending: list[Any] = []
        self.dropped = 0
        self.written = 0
        self._handle: asyncio.Handle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._second = -1
        self._second_text = ""

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

    # ---------------------------------------------------------------- flushing

    def start(self) -> None:
        """Flush every ``interval`` seconds on the running loop until ``stop``."""
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        more = self.flush(SLICE)
        assert self._loop is not None
        # A backlog is drained slice by slice between other callbacks, not all at once.
        loop = self._loop
        self._handle = loop.call_soon(self._tick) if more else loop.call_later(self.interval, self._tick)

    def stop(self) -> None:
        """Cancel the timer and write everything still buffered (at shutdown)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        while self.flush(SLICE):
            pass

    def flush(self, limit: int | None = None) -> bool:
        """Format and emit up to ``limit`` buffered records; True when more remain."""
        if self.dropped:
            log.warning("access log: %d records dropped (buffer full: the log cannot keep up)", self.dropped)
            self.dropped = 0
        pending = self.pending
        if not pending:
            return False
        n = len(pending) if limit is None else min(limit, len(pending))
        batch = pending[:n]
        del pending[:n]
        # perf_counter_ns → wall clock, with the offset as of now (both clocks read together)
        offset = time.time_ns() - self.clock()
        lines = [self._line(rec, offset) for rec in batch]
        self.logger.info("\n".join(lines))
        self.written += n
        return bool(pending)

    def _time(self, wall_ns: int) -> str:
        seconds, ns = divmod(wall_ns, 1_000_000_000)
        if seconds != self._second:
            self._second = seconds
            self._second_text = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._second_text}.{ns // 1000:06d}Z"

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
        match = getattr(request, "match_info", None)
        if match is not None:
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
