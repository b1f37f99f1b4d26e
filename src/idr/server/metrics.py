"""``GET /metrics`` in Prometheus text format, one registry per node.

Figures are read from the core when scraped (a custom collector), so the resolution hot
path pays nothing for them; several nodes in one process (``idr demo``) each keep their own
registry instead of sharing prometheus_client's global one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from idr.core.interface import Core

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MetricsSource = Callable[[], dict[str, float]]

_COUNTERS = {
    "resolutions": ("idr_resolutions", "Resolutions answered (解析量)."),
    "registrations": ("idr_registrations", "Identifiers registered (注册量)."),
    "writes": ("idr_writes", "Committed write transactions."),
    "errors": ("idr_errors", "Requests answered with an error code."),
}


class NodeCollector(Collector):
    def __init__(self, service: Core, extra: list[MetricsSource]) -> None:
        self.service = service
        self.extra = extra

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        counters = self.service.counters
        for key, (name, doc) in _COUNTERS.items():
            yield CounterMetricFamily(name, doc, value=counters.get(key, 0))
        cache = self.service.cache
        yield CounterMetricFamily("idr_cache_hits", "Record cache hits.", value=cache.hits)
        yield CounterMetricFamily("idr_cache_misses", "Record cache misses.", value=cache.misses)
        yield GaugeMetricFamily(
            "idr_log_sequence", "Newest transaction log sequence number.", value=self.service.store.last_seq()
        )
        for source in self.extra:
            for name, value in source().items():
                yield GaugeMetricFamily(name, name.replace("_", " "), value=value)


def add_metrics_routes(
    app: web.Application, service: Core, extra: list[MetricsSource] | None = None
) -> list[MetricsSource]:
    """Serve ``/metrics``; ``extra`` (returned) is where other parts add gauge sources."""
    extra = [] if extra is None else extra
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(service, extra))

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/metrics", metrics)
    return extra
