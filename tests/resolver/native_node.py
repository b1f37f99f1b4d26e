"""A real node for native-protocol tests: SQLite store, NodeService with its clock pinned to
1700000000 (the vectors' timestamp), prefix 88.100 holding ``88.100/bench-0`` and ``88.100/big``
exactly as the reference server held them, and admin keys of every kind on ``0.NA/88.100``.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from typer.testing import CliRunner

from idr.cli import app
from idr.codec.keys import PrivateKey, encode_public_key
from idr.codec.values import encode_admin
from idr.core.federation import loopback_site
from idr.core.service import NodeService
from idr.model.value import (
    PERM_SECRET,
    AdminPermission,
    AdminRecord,
    HandleRecord,
    HandleValue,
    ValueReference,
)
from idr.resolver.keys import generate
from idr.server.native import NativeOptions, NativeServer, start_server
from idr.server.server_key import ServerKey
from idr.store.sqlite import SqliteStore

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "handle"
T0 = 1700000000
SECRET = b"top-secret"
SECKEY_ID = ValueReference("0.NA/88.100", 300)
KEY_INDEX = {"rsa": 301, "dsa": 302, "ed25519": 303}
TIMEOUT = 5.0


def vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


@functools.cache
def key(kind: str) -> PrivateKey:
    """One key of each kind per test session (DSA/RSA generation is slow)."""
    return generate(kind)


def identity(kind: str) -> ValueReference:
    return SECKEY_ID if kind == "secret" else ValueReference("0.NA/88.100", KEY_INDEX[kind])


def prefix_values() -> list[HandleValue]:
    vals = [
        HandleValue(100, "HS_ADMIN", encode_admin(AdminRecord("0.NA/88.100", 300, AdminPermission.ALL))),
        HandleValue(300, "HS_SECKEY", SECRET, permissions=PERM_SECRET),
    ]
    for kind, index in KEY_INDEX.items():
        vals.append(HandleValue(index, "HS_PUBKEY", encode_public_key(key(kind).public_key())))
    return vals


def bench_record(n: int) -> HandleRecord:
    admin = encode_admin(AdminRecord("0.NA/88.100", 300, 0x0FFF))
    return HandleRecord(
        f"88.100/bench-{n}",
        (
            HandleValue(1, "URL", f"https://example.org/objects/{n}".encode()),
            HandleValue(2, "EMAIL", f"owner-{n}@example.org".encode()),
            HandleValue(100, "HS_ADMIN", admin),
        ),
    )


def big_record() -> HandleRecord:
    desc = (b"0123456789abcdef" * 188)[:3000]
    return HandleRecord(
        "88.100/big",
        (
            HandleValue(1, "URL", b"https://example.org/big"),
            HandleValue(2, "DESC", desc),
        ),
    )


def make_service(data_dir: Path) -> NodeService:
    admins = [str(SECKEY_ID)] + [str(identity(k)) for k in KEY_INDEX]
    svc = NodeService(SqliteStore(data_dir / "idr.sqlite3"), admins=admins, clock=lambda: T0)
    svc.bootstrap("88.100", prefix_values())
    svc.import_now([bench_record(0), bench_record(1), big_record()])
    return svc


@dataclass
class NativeNode:
    service: NodeService
    server: NativeServer

    @property
    def host(self) -> str:
        return self.server.address[0]

    @property
    def port(self) -> int:
        return self.server.address[1]

    def snapshot(self) -> tuple[int, list[str]]:
        store = self.service.store
        return store.last_seq(), store.list_handles("88.100", None, 100_000)


async def start_node(tmp_path: Path, options: NativeOptions | None = None) -> NativeNode:
    """The node; with ``options.server_key``, its site info publishes that key (as ``Node``'s)."""
    svc = make_service(tmp_path)
    srv = await start_server(svc, "127.0.0.1", 0, options)
    key = options.server_key if options is not None else None
    if key is not None:
        svc.site_info = loopback_site("test node", native=srv.address[1], public_key=key.public_bytes)
    return NativeNode(svc, srv)


@pytest_asyncio.fixture
async def native(tmp_path: Path) -> AsyncIterator[NativeNode]:
    node = await start_node(tmp_path)
    try:
        yield node
    finally:
        await node.server.close()
        node.service.close()


class NativeThread:
    """The node served from a background event loop (for synchronous callers: the CLI)."""

    def __init__(self, tmp_path: Path, options: NativeOptions | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="idr-native-test", daemon=True)
        self.thread.start()
        self.node = asyncio.run_coroutine_threadsafe(start_node(tmp_path, options), self.loop).result(TIMEOUT)

    @property
    def address(self) -> str:
        return f"{self.node.host}:{self.node.port}"

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.node.server.close(), self.loop).result(TIMEOUT)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(TIMEOUT)
            self.loop.close()
            self.node.service.close()


@pytest.fixture
def native_thread(tmp_path: Path) -> Iterator[NativeThread]:
    t = NativeThread(tmp_path)
    try:
        yield t
    finally:
        t.stop()


@pytest.fixture
def keyed_node(tmp_path: Path) -> Iterator[NativeThread]:
    """The node with a server key (RSA) in its site info, so clients can set up sessions."""
    t = NativeThread(tmp_path, NativeOptions(server_key=ServerKey(key("rsa"))))
    try:
        yield t
    finally:
        t.stop()


_runner = CliRunner()


def run_idr(*args: str) -> tuple[int, str]:
    """``idr ARGS`` in this process (typer's runner): the exit code and the output."""
    result = _runner.invoke(app, list(args))
    return result.exit_code, result.output
