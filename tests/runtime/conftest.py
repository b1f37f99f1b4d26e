"""The session's PostgreSQL cluster (tests/store/pg.py) is stopped when the session ends;
``node_on_postgres``: a node started in-process on a database of its own."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from idr.cli.node import init_node
from idr.core.config import NodeConfig
from idr.node import Node
from tests.procs import free_port


@pytest.fixture(scope="session", autouse=True)
def pg_session() -> Iterator[None]:
    yield
    from tests.store import pg

    pg.shutdown()


@contextlib.asynccontextmanager
async def node_on_postgres(
    data: Path, secret: str, prefix: str = "", *, role: str = "standalone"
) -> AsyncIterator[tuple[Node, str]]:
    """(node, dsn): ``idr init`` in ``data`` on a new database, native and HTTPS on fresh
    loopback ports, started; stopped, closed and the database dropped afterwards."""
    from tests.store import pg

    dsn = pg.new_database()
    native = f"127.0.0.1:{free_port(udp_too=True)}"
    https = f"127.0.0.1:{free_port()}"
    init_node(data, prefix, role=role, secret=secret, https=https, native=native, store="postgres", dsn=dsn)
    node = Node(NodeConfig.load(data))
    await node.start()
    try:
        yield node, dsn
    finally:
        await node.stop()
        node.close()
        pg.drop_created()
