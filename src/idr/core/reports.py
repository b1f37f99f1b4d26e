"""Federation statistics (数据上报, 统计汇聚): report entries, their aggregation, the totals.

Every node of the federation keeps a **node table**: one record per node of its subtree
(itself included), ``0.STATS/NODE.<key>``, holding that node's latest *report entry* —
cumulative figures since the node's store began (its *instance*), numbered by a sequence
per instance — plus what earlier instances of that node had reached (``carried``). A node
makes an entry of its own figures (a *cut*: registrations from the write path's durable
counters, resolutions from the front-ends' tallies, see ``idr.runtime.reporting``), applies
it to its own table, and sends its parent every entry of its table; the parent applies
each entry whose (instance, seq) is newer than the one it holds and ignores the rest.

So a resent report counts nothing twice, a lost one is covered by the next (the figures are
cumulative), a node that was down catches up with its next report, and a secondary forwards
its subtree by forwarding its table. The difference an entry makes to its node's figures is
added to the day and month records (``0.STATS/DAY.<yyyy-mm-dd>``, ``0.STATS/MONTH.<yyyy-mm>``,
China Standard Time), broken down per secondary node, industry and region. Everything is
written through the node's one write path (one job per report: the check and the update see
the same state), so it is durable, logged and replicated like any record.

Totals are sums over the node table (:func:`federation_stats`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from idr.core.jsonvalues import json_of, json_value
from idr.core.stats import COUNTER_NAMES, STATS_PREFIX, add_counts, records_under
from idr.model.errors import HandleError, ResponseCode
from idr.model.handle import normalize_key
from idr.model.value import HandleRecord

if TYPE_CHECKING:
    from idr.core.service import NodeService

NODE_TYPE = "IDR.STATS_NODE"
PERIOD_TYPE = "IDR.STATS_PERIOD"
NODE_PART = "NODE."
DAY_PART = "DAY."
MONTH_PART = "MONTH."
CST = timezone(timedelta(hours=8), "CST")  # 中国标准时间: the days the figures are kept by
ROLES = ("top", "secondary", "enterprise", "recursive", "standalone")
MAX_ENTRIES = 100_000  # entries one report may carry (a secondary's whole subtree)
MAX_KEY = 128
FIGURES = (*COUNTER_NAMES, "resolutions")


class ReportError(HandleError):
    """A report the parent refuses (malformed, or naming nodes the reporter may not speak for)."""


def _bad(message: str) -> ReportError:
    return ReportError(ResponseCode.INVALID_VALUE, message)


# --------------------------------------------------------------------------- entries


def resolution_total(res: Mapping[str, Mapping[str, int]]) -> int:
    return sum(int(n) for codes in res.values() for n in codes.values())


def add_resolutions(into: dict[str, dict[str, int]], res: Mapping[str, Mapping[str, int]]) -> None:
    for frontend, codes in res.items():
        mine = into.setdefault(frontend, {})
        for code, n in codes.items():
            mine[code] = mine.get(code, 0) + int(n)


def sub_resolutions(
    new: Mapping[str, Mapping[str, int]], old: Mapping[str, Mapping[str, int]]
) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for frontend, codes in new.items():
        was = old.get(frontend, {})
        diff = {c: int(n) - int(was.get(c, 0)) for c, n in codes.items() if int(n) != int(was.get(c, 0))}
        if diff:
            out[frontend] = diff
    return out


@dataclass
class Entry:
    """One node's figures as reported (see the module docstring); ``to_json`` is the wire form."""

    node: str
    role: str
    instance: str
    seq: int
    time: float
    name: str = ""
    prefixes: tuple[str, ...] = ()
    interval: float = 60.0
    counters: dict[str, int] | None = None  # cumulative since the instance began
    resolutions: dict[str, dict[str, int]] | None = None  # front-end → response code → n
    enterprise_nodes: int = 0  # enterprise nodes reporting to this node (a gauge)
    up_seconds: float = 0.0  # time the node ran since the instance began
    since: float = 0.0  # when the instance began
    native: str = ""  # host:port of its Handle interface (the parent's health check)
    industry: str = ""
    region: str = ""
    parent: str = ""  # the node it reports to (filled in by that parent)
    # The reporting parent's view of this node (forwarded entries): status, availability.
    seen: float = 0.0
    status: str = ""
    availability: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "node": self.node,
            "role": self.role,
            "instance": self.instance,
            "seq": self.seq,
            "time": self.time,
            "name": self.name,
            "prefixes": list(self.prefixes),
            "interval": self.interval,
            "counters": dict(self.counters or {}),
            "resolutions": {f: dict(c) for f, c in (self.resolutions or {}).items()},
            "enterprise_nodes": self.enterprise_nodes,
            "up_seconds": round(self.up_seconds, 3),
            "since": self.since,
            "native": self.native,
            "industry": self.industry,
            "region": self.region,
            "parent": self.parent,
        }
        if self.seen:
            out["seen"] = self.seen
        if self.status:
            out["status"] = self.status
        if self.availability is not None:
            out["availability"] = self.availability
        return out

    @classmethod
    def from_json(cls, obj: Any) -> Entry:
        """An entry from a report; ReportError naming what is wrong."""
        if not isinstance(obj, dict):
            raise _bad("each node entry must be a JSON object")

        def text(name: str, limit: int = MAX_KEY, required: bool = False) -> str:
            v = obj.get(name, "")
            if not isinstance(v, str) or len(v) > limit or any(ord(c) < 0x20 for c in v):
                raise _bad(f"entry field {name!r} must be a short string")
            if required and not v:
                raise _bad(f"entry field {name!r} is required")
            return v

        def number(name: str, kind: type = float) -> Any:
            v = obj.get(name, 0)
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise _bad(f"entry field {name!r} must be a number ≥ 0")
            return kind(v)

        counters = obj.get("counters", {})
        if not isinstance(counters, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
            for k, v in counters.items()
        ):
            raise _bad("entry field 'counters' must map names to counts ≥ 0")
        res = obj.get("resolutions", {})
        if not isinstance(res, dict) or not all(
            isinstance(f, str)
            and isinstance(codes, dict)
            and all(
                isinstance(c, str) and isinstance(n, int) and not isinstance(n, bool) and n >= 0
                for c, n in codes.items()
            )
            for f, codes in res.items()
        ):
            raise _bad("entry field 'resolutions' must map front-end → code → count ≥ 0")
        prefixes = obj.get("prefixes", [])
        if not isinstance(prefixes, list) or not all(
            isinstance(p, str) and len(p) <= MAX_KEY for p in prefixes
        ):
            raise _bad("entry field 'prefixes' must be a list of prefixes")
        role = text("role", required=True)
        if role not in ROLES:
            raise _bad(f"role {role!r} is not one of {', '.join(ROLES)}")
        availability = obj.get("availability")
        if availability is not None and (
            isinstance(availability, bool)
            or not isinstance(availability, int | float)
            or not 0 <= availability <= 1
        ):
            raise _bad("entry field 'availability' is a fraction")
        seq = obj.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise _bad("entry field 'seq' must be an integer ≥ 1")
        return cls(
            node=text("node", required=True),
            role=role,
            instance=text("instance", required=True),
            seq=seq,
            time=number("time"),
            name=text("name", 256),
            prefixes=tuple(prefixes[:64]),
            interval=max(1.0, number("interval") or 60.0),
            counters={k: v for k, v in counters.items() if len(k) <= 64},
            resolutions={f: dict(c) for f, c in res.items()},
            enterprise_nodes=number("enterprise_nodes", int),
            up_seconds=number("up_seconds"),
            since=number("since"),
            native=text("native"),
            industry=text("industry", 64),
            region=text("region", 64),
            parent=text("parent"),
            seen=number("seen"),
            status=text("status", 16),
            availability=float(availability) if availability is not None else None,
        )

    def figures(self) -> dict[str, int]:
        """Counters and the resolution total, cumulative (what the day records add up)."""
        out = {k: int((self.counters or {}).get(k, 0)) for k in COUNTER_NAMES}
        out["resolutions"] = resolution_total(self.resolutions or {})
        return out


