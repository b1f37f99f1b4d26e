"""Fixtures shared across test packages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from idr.demo import Federation, start_federation


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    """The twin-city demo federation on ephemeral loopback ports, always stopped."""
    f = await start_federation(tmp_path)
    try:
        yield f
    finally:
        await f.stop()
