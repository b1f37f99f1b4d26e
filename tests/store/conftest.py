"""One fixture, ``store``, over every engine: the suite is the contract engines must meet.

To add an engine, add an opener to ``OPENERS``; every test in this directory written
against ``store``/``reopen`` then runs against it too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from idr.store import SqliteStore, Store
from idr.store.postgres import PostgresStore

from . import pg

# name → open (or re-open) the engine's storage for one test, given that test's tmp_path.
OPENERS: dict[str, Callable[[Path], Store]] = {
    "sqlite": lambda d: SqliteStore(d / "node.db"),
    "postgres": lambda d: PostgresStore(pg.database_for(d), partitions=4, pool_size=4),
}


@pytest.fixture(scope="session", autouse=True)
def pg_session() -> Iterator[None]:
    """Stops and deletes the session's PostgreSQL cluster (if a test started it)."""
    yield
    pg.shutdown()


@pytest.fixture(autouse=True)
def _pg_drop_databases() -> Iterator[None]:
    yield
    pg.drop_created()


@pytest.fixture
def pg_cluster() -> pg.PgCluster:
    """The session's running PostgreSQL cluster (started on first use)."""
    return pg.cluster()


@pytest.fixture(params=sorted(OPENERS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = OPENERS[request.param](tmp_path)
    yield s
    s.close()


@pytest.fixture
def reopen(store: Store, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Open another instance on the same storage as ``store`` (as after a restart)."""
    engine = request.node.callspec.params["store"]
    opened: list[Store] = []

    def _open() -> Store:
        s = OPENERS[engine](tmp_path)
        opened.append(s)
        return s

    yield _open
    for s in opened:
        s.close()


@pytest.fixture
def other_store(store: Store, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A second, independent store of the same engine as ``store`` (e.g. a mirror)."""
    engine = request.node.callspec.params["store"]
    (tmp_path / "other").mkdir()
    s = OPENERS[engine](tmp_path / "other")
    yield s
    s.close()
