"""``GET /metrics`` in Prometheus text format, one registry per node.

Figures are read when scraped (a custom collector), so the hot path pays only for its plain
integer tallies (``idr.server.tally``): answers per front-end, operation and response code,
in-process latency histograms, and — from the core — registrations, commits and the record
cache; from a recursive node's engine its answer and service caches. Several nodes in one
process (``idr demo``) each keep their own registry instead of sharing prometheus_client's
global one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from idr.core.interface import Core
from idr.server.tally import LATENCY_BUCKETS, Tallies, code_name, op_name

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MetricsSource = Callable[[], dict[str, float]]

_CORE_COUNTERS = {
    "registrations": ("idr_registrations", "Identifiers registered (注册量)."),
    "writes": ("idr_writes", "Committed write transactions."),
}


class NodeCollector(Collector):
    def __init__(self, service: Core, extra: list[MetricsSource], tallies: Tallies) -> None:
        self.service = service
        self.extra = extra
        self.tallies = tallies
        self.log_seq = 0  # read off the event loop by the /metrics handler before each collect

    def collect(self) -> Iterator[Any]:
        per_frontend = self.tallies.totals()
        overall = self.tallies.overall()
        answers = CounterMetricFamily(
            "idr_answers",
            "Answers sent, by front-end, operation and response code (cache hits included).",
            labels=("frontend", "op", "code"),
        )
        latency = HistogramMetricFamily(
            "idr_answer_seconds",
            "Time from request to answer inside the node (native hot path: sampled ~20/s).",
            labels=("frontend",),
        )
        for frontend, t in per_frontend.items():
            for (op, code), n in sorted(t.answers.items()):
                answers.add_metric((frontend, op_name(op), code_name(code)), n)
            cumulative, running = [], 0
            for bound, n in zip((*map(str, LATENCY_BUCKETS), "+Inf"), t.buckets, strict=True):
                running += n
                cumulative.append((bound, running))
            latency.add_metric((frontend,), cumulative, t.seconds)
        yield answers
        yield latency
        yield CounterMetricFamily(
            "idr_resolutions", "Resolutions answered (解析量), every front-end.", value=overall.resolutions
        )
        yield CounterMetricFamily(
            "idr_errors",
            "Answers that are failures (not found, referrals and challenges are not).",
            value=overall.errors,
        )
        counters = self.service.counters
        for key, (name, doc) in _CORE_COUNTERS.items():
            yield CounterMetricFamily(name, doc, value=counters.get(key, 0))
        cache = self.service.cache
        yield CounterMetricFamily("idr_cache_hits", "Record cache hits.", value=cache.hits)
        yield CounterMetricFamily("idr_cache_misses", "Record cache misses.", value=cache.misses)
        yield from _recursive(self.service)
        yield GaugeMetricFamily(
            "idr_log_sequence", "Newest transaction log sequence number.", value=self.log_seq
        )
        for source in self.extra:
            for name, value in source().items():
                yield GaugeMetricFamily(name, name.replace("_", " "), value=value)


def _recursive(service: Core) -> Iterator[Any]:
    """A recursive node's engine: its answer and service caches, queries sent, failures."""
    engine = getattr(service, "resolver", None)
    if engine is None:
        return
    hits = CounterMetricFamily("idr_recursive_cache_hits", "Recursive cache hits.", labels=("cache",))
    misses = CounterMetricFamily("idr_recursive_cache_misses", "Recursive cache misses.", labels=("cache",))
    size = GaugeMetricFamily(
        "idr_recursive_cache_entries", "Entries in the recursive caches.", labels=("cache",)
    )
    for name in ("answers", "services", "missing"):
        c = getattr(engine, name)
        hits.add_metric((name,), c.hits)
        misses.add_metric((name,), c.misses)
        size.add_metric((name,), len(c))
    yield hits
    yield misses
    yield size
    counters = engine.counters
    yield CounterMetricFamily(
        "idr_recursive_queries",
        "Queries the recursive engine sent to other nodes.",
        value=counters["queries"],
    )
    yield CounterMetricFamily(
        "idr_recursive_failures",
        "Recursive resolutions that ended without an answer.",
        value=counters["failures"],
    )


def add_metrics_routes(
    app: web.Application,
    service: Core,
    extra: list[MetricsSource] | None = None,
    tallies: Tallies | None = None,
) -> list[MetricsSource]:
    """Serve ``/metrics``; ``extra`` (returned) is where other parts add gauge sources;
    ``tallies``: the node's answer tallies (``Node.tallies``)."""
    extra = [] if extra is None else extra
    registry = CollectorRegistry(auto_describe=False)
    collector = NodeCollector(service, extra, tallies or Tallies())
    registry.register(collector)

    async def metrics(_: web.Request) -> web.Response:
        # a store query (a round trip on PostgreSQL): off the event loop, before the rest is read
        collector.log_seq = await asyncio.to_thread(service.store.last_seq)
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/metrics", metrics)
    return extra
