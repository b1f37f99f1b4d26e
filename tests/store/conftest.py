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

# name → open (or re-open) the engine's storage for one test, given that test's tmp_path,
# with the reverse-lookup index mode asked for (None: the store's own).
OPENERS_WITH: dict[str, Callable[[Path, str | None], Store]] = {
    "sqlite": lambda d, mode: SqliteStore(d / "node.db", search_mode=mode),
    "postgres": lambda d, mode: PostgresStore(
        pg.database_for(d), partitions=4, pool_size=4, search_mode=mode
    ),
}
OPENERS: dict[str, Callable[[Path], Store]] = {
    name: (lambda d, _open=opener: _open(d, None)) for name, opener in OPENERS_WITH.items()
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
def reopen_with(
    store: Store, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[str | None], Store]]:
    """``reopen`` with a reverse-lookup index mode (the caller closes ``store`` first)."""
    engine = request.node.callspec.params["store"]
    opened: list[Store] = []

    def _open(mode: str | None) -> Store:
        s = OPENERS_WITH[engine](tmp_path, mode)
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
