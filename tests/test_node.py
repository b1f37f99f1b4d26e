"""How a node assembles and takes down its parts (``idr.node``)."""

from __future__ import annotations

import logging
from pathlib import Path

from idr.cli.node import init_node
from idr.core.config import NodeConfig
from idr.node import Node
from idr.server.accesslog import AccessLog


async def test_the_stats_hub_stops_after_the_front_ends_and_before_the_runtime(tmp_path: Path) -> None:
    """Closers run in reverse: the hub's closer sits right after the runtime's, so its last cut
    sees every answer and its write still has the runtime — also with the access log, whose
    closer goes in front of all the others once the front-ends are open."""
    data = tmp_path / "top"
    init_node(data, secret="top-secret-123", role="top", https="", native="127.0.0.1:0")
    node = Node(NodeConfig.load(data))
    node.access_log = AccessLog(logging.getLogger("idr.access.test-node"))
    await node.start()
    try:
        assert node.stats_hub is not None
        closers = node.listeners.closers
        at = closers.index(node._stop_stats)
        assert closers[0] == node._stop_access_log  # closed last
        assert closers[at - 1] == node._stop_runtime, closers
        assert node._stop_compactor in closers[at + 1 :], closers  # stopped before the hub
    finally:
        await node.stop()
        node.close()
