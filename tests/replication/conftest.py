"""Sites of one service on 127.0.0.1, each a real NodeService + SQLite store + Replicator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from idr.codec.values import encode_admin
from idr.core.config import ReplicationConfig
from idr.core.request import Op, Request, Response
from idr.core.service import NodeService
from idr.model.value import PERM_SECRET, AdminPermission, AdminRecord, HandleValue, ValueReference
from idr.replication import Replicator
from idr.store.sqlite import SqliteStore
from tests.ports import free_port

ADMIN = ValueReference("0.NA/88.100", 300)
SECRET = "Qm9vdHN0cmFwLWtleS1mb3ItdGVzdHMtb25seS0zMmJ5dGVzIQ"  # a 256-bit-looking test key


def admin_values() -> list[HandleValue]:
    return [
        HandleValue(100, "HS_ADMIN", encode_admin(AdminRecord("0.NA/88.100", 300, AdminPermission.ALL))),
        HandleValue(300, "HS_SECKEY", b"s3cret", permissions=PERM_SECRET),
    ]


class Site:
    """One site: its directory and port survive ``stop``/``start`` (a restart)."""

    def __init__(self, root: Path, name: str, role: str, mode: str, ack_timeout: float) -> None:
        self.dir = root / name
        self.dir.mkdir()
        self.port = free_port()
        self.role = role
        self.mode = mode
        self.ack_timeout = ack_timeout
        self.auto_promote_after = 0.0
        self.peers: list[Site] = []
        self.service: NodeService | None = None
        self.rep: Replicator | None = None
        svc = self._open()
        if role == "primary":
            svc.bootstrap("88.100", admin_values())
        svc.close()

    def _open(self) -> NodeService:
        return NodeService(SqliteStore(self.dir / "idr.sqlite3"), admins=[str(ADMIN)])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> Replicator:
        self.service = self._open()
        cfg = ReplicationConfig(
            listen=self.address,
            peers=[p.address for p in self.peers],
            secret=SECRET,
            mode=self.mode,
            role=self.role,
            ack_timeout=self.ack_timeout,
            auto_promote_after=self.auto_promote_after,
        )
        self.rep = Replicator(self.service, cfg, self.dir, api=f"https {self.dir.name}", heartbeat=0.05,
                              link_timeout=1.0)  # fmt: skip
        await self.rep.start()
        return self.rep

    async def stop(self) -> None:
        if self.rep is not None:
            await self.rep.stop()
            self.rep = None
        if self.service is not None:
            self.service.close()
            self.service = None

    @property
    def svc(self) -> NodeService:
        assert self.service is not None
        return self.service

    @property
    def r(self) -> Replicator:
        assert self.rep is not None
        return self.rep

    async def write(self, name: str, url: str = "https://example.cn/x") -> Response:
        values = (HandleValue(1, "URL", url.encode()),)
        req = Request(Op.CREATE_HANDLE, f"88.100/{name}", values=values, identity=ADMIN, overwrite=True)
        return await self.svc.submit(req)

    def has(self, name: str) -> bool:
        return self.svc.handle(Request(Op.RESOLUTION, f"88.100/{name}")).ok


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (bounded) for ``cond``; fail the test with a clear message if it never holds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


@pytest.fixture
async def make_pair(tmp_path: Path) -> AsyncIterator[Callable[..., tuple[Site, Site]]]:
    sites: list[Site] = []

    def make(mode: str = "sync", ack_timeout: float = 2.0) -> tuple[Site, Site]:
        a = Site(tmp_path, f"a{len(sites)}", "primary", mode, ack_timeout)
        b = Site(tmp_path, f"b{len(sites)}", "mirror", mode, ack_timeout)
        a.peers, b.peers = [b], [a]
        sites.extend((a, b))
        return a, b

    yield make
    for s in sites:
        await s.stop()
