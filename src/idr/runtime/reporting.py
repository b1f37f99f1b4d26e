"""A node's federation statistics at run time (数据上报, 统计汇聚, 监测).

:class:`StatsHub` runs in every top, secondary, enterprise and recursive node:

* **cuts** — every ``report_interval`` (and on demand, and when the node stops) it makes an
  entry of the node's own figures (``idr.core.reports.Entry``): registrations, deletions,
  prefixes allocated and filed from the write path's durable counters; resolutions by
  front-end and response code from the node's answer tallies (``Tallies.resolutions``, the counters
  ``/metrics`` exports and the dashboard reads — one count, not a second one), added
  to what the previous cut of this store held, so they survive a restart; and applies it to
  the node's own table through the write path. A cut whose figures did not change makes
  no write (the report still goes out: it is the heartbeat);
* **reports** — it POSTs the node's table (its own entry and its subtree's) to the parent's
  ``/api/federation/stats/report`` over HTTPS as the node's identity, the parent's
  certificate pinned (as filing does, ``idr.resolver.filing``); a failed report is simply
  the next one (figures are cumulative, entries numbered, so nothing is lost or counted twice);
* **receives** — a parent authorises each report (the reporter may register identifiers
  under the prefix it reports for; its forwarded entries must be under that prefix),
  applies it in one write job, and remembers when each child was last heard;
* **monitors** — every interval it checks each direct child's Handle interface
  (GET_SITE_INFO, which is not a resolution), counts checks passed for the child's
  availability (stored in the node table every few ticks), and marks a child late or down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from idr.core import reports
from idr.core.reports import Entry, ReportError
from idr.core.stats import new_writer_id
from idr.model.errors import HandleError, ResponseCode
from idr.model.handle import Handle, normalize_key, prefix_handle
from idr.model.value import AdminPermission, ValueReference
from idr.runtime.tasks import cancel_and_wait

if TYPE_CHECKING:
    from idr.core.service import NodeService
    from idr.resolver.filing import FilingTarget

log = logging.getLogger("idr.stats")

# Resolutions answered by this process since it started: front-end → response code → count.
ResolutionSource = Callable[[], Mapping[str, Mapping[int, int]]]
REPORT_PATH = "/api/federation/stats/report"
HEARTBEAT_CUTS = 10  # a cut is written at least every this many intervals (up time moves)
MONITOR_SAVE_TICKS = 5  # health-check counts are stored every this many ticks
REPORT_TIMEOUT = 10.0
SUMMARY = (
    "secondary_nodes",
    "enterprise_nodes",
    "registered",
    "deleted",
    "resolutions",
    "prefixes_allocated",
    "prefixes_filed",
)


@dataclass
class HubConfig:
    node: str  # this node's key in the federation's tables
    role: str
    name: str = ""
    interval: float = 60.0
    target: FilingTarget | None = None  # the parent's HTTPS API and this node's identity
    native: str = ""
    industry: str = ""
    region: str = ""
    prefixes: Callable[[], list[str]] = field(default=lambda: [])


class StatsHub:
    """See the module docstring. ``service``: the node's authoritative core (a recursive
    node's own); ``resolutions``: where this process's resolution tallies come from."""

    def __init__(
        self,
        service: NodeService,
        config: HubConfig,
        resolutions: ResolutionSource,
        *,
        clock: Callable[[], float] = time.time,
        probe: Callable[[str, float], Any] | None = None,
    ) -> None:
        self.service = service
        self.config = config
        self.resolutions = resolutions
        self.clock = clock
        self.probe = probe or _site_info_probe
        self.started = clock()
        self.own: Entry | None = None
        self._base: dict[str, dict[str, int]] = {}  # resolutions this store held at start
        self._up_base = 0.0
        self.cuts_unchanged = 0
        # what this node knows of its direct children beyond the table (in memory)
        self.seen: dict[str, float] = {}
        self.health: dict[str, bool] = {}
        self.checks: dict[str, tuple[int, int]] = {}
        self.views: dict[str, dict[str, Any]] = {}
        self.last_sent: float = 0.0
        self.last_ack: dict[str, Any] | None = None
        self.last_error: str = ""
        self.summary: dict[str, Any] | None = None  # the last totals (for /metrics)
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._ticks = 0
        # Scheduled reports wait while held (cuts and monitoring go on; ``report_now`` still
        # sends): for a node started before its parent holds its prefix — the demo wires its
        # federation after starting the nodes — whose reports would only be refused.
        self.held = False

    @property
    def home_secondary(self) -> str:
        return self.config.node if self.config.role == "secondary" else ""

    # ------------------------------------------------------------------ life

    async def start(self) -> None:
        own = await self._read(lambda: reports.load_node(self.service, self.config.node))
        if own is not None:
            self.own = own.entry
            self._base = {f: dict(c) for f, c in (own.entry.resolutions or {}).items()}
            self._up_base = own.entry.up_seconds
        for state in await self._read(lambda: list(reports.iter_nodes(self.service))):
            if state.via == state.entry.node and state.entry.node != self.config.node:
                self.seen[state.entry.node] = state.received
                self.checks[state.entry.node] = (state.checks, state.checks_ok)
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop the schedule; a last cut (so this run's resolutions are kept) and one try
        to report it."""
        await cancel_and_wait(self._task)
        self._task = None
        with contextlib.suppress(Exception):
            await self.cut(force=True)
            await self._save_monitor()
        if self.config.target is not None and not self.held:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.send(), 3.0)

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a failed tick is the next one
                log.warning("statistics: %s", e)
            await asyncio.sleep(self.config.interval)

    async def tick(self) -> None:
        await self.cut()
        if self.config.target is not None and not self.held:
            with contextlib.suppress(HandleError):
                await self.send()
        await self.monitor()
        await self.stats()

    async def _read(self, fn: Callable[[], Any]) -> Any:
        rt = self.service.runtime
        return fn() if rt is None else await rt.read(fn)

    # ------------------------------------------------------------------ own figures

    def _resolutions_now(self) -> dict[str, dict[str, int]]:
        out = {f: dict(c) for f, c in self._base.items()}
        now = {
            f: {str(code): int(n) for code, n in codes.items() if n}
            for f, codes in self.resolutions().items()
        }
        reports.add_resolutions(out, now)
        return out

    async def cut(self, *, force: bool = False) -> Entry:
        """This node's figures now; written (as a new seq) when they changed."""
        async with self._lock:
            counters = await self._read(self.service.durable_counts)
            enterprise = await self._read(self._enterprise_children)
            now = self.clock()
            own = self.own
            entry = Entry(
                node=self.config.node,
                role=self.config.role,
                instance=own.instance if own else new_writer_id(),
                seq=own.seq if own else 0,
                time=now,
                name=self.config.name,
                prefixes=tuple(self.config.prefixes()),
                interval=self.config.interval,
                counters=counters,
                resolutions=self._resolutions_now(),
                enterprise_nodes=enterprise,
                up_seconds=self._up_base + (now - self.started),
                since=own.since if own else self.started,
                native=self.config.native,
                industry=self.config.industry,
                region=self.config.region,
            )
            same = own is not None and (
                own.figures() == entry.figures()
                and own.enterprise_nodes == entry.enterprise_nodes
                and own.prefixes == entry.prefixes
                and own.native == entry.native
            )
            if same and not force and self.cuts_unchanged < HEARTBEAT_CUTS:
                self.cuts_unchanged += 1
                return own  # type: ignore[return-value]
            entry.seq += 1
            node = self.config.node
            await self.service.write(
                lambda: reports.apply_entries(
                    self.service, [entry], via=node, now=now, home_secondary=self.home_secondary
                )
            )
            self.own = entry
            self.cuts_unchanged = 0
            return entry

    def _enterprise_children(self) -> int:
        return sum(
            1
            for s in reports.iter_nodes(self.service)
            if s.entry.role == "enterprise" and s.via == s.entry.node and s.entry.node != self.config.node
        )

    # ------------------------------------------------------------------ reporting up

    async def report_body(self) -> dict[str, Any]:
        """This node's table as a report: its own entry first, then its subtree, each direct
        child with this node's view of it (status, availability, last heard)."""
        now = self.clock()
        states = await self._read(lambda: list(reports.iter_nodes(self.service)))
        entries: list[dict[str, Any]] = []
        own: dict[str, Any] | None = None
        for state in states:
            e = state.entry
            if e.node == self.config.node:
                own = e.to_json()
                continue
            if state.via == e.node:
                seen = max(self.seen.get(e.node, 0.0), state.received)
                e.seen = seen
                e.status = reports.node_status(state, now, seen, self.health.get(e.node), self.config.node)
                n, ok = self.checks.get(e.node, (state.checks, state.checks_ok))
                e.availability = round(ok / n, 4) if n else None
            else:
                view = self.views.get(e.node)
                if view is not None:
                    e.status, e.availability = str(view.get("status", "")), view.get("availability")
            entries.append(e.to_json())
        if own is None:
            raise HandleError(ResponseCode.ERROR, "no figures cut yet")
        return {"report": 1, "node": self.config.node, "entries": [own, *entries]}

    async def send(self) -> dict[str, Any]:
        """Report to the parent now; its acknowledgement (HandleError when it did not take it)."""
        from idr.resolver.filing import post_to_parent

        target = self.config.target
        if target is None:
            raise HandleError(ResponseCode.OPERATION_NOT_SUPPORTED, "this node has no parent to report to")
        body = await self.report_body()
        try:
            ack = await post_to_parent(target, REPORT_PATH, body, "report", timeout=REPORT_TIMEOUT)
        except HandleError as e:
            if not self.last_error:
                log.warning(
                    "statistics: report to %s failed: %s (retrying every %ss)",
                    target.url,
                    e.message,
                    self.config.interval,
                )
            self.last_error = e.message
            raise
        if self.last_error:
            log.info("statistics: reporting to %s again", target.url)
        self.last_error = ""
        self.last_sent = self.clock()
        self.last_ack = {k: v for k, v in ack.items() if k != "responseCode"}
        return self.last_ack

    async def report_now(self) -> dict[str, Any]:
        """On demand (``idr stats report``): cut, then report when there is a parent."""
        entry = await self.cut(force=True)
        out: dict[str, Any] = {"entry": entry.to_json(), "parent": None}
        target = self.config.target
        if target is not None:
            out["parent"] = target.url
            try:
                out["ack"] = await self.send()
                out["sent"] = True
            except HandleError as e:
                out["sent"], out["error"] = False, e.message
        return out

    # ------------------------------------------------------------------ receiving from children

    def authorize(self, identity: ValueReference, e: Entry) -> None:
        """May ``identity`` report for node ``e``? A prefix node's reporter may register
        identifiers under that prefix here (its prefix handle at this parent names it admin);
        a node without a prefix (recursive) reports as its own identity."""
        service = self.service
        if normalize_key(e.node) == normalize_key(self.config.node):
            raise ReportError(ResponseCode.INVALID_VALUE, f"{e.node} is this node")
        if e.role == "recursive":
            if normalize_key(e.node) != normalize_key(identity.handle):
                raise ReportError(
                    ResponseCode.INSUFFICIENT_PERMISSIONS,
                    f"a node without a prefix reports as its identity: {identity.handle}, not {e.node}",
                )
            return
        try:
            ph = Handle.parse(prefix_handle(e.node))
        except HandleError as err:
            raise ReportError(
                ResponseCode.INVALID_VALUE, f"{e.node!r} is not a prefix: {err.message}"
            ) from err
        record = service._load(ph.key)
        if record is None:
            raise ReportError(
                ResponseCode.HANDLE_NOT_FOUND, f"{ph} is not held here: {e.node} is not a child of this node"
            )
        if not service._allowed(identity, record, AdminPermission.ADD_HANDLE):
            raise ReportError(
                ResponseCode.INSUFFICIENT_PERMISSIONS, f"{identity} may not report for {e.node}"
            )

    async def receive(self, identity: ValueReference, doc: Any) -> dict[str, Any]:
        """A child's report: checked, applied in one write job, acknowledged."""
        if not isinstance(doc, dict) or doc.get("report") != 1:
            raise ReportError(
                ResponseCode.INVALID_VALUE, 'a report is {"report": 1, "node": …, "entries": […]}'
            )
        raw = doc.get("entries")
        if not isinstance(raw, list) or not raw or len(raw) > reports.MAX_ENTRIES:
            raise ReportError(ResponseCode.INVALID_VALUE, f"entries: 1 to {reports.MAX_ENTRIES} node entries")
        entries = [Entry.from_json(x) for x in raw]
        reporter = entries[0]
        if reporter.node != doc.get("node"):
            raise ReportError(ResponseCode.INVALID_VALUE, "the first entry is the reporting node's own")
        head = normalize_key(reporter.node) + "."
        keys = {normalize_key(e.node) for e in entries}
        if len(keys) != len(entries):
            raise ReportError(ResponseCode.INVALID_VALUE, "a node appears twice in the report")
        for e in entries[1:]:
            if e.role == "recursive" or not normalize_key(e.node).startswith(head):
                raise ReportError(
                    ResponseCode.INSUFFICIENT_PERMISSIONS,
                    f"{reporter.node} forwards only nodes under its prefix, not {e.node}",
                )
        now = self.clock()
        reporter.parent = self.config.node

        def job() -> reports.Applied:
            # in the write job: the records it reads are read off the event loop
            self.authorize(identity, reporter)
            return reports.apply_entries(
                self.service, entries, via=reporter.node, now=now, home_secondary=self.home_secondary
            )

        done = await self.service.write(job)
        self.seen[reporter.node] = now
        for e in entries[1:]:
            self.views[e.node] = {"status": e.status, "availability": e.availability}
        held = await self._read(lambda: reports.load_node(self.service, reporter.node))
        return {
            "node": self.config.node,
            "applied": len(done.applied),
            "duplicates": len(done.duplicates),
            "held": {"instance": held.entry.instance, "seq": held.entry.seq} if held else None,
        }

    # ------------------------------------------------------------------ monitoring children

    async def monitor(self) -> None:
        """Check every direct child's Handle interface once; keep the counts."""
        states = await self._read(lambda: list(reports.iter_nodes(self.service)))
        children = [s for s in states if s.via == s.entry.node and s.entry.node != self.config.node]
        now = self.clock()
        timeout = max(0.2, min(2.0, self.config.interval / 2))

        async def check(state: reports.NodeState) -> None:
            e = state.entry
            if e.native:
                ok = await self.probe(e.native, timeout)
            else:  # nothing to ask: a report in time is the check
                ok = now - max(self.seen.get(e.node, 0.0), state.received) <= 2.5 * e.interval
            self.health[e.node] = bool(ok)
            n, good = self.checks.get(e.node, (state.checks, state.checks_ok))
            self.checks[e.node] = (n + 1, good + (1 if ok else 0))

        await asyncio.gather(*(check(s) for s in children))
        self._ticks += 1
        if self._ticks % MONITOR_SAVE_TICKS == 0:
            await self._save_monitor()

    async def _save_monitor(self) -> None:
        if self.checks:
            checks = dict(self.checks)
            await self.service.write(lambda: reports.save_monitor(self.service, checks))

    # ------------------------------------------------------------------ reading

    async def stats(self) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            return reports.federation_stats(
                self.service,
                self_node=self.config.node,
                now=self.clock(),
                home_secondary=self.home_secondary,
                seen=self.seen,
                health=self.health,
                checks=self.checks,
                views=self.views,
                delegated=reports.delegated_children(self.service),
            )

        out: dict[str, Any] = await self._read(read)
        statuses = [n["status"] for n in out["nodes"]]
        self.summary = {
            **{k: out[k] for k in SUMMARY},
            "nodes_down": statuses.count("down"),
            "nodes_late": statuses.count("late"),
        }
        out["role"] = self.config.role
        out["interval"] = self.config.interval
        target = self.config.target
        out["reporting"] = {
            "parent": target.url if target else None,
            "last_sent": self.last_sent or None,
            "last_error": self.last_error or None,
            "ack": self.last_ack,
        }
        return out


async def _site_info_probe(address: str, timeout: float) -> bool:
    """Is a node's Handle interface answering? GET_SITE_INFO (not counted as a resolution)."""
    from idr.node import parse_address
    from idr.resolver.client import HandleClient

    try:
        host, port = parse_address(address)
    except ValueError:
        return False
    client = HandleClient(host, port, timeout=timeout, retries=0)
    try:
        await asyncio.wait_for(client.site_info(), timeout)
        return True
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await client.close()
