"""Building a federation by hand: ``idr federation site`` and ``idr federation join``.

``site`` prints where a node lives — its HS_SITE record — asked of a running node
(GET_SITE_INFO) or read from a data directory's ``idr.toml``, with the ``--value`` spec that
writes the same record (``1:HS_SITE:127.0.0.1:2641,http=8000,https=8443,desc=…``).

``join`` registers a node with its parent, run with the *parent's* admin identity: it writes
``0.NA/<prefix>`` at the parent — the node's sites (HS_SITE; a secondary's also as
HS_SITE.PREFIX, so the parent hands it the derived prefix handles) and, when the parent has
no record yet, the node's admin and key (so the node can authenticate there, e.g. to file
prefixes with the top) — stops the parent serving the prefix itself if it did (an approved
enterprise prefix is homed at its secondary until it has a node), and writes the node's
``federation.toml``: the top service's address (``root``) and, for a secondary, the top's HTTPS
API and pinned certificate to file prefixes with (docs/federation.md has the whole recipe).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from idr.cli.common import fail, host_port
from idr.codec import rest
from idr.codec.site import decode_site
from idr.core.config import ConfigError, NodeConfig
from idr.model.errors import HandleError
from idr.model.handle import normalize_key, prefix_handle
from idr.model.site import SiteInfo, TransportProtocol
from idr.model.value import HandleValue, ValueReference

out = Console()
SITE_TYPES = ("HS_SITE", "HS_SITE.6", "HS_SITE.PREFIX")
KEY_TYPES = ("HS_SECKEY", "HS_PUBKEY")


# --------------------------------------------------------------------------- site specs


def parse_site(spec: str) -> SiteInfo:
    """``HOST:PORT[,http=P][,https=P][,desc=NAME][,mirror]`` → a one-server site whose Handle
    protocol port (UDP and TCP) is PORT; or ``@FILE``: a site as ``idr federation site --json``
    prints it (the REST API's site value), or its binary encoding. ValueError says why not."""
    from idr.core.federation import loopback_site

    if spec.startswith("@"):
        path = Path(spec[1:])
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise ValueError(f"cannot read site file {path}: {e.strerror or e}") from e
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            try:
                return decode_site(raw)
            except Exception as e:
                raise ValueError(f"{path} is neither a site JSON nor an encoded HS_SITE") from e
        if isinstance(doc, dict) and doc.get("format") == "site":
            doc = doc.get("value")
        try:
            return rest.site_from_json(doc, str(path))
        except HandleError as e:
            raise ValueError(e.message) from e
    first, *rest_ = spec.split(",")
    host, sep, port = first.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"a site is HOST:PORT[,http=P][,https=P][,desc=NAME][,mirror], not {spec!r}")
    opts: dict[str, str] = {}
    primary = True
    for item in rest_:
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if key == "mirror" and not eq:
            primary = False
        elif (key in ("http", "https") and value.isdigit() and 0 < int(value) < 65536) or (
            key == "desc" and eq
        ):
            opts[key] = value
        else:
            raise ValueError(f"site option {item!r} is not http=PORT, https=PORT, desc=NAME or mirror")
    try:
        return loopback_site(
            opts.get("desc", host),
            native=int(port),
            http=int(opts["http"]) if "http" in opts else None,
            https=int(opts["https"]) if "https" in opts else None,
            host=host,
            primary=primary,
        )
    except ValueError as e:
        raise ValueError(f"site address {host!r} is not an IP address") from e


def site_spec(site: SiteInfo) -> str:
    """The ``--value`` spec of a one-server site (what ``parse_site`` reads back)."""
    srv = site.servers[0]
    native = srv.port_for(TransportProtocol.TCP) or srv.port_for(TransportProtocol.UDP)
    host = f"[{srv.host}]" if ":" in srv.host else srv.host
    parts = [f"{host}:{native}"]
    for name, proto in (("http", TransportProtocol.HTTP), ("https", TransportProtocol.HTTPS)):
        port = srv.port_for(proto)
        if port:
            parts.append(f"{name}={port}")
    desc = site.attribute("desc")
    if desc and "," not in desc:
        parts.append(f"desc={desc}")
    if not site.primary:
        parts.append("mirror")
    return ",".join(parts)


