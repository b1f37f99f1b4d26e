"""Every answer counted where it is sent: plain integers per front-end, read by ``/metrics``.

The native hot path answers a cached resolution in a few microseconds; a prometheus_client
``Counter.inc`` (a lock and a label lookup) would be a visible share of that. So each
front-end of each process keeps a :class:`Tally` of plain ints — answers by operation and
response code, and an in-process latency histogram — and the metrics collector turns them
into Prometheus families when scraped. Extra ``--workers`` processes send their tallies to
worker 0 every second (:func:`idr.server.native.worker_main`), which adds them in.

Cost on the hot path: one list increment indexed by the low byte of the cached answer's
response code (only the cacheable codes reach the hot path, and their low bytes differ).
Latency is sampled :data:`PROBES_PER_SECOND` times a second by :class:`Tallies`' sampler —
for UDP by arming a timed handler for the next datagram only (``UdpProtocol.sample_next``),
so the hot path carries no test for it; TCP tests a flag per message. Slow-path answers are
always timed.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from idr.codec.envelope import OpCode
from idr.model.errors import ResponseCode
from idr.runtime.tasks import cancel_and_wait
from idr.server.handler import CACHEABLE_CODES

if TYPE_CHECKING:
    from aiohttp import web

# Seconds; the first buckets resolve the native hot path (~5–20 µs), the last a slow walk.
LATENCY_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
PROBES_PER_SECOND = 20  # an idle node wakes this often (7 demo nodes: 140/s); enough for a histogram
FRONTENDS = ("udp", "tcp", "http", "https")
RESOLUTION = int(OpCode.RESOLUTION)
# The codes a pre-encoded (hot path) answer can carry — what the native handler lets into the
# answer cache — by the low byte of the code (distinct for these, checked here).
HOT_CODES = {int(c) & 0xFF: int(c) for c in CACHEABLE_CODES}
assert len(HOT_CODES) == len(CACHEABLE_CODES), "cacheable codes must differ in their low byte"
NOT_FOUND_LOW = int(ResponseCode.HANDLE_NOT_FOUND) & 0xFF  # the warm cache's negative answers
# Answers that are not failures of the node: found, not found, referrals, a challenge.
NOT_ERRORS = frozenset(
    int(c)
    for c in (
        ResponseCode.SUCCESS,
        ResponseCode.HANDLE_NOT_FOUND,
        ResponseCode.VALUES_NOT_FOUND,
        ResponseCode.SERVER_NOT_RESPONSIBLE,
        ResponseCode.SERVICE_REFERRAL,
        ResponseCode.PREFIX_REFERRAL,
        ResponseCode.AUTHENTICATION_NEEDED,
    )
)
HTTP_NO_CODE = 0  # an HTTP answer that carries no Handle response code (a page, a redirect…)


class Tally:
    """One front-end's answers in one process (see the module docstring)."""

    __slots__ = ("answers", "buckets", "hot", "probe", "samplers", "seconds")

    def __init__(self) -> None:
        self.hot = [0] * 256  # hot-path resolutions by the low byte of their response code
        self.answers: dict[tuple[int, int], int] = {}  # (opcode, response code) → answers
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last: above every bound
        self.seconds = 0.0
        self.probe = False  # TCP: time the next hot-path answer
        self.samplers: list[Callable[[], None]] = []  # UDP: arm the next datagram's timing

    def answered(self, opcode: int, code: int, seconds: float) -> None:
        key = (opcode, code)
        self.answers[key] = self.answers.get(key, 0) + 1
        self.observe(seconds)

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.seconds += seconds

    def answered_message(self, message: bytes, seconds: float) -> None:
        """An encoded answer: opcode and response code read from its header."""
        if len(message) >= 28:
            self.answered(
                int.from_bytes(message[20:24], "big"), int.from_bytes(message[24:28], "big"), seconds
            )

    def counts(self) -> dict[tuple[int, int], int]:
        """Answers by (opcode, response code), the hot path's included."""
        out = dict(self.answers)
        for low, code in HOT_CODES.items():
            n = self.hot[low]
            if n:
                out[(RESOLUTION, code)] = out.get((RESOLUTION, code), 0) + n
        return out

    def snapshot(self) -> dict[str, Any]:
        """JSON-able totals (a worker process sends these to worker 0)."""
        return {
            "answers": [[op, code, n] for (op, code), n in self.counts().items()],
            "buckets": list(self.buckets),
            "seconds": self.seconds,
        }


class Totals:
    """Sums of tallies: this process's and the latest snapshots of the other workers."""

    def __init__(self) -> None:
        self.answers: dict[tuple[int, int], int] = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.seconds = 0.0

    def add(self, snap: Mapping[str, Any]) -> None:
        for op, code, n in snap.get("answers", []):
            key = (int(op), int(code))
            self.answers[key] = self.answers.get(key, 0) + int(n)
        for i, n in enumerate(snap.get("buckets", [])[: len(self.buckets)]):
            self.buckets[i] += int(n)
        self.seconds += float(snap.get("seconds", 0.0))

    @property
    def resolutions(self) -> int:
        return sum(n for (op, _), n in self.answers.items() if op == RESOLUTION)

    @property
    def errors(self) -> int:
        return sum(n for (_, code), n in self.answers.items() if code not in NOT_ERRORS and code)