# --------------------------------------------------------------------------- records


def node_key(node: str) -> str:
    return normalize_key(f"{STATS_PREFIX}/{NODE_PART}{node}")


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, CST).strftime("%Y-%m-%d")


@dataclass
class NodeState:
    """A node's record in a node table: its latest entry, what earlier instances reached,
    where its reports come from, and the monitor's counts."""

    entry: Entry
    carried_counters: dict[str, int]
    carried_resolutions: dict[str, dict[str, int]]
    via: str  # the child of this table's node that delivered it ("" = this node itself)
    received: float  # when this table last applied a newer entry for it
    checks: int = 0  # health checks done by this table's node (direct children only)
    checks_ok: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "entry": self.entry.to_json(),
            "carried_counters": self.carried_counters,
            "carried_resolutions": self.carried_resolutions,
            "via": self.via,
            "received": self.received,
            "checks": self.checks,
            "checks_ok": self.checks_ok,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> NodeState:
        return cls(
            entry=Entry.from_json(obj["entry"]),
            carried_counters={k: int(v) for k, v in obj.get("carried_counters", {}).items()},
            carried_resolutions={f: dict(c) for f, c in obj.get("carried_resolutions", {}).items()},
            via=str(obj.get("via", "")),
            received=float(obj.get("received", 0.0)),
            checks=int(obj.get("checks", 0)),
            checks_ok=int(obj.get("checks_ok", 0)),
        )

    def record(self) -> HandleRecord:
        return HandleRecord(
            f"{STATS_PREFIX}/{NODE_PART}{self.entry.node}", (json_value(1, NODE_TYPE, self.to_json()),)
        )

    def counters(self) -> dict[str, int]:
        """Every instance's counters together."""
        return add_counts(dict(self.carried_counters), self.entry.counters or {})

    def resolutions(self) -> dict[str, dict[str, int]]:
        out = {f: dict(c) for f, c in self.carried_resolutions.items()}
        add_resolutions(out, self.entry.resolutions or {})
        return out

    def figures(self) -> dict[str, int]:
        c = self.counters()
        out = {k: int(c.get(k, 0)) for k in COUNTER_NAMES}
        out["resolutions"] = resolution_total(self.resolutions())
        return out

    @property
    def availability(self) -> float | None:
        return round(self.checks_ok / self.checks, 4) if self.checks else None


