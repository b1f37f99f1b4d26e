"""``idr stats``: a node's federation statistics (数据上报 and 统计汇聚), from a running node.

* ``idr stats show --node URL`` — the totals as the seeds phrase them (接入二级节点 N 个,
  企业节点 N 家, 标识注册量 N, 标识解析总量 N), each node with its status and availability,
  the last days (``--json`` for everything ``/api/federation/stats`` returns);
* ``idr stats report --node URL --auth … --secret …`` — make the node cut its figures and
  report them to its parent now (it also does so every ``report_interval`` seconds).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from idr.cli.common import fail, node_url
from idr.cli.federation import AuthOpt, CaOpt, InsecureOpt, NodeOpt, SecretOpt, _call, _identity


def federation_totals(url: str, *, cafile: str | None = None, timeout: float = 15.0) -> dict[str, Any]:
    """A node's ``/api/federation/stats`` (the top's: the federation's totals) as a dict —
    what a bench (``bench/federation_scale.py``) reads its totals back with. ``url``:
    ``http(s)://HOST:PORT`` or ``HOST:PORT`` (plain HTTP)."""
    import ssl
    import urllib.request

    base = url if "://" in url else f"http://{url}"
    ctx = ssl.create_default_context(cafile=cafile) if base.startswith("https:") else None
    endpoint = f"{base.rstrip('/')}/api/federation/stats"
    with urllib.request.urlopen(endpoint, timeout=timeout, context=ctx) as r:
        doc: dict[str, Any] = json.loads(r.read())
    if doc.get("responseCode") != 1:
        raise RuntimeError(f"{url}: {doc.get('message', doc)}")
    return doc


def _pct(x: Any) -> str:
    return "—" if x is None else f"{100 * float(x):.1f}%"


def print_stats(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console()
    out.print(
        f"接入二级节点 {doc['secondary_nodes']} 个 · 企业节点 {doc['enterprise_nodes']} 家 · "
        f"标识注册量 {doc['registered']} · 标识解析总量 {doc['resolutions']}"
    )
    out.print(
        f"secondary nodes {doc['secondary_nodes']}, enterprise nodes {doc['enterprise_nodes']}, "
        f"identifiers registered {doc['registered']} (deleted {doc['deleted']}), "
        f"resolutions {doc['resolutions']}, prefixes allocated {doc['prefixes_allocated']}, "
        f"filed {doc['prefixes_filed']}"
    )
    table = Table("node", "role", "status", "availability", "registered", "resolutions", "via")
    for n in doc["nodes"]:
        table.add_row(
            n["node"],
            n["role"],
            n["status"],
            _pct(n["availability"]),
            str(n["registered"]),
            str(n["resolutions"]),
            n["via"],
        )
    out.print(table)
    if doc.get("days"):
        days = Table("day", "registered", "deleted", "resolutions")
        for d in doc["days"][-7:]:
            days.add_row(d["day"], str(d["registered"]), str(d["deleted"]), str(d["resolutions"]))
        out.print(days)
    rep = doc.get("reporting") or {}
    if rep.get("parent"):
        error = f" — last error: {rep['last_error']}" if rep.get("last_error") else ""
        out.print(f"reports to {rep['parent']}{error}")


def register(app: typer.Typer) -> None:
    stats_app = typer.Typer(help="Federation statistics: totals, nodes, reporting.", no_args_is_help=True)
    app.add_typer(stats_app, name="stats")

    @stats_app.command("show")
    def show(
        node: NodeOpt,
        as_json: Annotated[bool, typer.Option("--json", help="Everything the API returns.")] = False,
        cafile: CaOpt = None,
        insecure: InsecureOpt = False,
    ) -> None:
        """The node's statistics of its subtree (the top's: the whole federation's)."""
        base = node_url(node)
        doc = _call(f"{base}/api/federation/stats", cafile=cafile, insecure=insecure)
        doc.pop("responseCode", None)
        if as_json:
            typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        else:
            print_stats(doc)

    @stats_app.command("report")
    def report(
        node: NodeOpt,
        secret: SecretOpt,
        auth: AuthOpt = None,
        cafile: CaOpt = None,
        insecure: InsecureOpt = False,
        as_json: Annotated[bool, typer.Option("--json", help="The node's answer as JSON.")] = False,
    ) -> None:
        """Report now: the node cuts its figures and sends its table to its parent."""
        base, user = node_url(node, secure=True), _identity(auth, None)
        doc = _call(
            f"{base}/api/federation/stats/send",
            method="POST",
            body={},
            user=user,
            secret=secret,
            cafile=cafile,
            insecure=insecure,
        )
        doc.pop("responseCode", None)
        if as_json:
            typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))
            return
        e = doc["entry"]
        typer.echo(
            f"cut {e['node']} #{e['seq']}: registered {e['counters'].get('registered', 0)}, "
            f"deleted {e['counters'].get('deleted', 0)}, resolutions "
            f"{sum(sum(c.values()) for c in e['resolutions'].values())}"
        )
        if doc.get("parent") is None:
            typer.echo("no parent to report to (the top keeps its own figures)")
        elif doc.get("sent"):
            ack = doc.get("ack") or {}
            applied, held = ack.get("applied", 0), ack.get("duplicates", 0)
            typer.echo(f"reported to {doc['parent']}: {applied} entries applied, {held} held already")
        else:
            fail(f"report to {doc['parent']} failed: {doc.get('error', '')}")


__all__ = ["federation_totals", "print_stats", "register"]
