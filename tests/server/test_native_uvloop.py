"""The native front-ends under uvloop, as ``idr serve`` runs them (its transports are not
``asyncio.Transport`` subclasses, which once broke the TCP fallback)."""

from __future__ import annotations

from pathlib import Path

import uvloop

from idr.core.request import Op, Request
from idr.core.service import NodeService
from idr.model.value import HandleValue
from idr.resolver.client import HandleClient
from idr.server.native import start_native
from idr.store.sqlite import SqliteStore
from tests.core.conftest import ADMIN, admin_values


def test_large_answer_falls_back_to_tcp_under_uvloop(tmp_path: Path) -> None:
    svc = NodeService(SqliteStore(tmp_path / "idr.sqlite3"), admins=[str(ADMIN)])
    svc.bootstrap("88.100", admin_values())
    big = HandleValue(2, "DESC", b"x" * 3000)
    assert svc.handle(Request(Op.CREATE_HANDLE, "88.100/big", values=(big,), identity=ADMIN)).ok

    async def main() -> tuple[bytes, bytes]:
        (host, port), close = await start_native(svc, "127.0.0.1", 0)
        try:
            client = HandleClient(host, port, timeout=5)
            udp = await client.resolve("88.100/big")  # over the UDP limit: TC, then TCP
            tcp = await client.resolve("88.100/big", transport="tcp")
            return udp.raw, tcp.raw
        finally:
            await close()

    try:
        udp_raw, tcp_raw = uvloop.run(main())
    finally:
        svc.close()
    assert b"x" * 3000 in udp_raw and b"x" * 3000 in tcp_raw