def load_node(service: NodeService, node: str) -> NodeState | None:
    obj = json_of(service._load(node_key(node)), NODE_TYPE)
    return NodeState.from_json(obj) if obj else None


def iter_nodes(service: NodeService) -> Iterator[NodeState]:
    """Every record of the node table (paged by key; reads the store)."""
    for _, rec in records_under(service.store, node_key("")):
        obj = json_of(rec, NODE_TYPE)
        if obj:
            yield NodeState.from_json(obj)


# --------------------------------------------------------------------------- applying


@dataclass
class Applied:
    """What applying a report did: entries newer than held (counted), entries held already."""

    applied: list[str]
    duplicates: list[str]


def _period(service: NodeService, part: str) -> tuple[str, dict[str, Any]]:
    handle = f"{STATS_PREFIX}/{part}"
    return handle, json_of(service._load(normalize_key(handle)), PERIOD_TYPE) or {}


def _add_period(period: dict[str, Any], delta: Mapping[str, int], breakdowns: Mapping[str, str]) -> None:
    totals = period.setdefault("totals", {})
    add_counts(totals, delta)
    for name, key in breakdowns.items():
        group = period.setdefault(name, {})
        add_counts(group.setdefault(key or "unknown", {}), delta)


def apply_entries(
    service: NodeService,
    entries: list[Entry],
    *,
    via: str,
    now: float,
    home_secondary: str = "",
) -> Applied:
    """Inside a write job: apply ``entries`` (delivered by the child ``via``; this node's own
    entry is delivered by itself) to the node table and the day/month records; stages one
    commit. ``home_secondary``: this node's key when it is a secondary (its subtree's figures
    are all its own in the per-secondary breakdown)."""
    writes: list[tuple[str, HandleRecord | None]] = []
    periods: dict[str, tuple[str, dict[str, Any]]] = {}
    done = Applied([], [])
    for e in entries:
        old = load_node(service, e.node)
        if old is not None and old.entry.instance == e.instance and e.seq <= old.entry.seq:
            done.duplicates.append(e.node)
            continue
        if old is None:
            state = NodeState(e, {}, {}, via, now)
            before: dict[str, int] = dict.fromkeys(FIGURES, 0)
        else:
            state = old
            before = old.figures()
            if old.entry.instance != e.instance:  # a new store: what the old one reached stays
                state.carried_counters = old.counters()
                state.carried_resolutions = old.resolutions()
            state.entry, state.via, state.received = e, via, now
        after = state.figures()
        delta = {k: after[k] - before.get(k, 0) for k in FIGURES if after[k] != before.get(k, 0)}
        writes.append((state.record().handle, state.record()))
        done.applied.append(e.node)
        if not delta:
            continue
        secondary = secondary_of(e, via, home_secondary)
        breakdowns = {"by_secondary": secondary, "by_industry": e.industry, "by_region": e.region}
        for part in (DAY_PART + day_of(e.time or now), MONTH_PART + day_of(e.time or now)[:7]):
            if part not in periods:
                periods[part] = _period(service, part)
            _add_period(periods[part][1], delta, breakdowns)
    for handle, obj in periods.values():
        writes.append((handle, HandleRecord(handle, (json_value(1, PERIOD_TYPE, obj),))))
    if writes:
        service.stage("stats-report", None, writes)
    return done


