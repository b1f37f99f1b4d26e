"""Fixtures shared across test packages."""

from __future__ import annotations

import errno
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from idr.demo import Federation, start_federation

START_ATTEMPTS = 3


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    """The twin-city demo federation on ephemeral loopback ports, always stopped.

    Its ports are chosen free before the nodes bind them (each node's settings name the
    others'); a suite running in parallel can take one in between, so a start that loses a
    port to EADDRINUSE is retried in a fresh directory with fresh ports (bounded)."""
    for attempt in range(START_ATTEMPTS):
        base = tmp_path / f"fed{attempt}"
        try:
            f = await start_federation(base)
            break
        except OSError as e:
            if e.errno != errno.EADDRINUSE or attempt == START_ATTEMPTS - 1:
                raise
            shutil.rmtree(base, ignore_errors=True)
    try:
        yield f
    finally:
        await f.stop()


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """A new database on the suite's PostgreSQL server, dropped afterwards."""
    from tests.store import pg

    dsn = pg.new_database()
    yield dsn
    pg.drop_created()
