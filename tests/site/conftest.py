"""A site of several servers on 127.0.0.1: each server initialised as ``idr init --site-…`` does
(``init_node`` with a ``[site]``) and assembled by ``idr.node.Node``, as ``idr serve`` does."""

from __future__ import annotations

import errno
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from idr.cli.node import init_node
from idr.core.config import NodeConfig, SiteConfig
from idr.core.secret_policy import generate_link_secret
from idr.core.site import ServerSpec
from idr.model.site import SiteInfo
from idr.node import Node
from idr.server.server_key import SERVER_KEY_NAME
from tests.procs import free_port

PREFIX = "88.100"
ADMIN = "300:0.NA/88.100"
SECRET = "site-admin-secret-1"


def server_specs(n: int) -> list[str]:
    """``n`` servers on fresh loopback ports: native, HTTP, HTTPS and link."""
    return [
        str(ServerSpec("127.0.0.1", free_port(udp_too=True), free_port(), free_port(), free_port()))
        for _ in range(n)
    ]


def init_site(base: Path, specs: Sequence[str], *, dsns: Sequence[str] = (), secret: str = "") -> list[Path]:
    """``idr init`` each server of the site (the first makes the key pair the others share)."""
    secret = secret or generate_link_secret()
    dirs = []
    for i in range(len(specs)):
        data = base / f"s{i}"
        init_node(
            data,
            PREFIX,
            secret=SECRET,
            store="postgres" if dsns else "sqlite",
            dsn=dsns[i] if dsns else "",
            server_key=dirs[0] / SERVER_KEY_NAME if dirs else None,
            site=SiteConfig(servers=list(specs), index=i, secret=secret),
        )
        dirs.append(data)
    return dirs


@dataclass
class Site:
    specs: list[ServerSpec]
    nodes: list[Node] = field(default_factory=list)

    @property
    def info(self) -> SiteInfo:
        share = self.nodes[0].service.share  # type: ignore[attr-defined]
        assert share is not None
        return share.site  # type: ignore[no-any-return]

    def owner(self, handle: str) -> int:
        return self.info.servers.index(self.info.server_for(handle))

    def https(self, i: int) -> str:
        return f"https://127.0.0.1:{self.specs[i].https}"


INSECURE = ssl.create_default_context()
INSECURE.check_hostname = False
INSECURE.verify_mode = ssl.CERT_NONE


async def start_site(dirs: Sequence[Path]) -> Site:
    site = Site([ServerSpec.parse(s) for s in NodeConfig.load(dirs[0]).site.servers])
    try:
        for d in dirs:
            node = Node(NodeConfig.load(d))
            site.nodes.append(node)
            await node.start()
    except BaseException:
        await stop_site(site)
        raise
    return site


async def stop_site(site: Site) -> None:
    for node in site.nodes:
        await node.stop()
        node.close()


async def fresh_site(base: Path, n: int, dsns: Sequence[str] = ()) -> Site:
    """``n`` servers initialised and started on fresh ports; a port another suite took between
    picking and binding costs one more try in a fresh directory (at most three)."""
    for attempt in range(3):
        try:
            return await start_site(init_site(base / f"try{attempt}", server_specs(n), dsns=dsns))
        except OSError as e:
            if e.errno != errno.EADDRINUSE or attempt == 2:
                raise
    raise AssertionError("unreachable")


@pytest.fixture
async def site4(tmp_path: Path) -> AsyncIterator[Site]:
    """Four servers, SQLite each, home to 88.100 (admin 300:0.NA/88.100)."""
    site = await fresh_site(tmp_path, 4)
    try:
        yield site
    finally:
        await stop_site(site)