def configured_site(cfg: NodeConfig, host: str | None = None) -> SiteInfo:
    """The site a node in ``cfg`` publishes, from its listen addresses (``host``: the address
    others reach it at, when it listens on all interfaces); a server of a site of several
    servers publishes the whole site (``[site] servers``, docs/sites.md)."""
    from idr.core.federation import loopback_site
    from idr.node import parse_address, site_share

    share = site_share(cfg)
    if share is not None:
        return share.site

    addrs = {
        k: parse_address(a) if a else None
        for k, a in (("native", cfg.native), ("http", cfg.http), ("https", cfg.https))
    }
    if addrs["native"] is None:
        raise ConfigError(
            f"{cfg.path}: a node in a federation listens on the Handle protocol ([listen] native)"
        )
    listen_host = addrs["native"][0]
    where = host or listen_host
    if where in ("0.0.0.0", "::"):
        raise ConfigError(
            f"{cfg.path} listens on all interfaces: give --host, the address others reach it at"
        )
    return loopback_site(
        cfg.name,
        native=addrs["native"][1],
        http=addrs["http"][1] if addrs["http"] else None,
        https=addrs["https"][1] if addrs["https"] else None,
        host=where,
    )


def _print_site(site: SiteInfo, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(rest.site_to_json(site), indent=2, ensure_ascii=False))
        return
    table = Table(title=f"{site.attribute('desc') or 'site'} ({'primary' if site.primary else 'mirror'})")
    for col in ("server", "address", "interfaces"):
        table.add_column(col)
    for srv in site.servers:
        ifaces = ", ".join(f"{i.protocol.name.lower()}:{i.port}" for i in srv.interfaces)
        table.add_row(str(srv.server_id), srv.host, ifaces)
    out.print(table)
    if len(site.servers) == 1:
        out.print(f"as a value: 1:HS_SITE:{site_spec(site)}", highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- join


async def _join(
    cfg: NodeConfig,
    prefix: str,
    site: SiteInfo,
    parent: tuple[str, int],
    auth: Any,
    timeout: float,
) -> tuple[list[str], SiteInfo]:
    """Write ``0.NA/<prefix>`` at ``parent`` (see the module docstring); what was done, and the
    parent's own site."""
    from idr.core.federation import delegation_values
    from idr.model.errors import ResponseCode
    from idr.node import open_store
    from idr.resolver.client import HandleClient, ResponseError

    ph = prefix_handle(prefix)
    done: list[str] = []
    async with HandleClient(*parent, auth=auth, timeout=timeout) as client:
        parent_site = await client.site_info()
        try:
            current = await client.resolve_values(ph, public_only=False)
        except ResponseError as e:
            if e.code != ResponseCode.HANDLE_NOT_FOUND:
                raise
            current = ()
        kept = [v for v in current if not v.type.upper().startswith(("HS_SITE", "HS_SERV"))]
        if not current:
            store = open_store(cfg)
            try:
                own = store.get(normalize_key(ph))
            finally:
                store.close()
            if own is None:
                raise ConfigError(f"{cfg.data_dir} holds no {ph}: is it the node of {prefix}?")
            kept = [v for v in own.values if v.type.upper() == "HS_ADMIN" or v.type.upper() in KEY_TYPES]
            done.append(f"{ph}: the node's admin and key copied")
        used = {v.index for v in kept}
        sites = delegation_values([site], derived=cfg.role == "secondary")
        placed = []
        for v in sites:
            index = v.index
            while index in used:
                index += 1
            used.add(index)
            placed.append(HandleValue(index, v.type, v.data, v.ttl))
        values = [*kept, *placed]
        await client.create(ph, values, overwrite=True)
        kinds = sorted({v.type for v in placed})
        done.append(f"{ph} at {parent[0]}:{parent[1]}: {', '.join(kinds)} → {site_spec(site)}")
        homed = {normalize_key(p) for p in await client.list_homed()}
        if normalize_key(prefix) in homed:
            await client.unhome(prefix)
            done.append(f"{prefix} no longer served by the parent itself (unhomed there)")
    return done, parent_site


def _https_url(site: SiteInfo) -> str:
    for srv in site.servers:
        port = srv.port_for(TransportProtocol.HTTPS)
        if port:
            host = f"[{srv.host}]" if ":" in srv.host else srv.host
            return f"https://{host}:{port}"
    return ""


def _native(site: SiteInfo) -> str:
    srv = site.servers[0]
    port = srv.port_for(TransportProtocol.TCP) or srv.port_for(TransportProtocol.UDP)
    host = f"[{srv.host}]" if ":" in srv.host else srv.host
    return f"{host}:{port}"


def register(app: typer.Typer) -> None:
    fed = typer.Typer(help="Join nodes into a federation (their HS_SITE records).", no_args_is_help=True)
    app.add_typer(fed, name="federation")

    @fed.command("site")
    def site_cmd(
        server: Annotated[
            str | None,
            typer.Option(
                "--server", "-s", metavar="HOST:PORT", help="A running node's Handle protocol address."
            ),
        ] = None,
        data: Annotated[
            Path | None,
            typer.Option("--data", "-d", metavar="DIR", help="A node's data directory (its idr.toml)."),
        ] = None,
        host: Annotated[
            str | None, typer.Option(metavar="ADDRESS", help="With --data: the address others reach it at.")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="The site as the REST API writes it.")] = False,
        timeout: Annotated[float, typer.Option(help="Seconds to wait for one answer.")] = 5.0,
        wait: Annotated[
            float,
            typer.Option(min=0, metavar="SECONDS", help="Keep asking a node that is starting, this long."),
        ] = 0.0,
    ) -> None:
        """Print a node's site record (HS_SITE): asked of a running node, or from its settings."""
        if (server is None) == (data is None):
            fail("give --server HOST:PORT (a running node) or --data DIR (its settings)")
        if data is not None:
            try:
                site = configured_site(NodeConfig.load(data), host)
            except (ConfigError, ValueError) as e:
                fail(str(e))
        else:
            assert server is not None
            site = asyncio.run(_site_info(host_port(server, "--server"), timeout, wait))
        _print_site(site, as_json)

    @fed.command("join")
    def join_cmd(
        data: Annotated[
            Path, typer.Option("--data", "-d", metavar="DIR", help="The joining node's data directory.")
        ],
        parent: Annotated[
            str,
            typer.Option(
                metavar="HOST:PORT", help="The parent's Handle protocol address (the top, a secondary)."
            ),
        ],
        auth: Annotated[
            str,
            typer.Option(metavar="INDEX:HANDLE", help="The parent's admin, e.g. 300:0.NA/0.NA at the top."),
        ],
        secret: Annotated[str | None, typer.Option(help="The secret of --auth (HS_SECKEY).")] = None,
        key: Annotated[
            Path | None, typer.Option(metavar="FILE", help="The private key of --auth (HS_PUBKEY).")
        ] = None,
        root: Annotated[
            list[str] | None,
            typer.Option(
                metavar="HOST:PORT", help="The top service's address (default: the parent, for a secondary)."
            ),
        ] = None,
        parent_cafile: Annotated[
            Path | None,
            typer.Option(
                metavar="FILE",
                help="A secondary: the top's certificate (its tls/cert.pem), pinned for filing.",
            ),
        ] = None,
        host: Annotated[
            str | None, typer.Option(metavar="ADDRESS", help="The address others reach this node at.")
        ] = None,
        timeout: Annotated[float, typer.Option(help="Seconds to wait for the parent.")] = 10.0,
    ) -> None:
        """Register the node in DATA with its parent: its HS_SITE in 0.NA/<prefix> there, and its
        federation.toml (the top's address; a secondary also how to file prefixes with the top)."""
        from idr.cli.client import _authenticator
        from idr.resolver.client import ClientError, ResponseError

        try:
            cfg = NodeConfig.load(data)
        except ConfigError as e:
            fail(str(e))
        if cfg.role not in ("secondary", "enterprise"):
            fail(f"a {cfg.role} node has no parent to join (secondary and enterprise nodes do)")
        prefixes = [p for p in cfg.admins if p]
        prefix = prefixes[0].partition(":")[2].partition("/")[2] if prefixes else ""
        if not prefix:
            fail(f"{cfg.path} names no admin 300:0.NA/<prefix>: is it a node made by idr init?")
        try:
            site = configured_site(cfg, host)
        except (ConfigError, ValueError) as e:
            fail(str(e))
        where = host_port(parent, "--parent")
        roots = list(root or ([] if cfg.role == "enterprise" else [parent]))
        if not roots:
            existing = _settings(data)
            roots = existing.root
        if not roots:
            fail("an enterprise node needs --root HOST:PORT, the top service's address")
        for r in roots:
            host_port(r, "--root")
        authenticator = _authenticator(auth, key, secret)
        try:
            done, parent_site = asyncio.run(_join(cfg, prefix, site, where, authenticator, timeout))
        except ResponseError as e:
            fail(f"the parent refused: {e}")
        except (ClientError, OSError, TimeoutError) as e:
            fail(f"cannot reach the parent at {parent}: {e}")
        except (ConfigError, HandleError) as e:
            fail(str(e))
        settings = _settings(data)
        settings.root = roots
        if cfg.role == "secondary":
            settings.top_url = _https_url(parent_site)
            own_secret = _own_secret(cfg, prefix)
            settings.top_secret = own_secret or settings.top_secret
            if parent_cafile is not None:
                settings.top_cafile = str(parent_cafile.resolve())
        settings.save(data)
        for line in done:
            out.print(f"[green]✓[/] {line}", highlight=False)
        out.print(f"[green]✓[/] {data / 'federation.toml'}: root {', '.join(roots)}", highlight=False)
        if cfg.role == "secondary":
            if not settings.top_url:
                out.print("[yellow]the parent publishes no HTTPS interface: prefixes cannot be filed[/]")
            else:
                out.print(f"  files prefixes with {settings.top_url}", highlight=False)
                if not settings.top_cafile:
                    out.print(
                        "[yellow]  no --parent-cafile: the top's certificate must be trusted by the system[/]"
                    )
            if not settings.top_secret:
                out.print("[yellow]  the node's admin has no secret key: set top_secret to file prefixes[/]")
        out.print("restart the node (idr serve) for its federation settings to take effect")


