"""A whole node as ``idr serve`` assembles it (``idr init`` data directory, ``Node.start``): the
REST API, proxy, SNMS API, console and sessions API over HTTPS and plain HTTP, on 127.0.0.1.

Every attack test asserts its bound against this node, and that a refused write left the
store exactly as it was (``Live.snapshot``).
"""

from __future__ import annotations

import base64
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from idr.cli.node import init_node
from idr.codec.values import encode_admin
from idr.core.config import NodeConfig
from idr.core.request import Op, Request
from idr.model.handle import normalize_key
from idr.model.value import (
    PERM_SECRET,
    AdminPermission,
    AdminRecord,
    HandleRecord,
    HandleValue,
    ValueReference,
)
from idr.node import Node

PREFIX = "88.100"
ADMIN = "300:0.NA/88.100"
SECRET = "admin-secret-key"
ADMIN_REF = ValueReference("0.NA/88.100", 300)


def basic(user: str = ADMIN, password: str = SECRET) -> dict[str, str]:
    """The header pyhandle sends: ``Basic base64(quote(user) + ":" + password)``."""
    token = base64.b64encode(f"{quote(user)}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@dataclass
class Live:
    node: Node
    https: str
    http: str
    data: Path
    client: aiohttp.ClientSession

    def snapshot(self) -> tuple[int, list[str]]:
        """Log position and every handle under the prefix: equal before and after = nothing written."""
        store = self.node.service.store
        return store.last_seq(), store.list_handles(PREFIX, None, 100_000)

    def record(self, handle: str) -> HandleRecord | None:
        """Straight from the store, past every cache."""
        return self.node.service.store.get(normalize_key(handle))

    async def put(
        self, handle: str, body: Any, headers: dict[str, str] | None = None, query: str = ""
    ) -> Any:
        url = f"{self.https}/api/handles/{handle}{query}"
        async with self.client.put(url, json=body, headers=headers or basic()) as r:
            return r.status, await r.json(content_type=None)

    async def identity(
        self, handle: str, secret: str, rights: AdminPermission, *, on: str, index: int = 300
    ) -> str:
        """Create ``handle`` holding secret key ``secret`` at ``index`` and make ``index:handle``
        an admin of ``on`` with only ``rights`` (HS_ADMIN at index 101); returns the identity."""
        svc = self.node.service
        me = f"{index}:{handle}"
        admin = ADMIN_REF
        key = HandleValue(index, "HS_SECKEY", secret.encode(), permissions=PERM_SECRET)
        own = HandleValue(100, "HS_ADMIN", encode_admin(AdminRecord(handle, index, AdminPermission.ALL)))
        r = await svc.submit(Request(Op.CREATE_HANDLE, handle, values=(own, key), identity=admin))
        assert r.ok, r
        grant = HandleValue(101, "HS_ADMIN", encode_admin(AdminRecord(handle, index, int(rights))))
        r = await svc.submit(Request(Op.ADD_VALUE, on, values=(grant,), identity=admin, overwrite=True))
        assert r.ok, r
        return me


@contextlib.asynccontextmanager
async def start_live(
    data: Path,
    *,
    role: str = "standalone",
    prefix: str = PREFIX,
    secret: str = SECRET,
    http_limits: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
) -> AsyncIterator[Live]:
    """``idr init`` + ``idr serve`` in this process, every listener on an ephemeral port;
    ``http_limits``, ``limits``: keys of ``[http]``, ``[limits]`` in idr.toml to set first."""
    init_node(
        data, prefix, secret=secret, role=role, https="127.0.0.1:0", http="127.0.0.1:0", native="127.0.0.1:0"
    )
    if http_limits or limits:
        cfg = NodeConfig.load(data)
        for table, settings in ((cfg.http_limits, http_limits), (cfg.limits, limits)):
            for key, value in (settings or {}).items():
                assert hasattr(table, key), key
                setattr(table, key, value)
        cfg.save()
    node = Node(NodeConfig.load(data))
    await node.start()
    ctx = ssl.create_default_context(cafile=str(data / "tls" / "cert.pem"))
    client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=0))
    try:
        assert node.listeners.https and node.listeners.http
        https = f"https://127.0.0.1:{node.listeners.https[1]}"
        http = f"http://127.0.0.1:{node.listeners.http[1]}"
        yield Live(node, https, http, data, client)
    finally:
        await client.close()
        await node.stop()
        node.close()


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    async with start_live(tmp_path / "node") as node:
        yield node
