"""Federation commands: ``trace``, ``prefix apply/list/approve/reject/file``, ``verify``,
``audit``, and the body of ``idr demo`` (the twin-city federation).

The client commands talk to running nodes over their HTTP API (``/api/federation/…``), so
they work against the demo as against any deployment; credentials are Basic over HTTPS.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import shutil
import ssl
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import typer
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from idr.cli.common import fail, node_url, run_async
from idr.core.config import ConfigError
from idr.model.errors import HandleError
from idr.store.base import StoreError

console = Console()
err = Console(stderr=True)

DEMO_RECURSIVE_HTTP = "http://127.0.0.1:26461"
DEMO_TOP_HTTP = "http://127.0.0.1:26401"
DEMO_APPLICANT_USCC = "91510100MA61R8XB2T"  # illustrative; passes the GB 32100 check character


def _repl_address(site: Any) -> str:
    rep = site.node.replicator
    return f"{rep.address[0]}:{rep.address[1]}" if rep is not None and rep.address else "?"


def _repl_secret(site: Any) -> str:
    return str(site.node.config.replication.secret)


ViaOpt = Annotated[
    str,
    typer.Option("--via", metavar="URL", help="A recursive node's API: URL, or HOST:PORT for http://."),
]
NodeOpt = Annotated[
    str,
    typer.Option("--node", metavar="URL", help="The node's API: https://HOST:PORT (or HOST:PORT)."),
]
AuthOpt = Annotated[
    str | None,
    typer.Option("--auth", metavar="INDEX:HANDLE", help="Your identity, e.g. 300:0.NA/88.168."),
]
UserAlias = Annotated[str | None, typer.Option("--user", hidden=True, help="Old name of --auth.")]
SecretOpt = Annotated[str, typer.Option("--secret", help="The identity's secret key.")]
CaOpt = Annotated[
    Path | None,
    typer.Option("--cafile", metavar="FILE", help="Pin this certificate (the node's tls/cert.pem)."),
]
InsecureOpt = Annotated[bool, typer.Option("--insecure", help="Accept any certificate.")]


def _identity(auth: str | None, user: str | None) -> str:
    """``--auth`` (or its old name ``--user``): INDEX:HANDLE, checked before anything is sent."""
    from idr.model.value import ValueReference

    given = auth or user
    if not given:
        fail("this command needs --auth INDEX:HANDLE (e.g. 300:0.NA/88.168) and --secret")
    try:
        ValueReference.parse(given)
    except ValueError:
        fail(f"--auth must be INDEX:HANDLE (e.g. 300:0.NA/88.168), not {given!r}")
    return given


def _call(
    url: str,
    *,
    method: str = "GET",
    body: dict[str, Any] | None = None,
    user: str = "",
    secret: str = "",
    cafile: Path | None = None,
    insecure: bool = False,
    timeout: float = 15.0,
) -> dict[str, Any]:
    """One JSON call; exits with the server's message on an error answer."""
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if user:
        token = base64.b64encode(f"{quote(user, safe='')}:{secret}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    ctx = None
    if url.startswith("https:"):
        try:
            ctx = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        except (OSError, ssl.SSLError) as e:
            fail(f"--cafile {cafile}: {getattr(e, 'strerror', None) or e}")
        if insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    try:
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            doc = json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            doc = json.loads(e.read() or b"{}")
        except (ValueError, OSError):
            doc = None
        if not isinstance(doc, dict) or not doc.get("message"):
            fail(f"{url}: HTTP {e.code} {e.reason}")
        fail(f"{doc['message']} (response code {doc.get('responseCode')})")
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or e
        fail(f"{url}: {reason or type(e).__name__} — is a node's API listening there?")
    if not isinstance(doc, dict):
        fail(f"{url}: unexpected answer")
    return doc


def _hop_text(h: dict[str, Any]) -> str:
    where = f" [dim]{h['server']}[/]" if h.get("server") else ""
    cached = " [cyan](cache)[/]" if h.get("cached") else ""
    note = f" [dim]— {h['note']}[/]" if h.get("note") else ""
    colour = "green" if h.get("code") == 1 else "yellow" if h.get("code") in (302, 303) else "red"
    return f"{h['node']}{where}  {h['handle']}  [{colour}]{h['status']}[/]  {h['ms']:.1f} ms{cached}{note}"


def resolution_trace(via: str, handle: str) -> dict[str, Any]:
    """Resolve ``handle`` at the recursive node ``via`` (HTTP URL): its answer with every hop."""
    return _call(f"{via.rstrip('/')}/api/federation/resolve?{urlencode({'handle': handle})}")


def print_resolution_trace(doc: dict[str, Any], *, values: bool = True) -> None:
    """The one rendering of a resolution's hops (``idr trace --no-follow``, ``idr resolve --trace``)."""
    tree = Tree(
        f"[bold]{doc['handle']}[/]  {doc['status']}" + ("  [cyan](cached)[/]" if doc.get("cached") else "")
    )
    for h in doc.get("hops", []):
        tree.add(_hop_text(h))
    if not values and doc.get("message"):
        tree.add(f"[red]{doc['message']}[/]")
    for v in doc.get("values", []) if values else []:
        val = v["data"]["value"]
        tree.add(f"[dim]{v['index']}[/] {v['type']} = {val if isinstance(val, str) else json.dumps(val)}")
    console.print(tree)


def _add_node(tree: Tree, node: dict[str, Any], hops: bool) -> None:
    via = f"[dim]{node['via']} →[/] " if node.get("via") else ""
    status = node.get("status", "")
    colour = "green" if node.get("code") == 1 else "red"
    branch = tree.add(
        f"{via}[bold]{node['handle']}[/]  [{colour}]{status}[/]"
        + (" (seen above)" if node.get("cycle") else "")
    )
    values = node.get("values") or {}
    shown = {
        k: v
        for k, v in values.items()
        if k.lower() in ("model", "manufacturer", "vin", "chemistry", "batch", "desc")
    }
    if shown:
        branch.add("[dim]" + ", ".join(f"{k}={v}" for k, v in shown.items()) + "[/]")
    if hops and node.get("hops"):
        path = branch.add("[dim]resolution path[/]")
        for h in node["hops"]:
            path.add(_hop_text(h))
    if node.get("truncated"):
        branch.add(f"[yellow]… {node['truncated']}[/]")
    for child in node.get("children", []):
        _add_node(branch, child, hops)


def run_demo(data: Path | None, base_port: int, seconds: float) -> None:
    from idr.demo import CELL, PACK, VEHICLE, start_federation

    tmp = None
    if data is None:
        tmp = Path(tempfile.mkdtemp(prefix="idr-demo-"))
        data = tmp
    try:
        run_async(_demo(data, base_port, seconds, CELL, PACK, VEHICLE, start_federation))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


async def _demo(
    data: Path, base_port: int, seconds: float, cell: str, pack: str, vehicle: str, start: Any
) -> None:
    err.print("starting the twin-city federation on 127.0.0.1 …")
    try:
        fed = await start(data, base_port=base_port)
    except (OSError, RuntimeError, ValueError, StoreError, ConfigError, HandleError) as e:
        fail(f"cannot start the federation: {e}")
    try:
        table = Table(title="idr demo — twin-city federation (成渝双城)")
        for col in ("node", "role", "prefix", "Handle UDP+TCP", "HTTP", "HTTPS"):
            table.add_column(col)
        moved = []
        for i, n in enumerate(fed.nodes.values()):
            want = base_port + 10 * i if base_port else 0
            if base_port and n.native[1] != want:
                moved.append(f"{n.name}: {want} was busy, using {n.native[1]}")
            table.add_row(
                n.name,
                n.role,
                n.prefix if n.role != "recursive" else "—",
                str(n.native[1]),
                str(n.http[1]),
                str(n.https[1]),
            )
        console.print(table)
        for m in moved:
            console.print(f"[yellow]port moved[/]: {m}")
        for note in fed.notes:
            console.print(f"[dim]note: {note}[/]")
        from idr.demo import CELL_DL_PATH, CELL_ECODE, CELL_ELEMENT_STRING

        rec, top, sec, mirror = fed["recursive"], fed["top-cq"], fed["sec-sc"], fed["top-cd"]
        via = rec.http_url
        rec_native = f"127.0.0.1:{rec.native[1]}"
        console.print(
            f"\n[bold]Web console[/] 控制台: [bold cyan]{top.http_url}/console[/]\n"
            f"  the top node: dashboard, federation map (Chongqing primary + Chengdu mirror), resolve "
            f"with trace, supply chain\n"
            f"  prefix review at the Sichuan secondary: [bold cyan]{sec.https_url}/console/prefixes[/]\n"
            f"  (self-signed certificate; log in as {sec.admin}, secret {sec.secret})",
            highlight=False,
        )
        lines = [
            (
                "resolve the Yibin cell through the recursive node, every hop shown",
                f"idr resolve {cell} --server {rec_native} --trace",
            ),
            (
                "the same cell by its GS1 Digital Link, GS1 element string and Ecode (one record)",
                f"idr resolve '{CELL_ELEMENT_STRING}' --server {rec_native} --trace\n"
                f"    idr resolve {CELL_ECODE} --server {rec_native}\n"
                f"    curl -i {via}{CELL_DL_PATH}\n"
                f"    curl '{via}/api/resolve?id=https://id.example.cn{CELL_DL_PATH}'",
            ),
            (
                "follow the supply chain: vehicle (Chongqing) → battery pack → cells (Yibin)",
                f"idr trace {vehicle} --via {via}",
            ),
            (
                "REST API of the recursive node, and the JSON with hops",
                f"curl {via}/api/handles/{cell}\n    curl '{via}/api/federation/resolve?handle={cell}'",
            ),
            (
                "ask the top node directly: it refers (303) to the Sichuan secondary node",
                f"idr resolve {cell} --server 127.0.0.1:{top.native[1]}",
            ),
            (
                "one top, one backup: the Chengdu mirror answers too; writes there name the primary",
                f"idr resolve 0.NA/88.168 --server 127.0.0.1:{mirror.native[1]}\n"
                f"    idr status --site {_repl_address(mirror)} --secret {_repl_secret(mirror)}",
            ),
            (
                "verify (核验) a prefix or an identifier at the top node",
                f"idr verify {cell} --top {top.http_url}",
            ),
            (
                "identifier data templates of the Sichuan secondary node",
                f"curl {sec.http_url}/api/federation/templates",
            ),
            (
                "apply for a prefix at the Sichuan secondary node (approval files it with the top)",
                f"idr prefix apply --node {sec.https_url} --cafile {sec.cert} --enterprise 'My Co' "
                f"--uscc {DEMO_APPLICANT_USCC} --contact me@example.org --secret my-secret-123\n"
                f"    idr prefix list --node {sec.https_url} --cafile {sec.cert} "
                f"--auth '{sec.admin}' --secret {sec.secret}",
            ),
            (
                "the audit trail (transaction log) of the Sichuan secondary node",
                f"idr audit --node {sec.https_url} --cafile {sec.cert} "
                f"--auth '{sec.admin}' --secret {sec.secret}",
            ),
        ]
        console.print("\n[bold]Try:[/]")
        for why, cmd in lines:
            console.print(f"  [dim]# {why}[/]")
            console.print(f"  {cmd}", soft_wrap=True, highlight=False, markup=False)
        console.print(f"\nsupply chain: {vehicle} → {pack} → {cell}")
        console.print(f"data: {data}")
        until = f"for {seconds:g} s" if seconds > 0 else "until Ctrl-C"
        console.print(f"[green]running {until}[/]")
        with contextlib.suppress(asyncio.CancelledError):
            if seconds > 0:
                await asyncio.sleep(seconds)
            else:
                await asyncio.Event().wait()
    finally:
        await fed.stop()


def register(app: typer.Typer) -> None:
    prefix_app = typer.Typer(
        help="Prefix applications at a secondary node (申请, 实名审核, 备案).", no_args_is_help=True
    )
    app.add_typer(prefix_app, name="prefix")

    @app.command()
    def trace(
        handle: str,
        via: ViaOpt = DEMO_RECURSIVE_HTTP,
        no_follow: Annotated[
            bool, typer.Option("--no-follow", help="Only this identifier, not its references.")
        ] = False,
        depth: Annotated[int, typer.Option(min=0, max=32, help="How deep to follow references.")] = 6,
        hops: Annotated[bool, typer.Option(help="Show each identifier's resolution path.")] = True,
        as_json: Annotated[bool, typer.Option("--json", help="Print the JSON answer.")] = False,
    ) -> None:
        """Resolve HANDLE through a recursive node, showing every hop (node, prefix, latency,
        cache hit), and follow its references across nodes (the supply-chain tree).

        Exits with 1 when HANDLE itself does not resolve."""
        base = node_url(via, "--via")
        if no_follow:
            doc = resolution_trace(base, handle)
            if as_json:
                console.print_json(data=doc)
            else:
                print_resolution_trace(doc)
            if doc.get("code") != 1:
                raise typer.Exit(1)
            return
        doc = _call(f"{base}/api/federation/trace?{urlencode({'handle': handle, 'depth': depth})}")
        tree = doc.get("tree")
        if not isinstance(tree, dict):
            fail(f"{base}: the answer holds no trace")
        if as_json:
            console.print_json(data=doc)
        else:
            root = Tree("[bold]supply chain[/]")
            _add_node(root, tree, hops)
            console.print(root)
        if tree.get("code") != 1:
            raise typer.Exit(1)

    @app.command()
    def verify(
        identifier: str,
        top: Annotated[
            str,
            typer.Option("--top", metavar="URL", help="The top node's API: URL, or HOST:PORT for http://."),
        ] = DEMO_TOP_HTTP,
        as_json: Annotated[bool, typer.Option("--json", help="Print the JSON answer.")] = False,
    ) -> None:
        """核验: is the prefix (of IDENTIFIER) filed, which node serves it, is that node answering."""
        base = node_url(top, "--top")
        doc = _call(f"{base}/api/federation/verify?{urlencode({'id': identifier})}").get("verification")
        if not isinstance(doc, dict):
            fail(f"{base}: the answer holds no verification (is it a top node?)")
        if as_json:
            console.print_json(data=doc)
            return
        ok = "[green]yes[/]"
        no = "[red]no[/]"
        console.print(f"prefix [bold]{doc['prefix']}[/]  filed: {ok if doc['filed'] else no}")
        filing = doc.get("filing") or {}
        if filing.get("enterprise"):
            console.print(
                f"  filed by {filing.get('filed_by')} for {filing['enterprise']} ({filing.get('uscc')})"
            )
        for s in doc.get("served_by", []):
            console.print(f"  served by {s['node']} at {s['server']}")
        console.print(f"  answering: {ok if doc['answering'] else no}")
        if "identifier" in doc:
            i = doc["identifier"]
            console.print(f"identifier {i['handle']}: {ok if i['exists'] else no} ({i['status']})")
        if not doc["filed"] or not doc["answering"]:
            raise typer.Exit(1)

    @app.command()
    def audit(
        node: NodeOpt,
        secret: SecretOpt,
        auth: AuthOpt = None,
        user: UserAlias = None,
        match: Annotated[str, typer.Option(help="Only entries touching keys that contain this.")] = "",
        limit: Annotated[int, typer.Option(min=1, max=10000, help="At most this many entries.")] = 50,
        since: Annotated[int, typer.Option(min=0, help="Only entries after this log sequence number.")] = 0,
        cafile: CaOpt = None,
        insecure: InsecureOpt = False,
    ) -> None:
        """The node's audit trail, read from its transaction log: who changed what, when.

        It answers for the part of the log the node keeps ([log] retention in its idr.toml) and
        says so when asked about older entries."""
        import datetime as dt

        base, who = node_url(node, secure=True), _identity(auth, user)
        q = urlencode({"match": match, "limit": limit, "since": since})
        doc = _call(
            f"{base}/api/federation/audit?{q}",
            user=who,
            secret=secret,
            cafile=cafile,
            insecure=insecure,
        )
        table = Table("seq", "time (UTC)", "op", "actor", "records")
        for e in doc.get("entries", []):
            when = dt.datetime.fromtimestamp(e["time"], dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
            keys = ", ".join(e["keys"][:3]) + (" …" if len(e["keys"]) > 3 else "")
            table.add_row(str(e["seq"]), when, e["op"], e["actor"], keys)
        console.print(table)
        if "retained_from" in doc:
            console.print(f"log kept: seq {doc['retained_from']}..{doc.get('last_seq', '?')}")
        if doc.get("beyond_retention"):
            console.print(f"[yellow]note:[/] {doc['beyond_retention']}")

    @prefix_app.command("apply")
    def prefix_apply(
        node: NodeOpt,
        enterprise: Annotated[str, typer.Option(help="Registered name of the enterprise.")],
        uscc: Annotated[str, typer.Option(help="Unified social credit code (18 characters).")],
        contact: Annotated[str, typer.Option(help="Contact (e-mail or phone).")],
        secret: Annotated[
            str, typer.Option(help="Secret key of the new prefix's admin (300:0.NA/<prefix>).")
        ],
        prefix: Annotated[str, typer.Option(help="A specific prefix to ask for (else the next free).")] = "",
        cafile: CaOpt = None,
        insecure: InsecureOpt = False,
    ) -> None:
        """Apply for an enterprise prefix at a secondary node."""
        body = {
            "enterprise": enterprise,
            "uscc": uscc,
            "contact": contact,
            "secret": secret,
            "prefix": prefix,
        }
        doc = _call(
            f"{node_url(node, secure=True)}/api/federation/applications",
            method="POST",
            body=body,
            cafile=cafile,
            insecure=insecure,
        )
        a = doc["application"]
        console.print(f"application [bold]{a['id']}[/] for {a['enterprise']} is {a['status']}")

    @prefix_app.command("list")
    def prefix_list(
        node: NodeOpt,
        secret: SecretOpt,
        auth: AuthOpt = None,
        user: UserAlias = None,
        status: Annotated[str, typer.Option(help="pending, approved or rejected")] = "",
        cafile: CaOpt = None,
        insecure: InsecureOpt = False,
    ) -> None:
        """Applications at a secondary node (its admins only)."""
        if status not in ("", "pending", "approved", "rejected"):
            fail(f"--status is pending, approved or rejected, not {status!r}")
        base, who = node_url(node, secure=True), _identity(auth, user)
        q = urlencode({"status": status}) if status else ""
        doc = _call(
            f"{base}/api/federation/applications?{q}",
            user=who,
            secret=secret,
            cafile=cafile,
            insecure=insecure,
        )
        table = Table("id", "enterprise", "USCC", "status", "prefix", "filed", "reason")
        for a in doc.get("applications", []):
            filed = "yes" if a["filed"] else (a["filing_error"][:40] or "—")
            table.add_row(
                a["id"],
                a["enterprise"],
                a["uscc"],
                a["status"],
                a["prefix"] or a["requested"],
                filed,
                a["reason"],
            )
        console.print(table)

    def _decide(
        action: str,
        node: str,
        app_id: str,
        who: tuple[str | None, str | None],
        secret: str,
        body: dict[str, Any],
        cafile: Path | None,
        insecure: bool,
    ) -> None:
        base, user = node_url(node, secure=True), _identity(*who)
        doc = _call(
            f"{base}/api/federation/applications/{quote(app_id, safe='')}/{action}",
            method="POST",
            body=body,
            user=user,
            secret=secret,
            cafile=cafile,
            insecure=insecure,
        )
        a = doc["application"]
        extra = f" → prefix {a['prefix']}" if a.get("prefix") else ""
        filed = (
            ""
            if action == "reject"
            else ("; filed with the top" if a["filed"] else f"; NOT filed: {a['filing_error']}")
        )
        console.print(f"application {a['id']}: {a['status']}{extra}{filed}")

    @prefix_app.command("approve")
    def prefix_approve(
        app_id: str,
        node: NodeOpt,
        secret: SecretOpt,
        auth: AuthOpt = None,
        user: UserAlias = None,
        prefix: Annotated[str, typer.Option(help="Allocate this prefix instead of the next free.")] = "",
        cafile: CaOpt = None,
        insecure: InsecureOpt = False,
    ) -> None:
        """Approve (real-name review passed): allocate, set its admin, file it with the top."""
        _decide("approve", node, app_id, (auth, user), secret, {"prefix": prefix}, cafile, insecure)

    @prefix_app.command("reject")
    def prefix_reject(
        app_id: str,
        node: NodeOpt,
        secret: SecretOpt,
        reason: Annotated[str, typer.Option(help="Why (the applicant sees it).")],
        auth: AuthOpt = None,
        user: UserAlias = None,
        cafile: CaOpt = None,
        insecure: InsecureOpt = False,
    ) -> None:
        """Reject an application with a reason."""
        if not reason.strip():
            fail("--reason must say why (the applicant sees it)")
        _decide("reject", node, app_id, (auth, user), secret, {"reason": reason}, cafile, insecure)

    @prefix_app.command("file")
    def prefix_file(
        app_id: str,
        node: NodeOpt,
        secret: SecretOpt,
        auth: AuthOpt = None,
        user: UserAlias = None,
        cafile: CaOpt = None,
        insecure: InsecureOpt = False,
    ) -> None:
        """File (again) an approved prefix with the top node."""
        _decide("file", node, app_id, (auth, user), secret, {}, cafile, insecure)