def secondary_of(e: Entry, via: str, home_secondary: str) -> str:
    """The secondary node a node's figures belong to: itself, the secondary that forwarded
    it, this table's node when that is a secondary; "" for the top's direct children."""
    if e.role == "secondary":
        return e.node
    if via and via != e.node:
        return via
    return home_secondary


def save_monitor(service: NodeService, checks: Mapping[str, tuple[int, int]]) -> None:
    """Inside a write job: store the health-check counts (checks, ok) of direct children."""
    writes: list[tuple[str, HandleRecord | None]] = []
    for node, (n, ok) in checks.items():
        state = load_node(service, node)
        if state is None or (state.checks, state.checks_ok) == (n, ok):
            continue
        state.checks, state.checks_ok = n, ok
        writes.append((state.record().handle, state.record()))
    if writes:
        service.stage("stats-monitor", None, writes)


# --------------------------------------------------------------------------- reading


def periods(service: NodeService, part: str, last: int) -> list[tuple[str, dict[str, Any]]]:
    """The newest ``last`` day (``DAY.``) or month (``MONTH.``) records, oldest first."""
    head = normalize_key(f"{STATS_PREFIX}/{part}")
    out: deque[tuple[str, dict[str, Any]]] = deque(maxlen=last if last > 0 else None)
    for k, rec in records_under(service.store, head):
        obj = json_of(rec, PERIOD_TYPE)
        if obj is not None:
            out.append((k[len(head) :], obj))
    return list(out)


def delegated_children(service: NodeService, limit: int = 100_000) -> list[tuple[str, str]]:
    """(prefix, site name) of every prefix this node delegates to another node (its prefix
    handle names a site and the prefix is not homed here): the children that should report."""
    from idr.core.federation import site_name, sites_of
    from idr.model.handle import NA_PREFIX

    out: list[tuple[str, str]] = []
    pkey = normalize_key(NA_PREFIX)
    after: str | None = None
    seen = 0
    while seen < limit:
        page = service.store.list_handles(pkey, after, 1000)
        found = service.store.get_many([normalize_key(h) for h in page])
        for name in page:
            prefix = name.partition("/")[2]
            rec = found.get(normalize_key(name))
            if (
                rec is None
                or not prefix
                or normalize_key(prefix) in service._homed
                or prefix.upper() == NA_PREFIX
            ):
                continue
            sites = sites_of(rec.values)
            if sites:
                out.append((prefix, site_name(sites[0])))
        seen += len(page)
        if len(page) < 1000:
            break
        after = normalize_key(page[-1])
    return out


def node_status(state: NodeState, now: float, seen: float, health: bool | None, self_node: str) -> str:
    """As this table's node sees a node: ``self``; a direct child ``ok``, ``late`` (reports
    missing, still answering), ``down`` (not answering its health check, or no report for five
    intervals and nothing to check); a forwarded node as its own parent reported it."""
    e = state.entry
    if e.node == self_node:
        return "self"
    if state.via != e.node:
        return e.status or "unknown"
    if health is False:
        return "down"
    if now - seen > 2.5 * e.interval:
        return "down" if health is None and now - seen > 5 * e.interval else "late"
    return "ok"


