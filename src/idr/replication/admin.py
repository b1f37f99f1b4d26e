"""Operator calls on a site: status and promotion, live over the replication port or offline."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from idr.replication import wire
from idr.replication.state import PRIMARY, ReplState


async def request(
    address: tuple[str, int], secret: str, msg: dict[str, Any], timeout: float = 5.0
) -> dict[str, Any]:
    """One authenticated request/reply on a site's replication port."""
    ch = await wire.connect(address, secret.encode("utf-8"), "admin", timeout)
    try:
        async with asyncio.timeout(timeout):
            await ch.send_json(msg)
            return await ch.recv_json()
    finally:
        ch.close()


async def node_status(address: tuple[str, int], secret: str, timeout: float = 5.0) -> dict[str, Any]:
    return await request(address, secret, {"t": "status"}, timeout)


async def promote_node(address: tuple[str, int], secret: str, timeout: float = 5.0) -> dict[str, Any]:
    """Promote a running mirror; the reply is its status afterwards (role, new epoch)."""
    return await request(address, secret, {"t": "promote"}, timeout)


def promote_offline(data_dir: Path, last_seq: int, role: str = "mirror") -> ReplState:
    """Promote a site that is not running: new epoch, its log from ``last_seq + 1`` on is ours."""
    state = ReplState.load(data_dir) or ReplState.initial(role)
    if state.role == PRIMARY:
        return state
    state.epoch += 1
    state.history = [*state.history, (state.epoch, last_seq + 1)]
    state.role = PRIMARY
    state.save(data_dir)
    return state
