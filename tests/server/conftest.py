"""A real node for HTTP tests: SQLite file, NodeService, HTTPS and plain HTTP on 127.0.0.1.

pyhandle and requests are synchronous, so the server runs its own event loop in a
background thread; the fixture always stops it (and the service) when the test ends.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from aiohttp import web

from idr.codec.values import encode_admin
from idr.core.service import NodeService
from idr.model.handle import normalize_key
from idr.model.value import PERM_ADMIN_READ, PERM_ADMIN_WRITE, AdminRecord, HandleRecord, HandleValue
from idr.server.http import make_http_app
from idr.server.tls import server_context
from idr.store.sqlite import SqliteStore

ADMIN = "300:0.NA/88.100"
SECRET = "secret-key"
START_TIMEOUT = 10.0


def basic(user: str = ADMIN, password: str = SECRET) -> dict[str, str]:
    """The header pyhandle sends: ``Basic base64(quote(user) + ":" + password)``."""
    token = base64.b64encode(f"{quote(user)}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@dataclass
class Node:
    service: NodeService
    https: str
    http: str
    data_dir: Path

    def s(self) -> requests.Session:
        """A requests session that trusts the node's self-signed certificate (and only it)."""
        session = requests.Session()
        session.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment overrides verify
        session.verify = str(self.data_dir / "tls" / "cert.pem")
        return session

    def record(self, handle: str) -> HandleRecord | None:
        """Straight from the store, bypassing the service's cache."""
        return self.service.store.get(normalize_key(handle))

    def snapshot(self) -> tuple[int, list[str]]:
        """Log position and handles under 88.100: equal before/after means nothing was written."""
        store = self.service.store
        return store.last_seq(), store.list_handles("88.100", None, 100_000)


def _listener() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    return s


class ServerThread:
    """Serve ``app`` over HTTPS and HTTP from a thread with its own event loop."""

    def __init__(self, app: web.Application, data_dir: Path) -> None:
        self.app = app
        self.ssl = server_context(data_dir)
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app, access_log=None)
        self.tls_sock, self.plain_sock = _listener(), _listener()
        self.thread = threading.Thread(target=self.loop.run_forever, name="idr-http-test", daemon=True)

    def start(self) -> tuple[int, int]:
        self.thread.start()

        async def setup() -> None:
            await self.runner.setup()
            await web.SockSite(self.runner, self.tls_sock, ssl_context=self.ssl).start()
            await web.SockSite(self.runner, self.plain_sock).start()

        asyncio.run_coroutine_threadsafe(setup(), self.loop).result(START_TIMEOUT)
        return self.tls_sock.getsockname()[1], self.plain_sock.getsockname()[1]

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(START_TIMEOUT)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(START_TIMEOUT)
            self.loop.close()
            self.tls_sock.close()
            self.plain_sock.close()


def make_service(data_dir: Path) -> NodeService:
    store = SqliteStore(data_dir / "idr.sqlite3")
    service = NodeService(store, admins=[ADMIN])
    admin = HandleValue(100, "HS_ADMIN", encode_admin(AdminRecord("0.NA/88.100", 300)))
    seckey = HandleValue(300, "HS_SECKEY", SECRET.encode(), permissions=PERM_ADMIN_READ | PERM_ADMIN_WRITE)
    service.bootstrap("88.100", [admin, seckey])
    return service


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    service = make_service(tmp_path)
    server = ServerThread(make_http_app(service, tls=True, max_body=64 * 1024), tmp_path)
    try:
        tls_port, plain_port = server.start()
        yield Node(service, f"https://127.0.0.1:{tls_port}", f"http://127.0.0.1:{plain_port}", tmp_path)
    finally:
        server.stop()
        service.close()