class Tallies:
    """A node's tallies, one per front-end, plus what its worker processes reported."""

    def __init__(self) -> None:
        self.by_frontend = {f: Tally() for f in FRONTENDS}
        self.workers: dict[int, dict[str, dict[str, Any]]] = {}  # worker → front-end → snapshot
        self._sampler: asyncio.Task[None] | None = None
        self._users = 0

    def __getitem__(self, frontend: str) -> Tally:
        return self.by_frontend[frontend]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {f: t.snapshot() for f, t in self.by_frontend.items()}

    def totals(self, frontends: Iterable[str] = FRONTENDS) -> dict[str, Totals]:
        """Per front-end: this process's tally plus every worker's latest report."""
        wanted = list(frontends)
        out = {f: Totals() for f in wanted}
        for f in wanted:
            out[f].add(self.by_frontend[f].snapshot())
            for snaps in list(self.workers.values()):
                if f in snaps:
                    out[f].add(snaps[f])
        return out

    def resolutions(self) -> dict[str, dict[int, int]]:
        """Resolutions answered, by front-end and response code: the figures a node reports to
        its parent (``idr.runtime.reporting``) — the same counts ``idr_answers`` and
        ``idr_resolutions`` export, so the federation's totals are sums of these."""
        out: dict[str, dict[int, int]] = {}
        for frontend, t in self.totals().items():
            codes = {code: n for (op, code), n in t.answers.items() if op == RESOLUTION and n}
            if codes:
                out[frontend] = codes
        return out

    def overall(self) -> Totals:
        """Every front-end together."""
        total = Totals()
        for t in self.totals().values():
            total.add({"answers": [[op, c, n] for (op, c), n in t.answers.items()]})
        return total

    # ------------------------------------------------------------- latency samples of the hot path

    def start_sampler(self) -> None:
        """Ask each native front-end for a latency sample every 1/PROBES_PER_SECOND s."""
        self._users += 1
        if self._sampler is None or self._sampler.done():
            self._sampler = asyncio.get_running_loop().create_task(self._sample())

    async def stop_sampler(self) -> None:
        self._users = max(0, self._users - 1)
        if self._users or self._sampler is None:
            return
        await cancel_and_wait(self._sampler)
        self._sampler = None

    async def _sample(self) -> None:
        udp, tcp = self.by_frontend["udp"], self.by_frontend["tcp"]
        while True:
            tcp.probe = True
            for arm in udp.samplers:
                arm()
            await asyncio.sleep(1 / PROBES_PER_SECOND)


# --------------------------------------------------------------------------- HTTP


def _handle_code(resp: web.StreamResponse) -> int:
    """The Handle response code of a JSON API answer (``{"responseCode":N,…}``), else 0."""
    body = getattr(resp, "body", None)
    if isinstance(body, bytes | bytearray) and body.startswith(b'{"responseCode":'):
        digits = bytes(body[16:24]).split(b",", 1)[0].split(b"}", 1)[0]
        if digits.isdigit():
            return int(digits)
    return HTTP_NO_CODE


def _status_code(status: int) -> int:
    """An HTTP answer without a Handle code: success, not found, or ``-status`` (shown as HTTP_<status>)."""
    if status < 400:
        return int(ResponseCode.SUCCESS)
    if status == 404:
        return int(ResponseCode.HANDLE_NOT_FOUND)
    return -status


def _is_resolution(request: web.Request) -> bool:
    """Requests that resolve an identifier: REST resolution, converged resolution, the GS1
    resolver and the proxy. A proxy or GS1 path names a prefix and a suffix (``/88.100/x``,
    ``/01/…``), so a one-segment path (``/favicon.ico``, ``/robots.txt``) is a browser's or a
    crawler's request, not a resolution, and must not add to the federation's 解析量."""
    if request.method not in ("GET", "HEAD"):
        return False
    path = request.path
    if path.startswith("/api/"):
        return path.startswith(("/api/handles/", "/api/resolve", "/api/federation/resolve"))
    if path.startswith(("/console", "/metrics", "/.well-known", "/hrls/")):
        return False
    return "/" in path[1:].rstrip("/")


def http_middleware(tally: Tally) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Count and time every answer of an HTTP(S) listener (outermost, so error answers count too)."""
    from aiohttp import web

    @web.middleware
    async def count(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        t0 = time.perf_counter()
        resp = await handler(request)
        op = RESOLUTION if _is_resolution(request) else 0
        code = _handle_code(resp) or _status_code(resp.status)
        tally.answered(op, code, time.perf_counter() - t0)
        return resp

    return count


def code_name(code: int) -> str:
    """A label for a response code: its name, or ``HTTP_<status>`` for an HTTP-only failure."""
    if code < 0:
        return f"HTTP_{-code}"
    try:
        return ResponseCode(code).name
    except ValueError:
        return str(code)


def op_name(opcode: int) -> str:
    if opcode == 0:
        return "other"
    try:
        return OpCode(opcode).name.lower()
    except ValueError:
        return str(opcode)