def federation_stats(
    service: NodeService,
    *,
    self_node: str,
    now: float | None = None,
    home_secondary: str = "",
    seen: Mapping[str, float] | None = None,
    health: Mapping[str, bool] | None = None,
    checks: Mapping[str, tuple[int, int]] | None = None,
    views: Mapping[str, Mapping[str, Any]] | None = None,
    delegated: Sequence[tuple[str, str]] = (),
    days: int = 31,
    months: int = 12,
) -> dict[str, Any]:
    """The figures of this node's subtree as ``/api/federation/stats`` returns them.

    The monitor's fresher in-memory view, when given: ``seen`` (last report from a direct
    child, resent ones too), ``health`` (its last health check), ``checks`` (health checks
    done, passed), ``views`` (a forwarded node's status as its parent last reported it);
    ``delegated``: (prefix, name) of children this node delegates to — one that never
    reported is listed as ``silent`` (and counted nowhere)."""
    now = time.time() if now is None else now
    seen, health, checks, views = seen or {}, health or {}, checks or {}, views or {}
    nodes = []
    totals = dict.fromkeys(FIGURES, 0)
    by_role: dict[str, int] = {}
    by_secondary: dict[str, dict[str, int]] = {}
    by_industry: dict[str, dict[str, int]] = {}
    by_region: dict[str, dict[str, int]] = {}
    resolutions: dict[str, dict[str, int]] = {}
    known: set[str] = set()
    for state in iter_nodes(service):
        e = state.entry
        known.update(normalize_key(p) for p in (e.node, *e.prefixes))
        if e.node in checks:
            state.checks, state.checks_ok = checks[e.node]
        figs = state.figures()
        add_counts(totals, figs)
        add_resolutions(resolutions, state.resolutions())
        by_role[e.role] = by_role.get(e.role, 0) + 1
        secondary = secondary_of(e, state.via, home_secondary)
        if secondary:
            add_counts(by_secondary.setdefault(secondary, {}), figs)
        add_counts(by_industry.setdefault(e.industry or "unknown", {}), figs)
        add_counts(by_region.setdefault(e.region or "unknown", {}), figs)
        view = views.get(e.node)
        if view is not None:
            e.status, e.availability = str(view.get("status", e.status)), view.get("availability")
        last = max(seen.get(e.node, 0.0), state.received)
        status = node_status(state, now, last, health.get(e.node), self_node)
        availability = state.availability if state.via == e.node else e.availability
        nodes.append(
            {
                "node": e.node,
                "name": e.name,
                "role": e.role,
                "prefixes": list(e.prefixes),
                "via": state.via,
                "status": status,
                "availability": availability,
                "self_availability": round(e.up_seconds / max(1e-9, e.time - e.since), 4)
                if e.time > e.since
                else None,
                "last_report": e.time,
                "received": state.received,
                "seen": last,
                "seq": e.seq,
                "instance": e.instance,
                "industry": e.industry,
                "region": e.region,
                "enterprise_nodes": e.enterprise_nodes,
                **figs,
            }
        )
    for prefix, name in delegated:
        if normalize_key(prefix) not in known:
            nodes.append({"node": prefix, "name": name, "role": "", "prefixes": [prefix], "via": "",
                          "status": "silent", "availability": None, "self_availability": None,
                          "last_report": None, "received": None, "seen": None, "seq": 0, "instance": "",
                          "industry": "", "region": "", "enterprise_nodes": 0,
                          **dict.fromkeys(FIGURES, 0)})  # fmt: skip
    return {
        "node": self_node,
        "time": now,
        "secondary_nodes": by_role.get("secondary", 0),
        "enterprise_nodes": by_role.get("enterprise", 0),
        "recursive_nodes": by_role.get("recursive", 0),
        "registered": totals["registered"],
        "deleted": totals["deleted"],
        "resolutions": totals["resolutions"],
        "prefixes_allocated": totals["prefixes_allocated"],
        "prefixes_filed": totals["prefixes_filed"],
        "resolutions_by_frontend": {f: sum(c.values()) for f, c in resolutions.items()},
        "resolutions_by_code": _by_code(resolutions),
        "by_secondary": by_secondary,
        "by_industry": by_industry,
        "by_region": by_region,
        "nodes": sorted(
            nodes, key=lambda n: (ROLES.index(n["role"]) if n["role"] in ROLES else 9, n["node"])
        ),
        "days": [_period_json("day", d, p) for d, p in periods(service, DAY_PART, days)],
        "months": [_period_json("month", m, p) for m, p in periods(service, MONTH_PART, months)],
    }


def _order(n: Mapping[str, Any]) -> tuple[int, str]:
    return (ROLES.index(n["role"]) if n["role"] in ROLES else len(ROLES), str(n["node"]))


def _period_json(kind: str, name: str, period: Mapping[str, Any]) -> dict[str, Any]:
    figures = {k: int(period.get("totals", {}).get(k, 0)) for k in FIGURES}
    return {kind: name, **figures, **{k: v for k, v in period.items() if k.startswith("by_")}}


def _by_code(res: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for codes in res.values():
        for c, n in codes.items():
            out[c] = out.get(c, 0) + n
    return out
