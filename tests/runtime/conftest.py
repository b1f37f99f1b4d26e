"""The session's PostgreSQL cluster (tests/store/pg.py) is stopped when the session ends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def pg_session() -> Iterator[None]:
    yield
    from tests.store import pg

    pg.shutdown()
