"""HTTP routes of federation statistics, and their Prometheus figures.

* ``GET /api/federation/stats`` — this node's subtree: totals as the seeds phrase them
  (secondary nodes, enterprise nodes, identifiers registered, resolutions), breakdowns per
  secondary node, industry and region, per day and month, and every node with its status
  and availability (public, as the national figures are);
* ``POST /api/federation/stats/report`` — a child's report (HTTPS, as the child's identity);
* ``POST /api/federation/stats/send`` — report now (HTTPS, as an admin of this node).

The work is the node's :class:`idr.runtime.reporting.StatsHub`; a node without one (a
standalone node) answers 501.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from idr.codec import rest
from idr.model.errors import HandleError, ResponseCode
from idr.server.http import _identity, _require_tls

if TYPE_CHECKING:
    from idr.runtime.reporting import StatsHub

NODE_KEY = web.AppKey("idr.stats.node", object)


def _hub(request: web.Request) -> StatsHub:
    hub: StatsHub | None = getattr(request.app[NODE_KEY], "stats_hub", None)
    if hub is None:
        raise HandleError(ResponseCode.OPERATION_NOT_SUPPORTED, "this node keeps no federation statistics")
    return hub


def _ok(obj: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=rest.dumps({"responseCode": 1, **obj}),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def stats(request: web.Request) -> web.Response:
    return _ok(await _hub(request).stats())


async def report(request: web.Request) -> web.Response:
    hub = _hub(request)
    _require_tls(request)
    identity = _identity(request)
    if identity is None:
        raise HandleError(
            ResponseCode.AUTHENTICATION_NEEDED, "a report is sent as the node's identity (Basic over HTTPS)"
        )
    doc = rest.loads(await request.read())
    return _ok(await hub.receive(identity, doc))


async def send(request: web.Request) -> web.Response:
    hub = _hub(request)
    _require_tls(request)
    identity = _identity(request)
    if identity is None or not hub.service.is_server_admin(identity):
        raise HandleError(
            ResponseCode.INSUFFICIENT_PERMISSIONS, "reporting on demand is for this node's admins"
        )
    return _ok(await hub.report_now())


def add_stats_routes(app: web.Application, node: object) -> None:
    """Mount the statistics routes; ``node.stats_hub`` is read per request (it starts later)."""
    app[NODE_KEY] = node
    app.router.add_get("/api/federation/stats", stats)
    app.router.add_post("/api/federation/stats/report", report)
    app.router.add_post("/api/federation/stats/send", send)


def stats_metrics(node: object) -> dict[str, float]:
    """Gauges for ``/metrics``: the federation totals this node's statistics hold."""
    hub: StatsHub | None = getattr(node, "stats_hub", None)
    if hub is None or hub.summary is None:
        return {}
    s = hub.summary
    return {
        "idr_federation_secondary_nodes": s["secondary_nodes"],
        "idr_federation_enterprise_nodes": s["enterprise_nodes"],
        "idr_federation_registered": s["registered"],
        "idr_federation_deleted": s["deleted"],
        "idr_federation_resolutions": s["resolutions"],
        "idr_federation_prefixes_allocated": s["prefixes_allocated"],
        "idr_federation_prefixes_filed": s["prefixes_filed"],
        "idr_federation_nodes_down": s["nodes_down"],
        "idr_federation_nodes_late": s["nodes_late"],
    }