async def _site_info(server: tuple[str, int], timeout: float, wait: float = 0.0) -> SiteInfo:
    """The node's site info; a node still starting is asked again until ``wait`` runs out."""
    from idr.resolver.client import ClientError, HandleClient, ResponseError

    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        try:
            async with HandleClient(*server, timeout=timeout) as client:
                return await client.site_info()
        except (ClientError, ResponseError, OSError, TimeoutError) as e:
            if loop.time() >= deadline:
                fail(f"no site info from {server[0]}:{server[1]}: {e}")
        await asyncio.sleep(0.2)


def _settings(data: Path) -> Any:
    from idr.core.federation import FederationSettings

    try:
        return FederationSettings.load(data)
    except ConfigError as e:
        fail(str(e))


def _own_secret(cfg: NodeConfig, prefix: str) -> str:
    """The node admin's secret key, from its own store (filing authenticates with it)."""
    from idr.node import open_store

    admin = ValueReference.parse(cfg.admins[0])
    store = open_store(cfg)
    try:
        rec = store.get(normalize_key(prefix_handle(prefix)))
    finally:
        store.close()
    for v in rec.values if rec else ():
        if v.type.upper() == "HS_SECKEY" and v.index == admin.index:
            return v.data.decode("utf-8", "replace")
    return ""
