"""The test suite's PostgreSQL: one throwaway cluster per session, one database per store.

Started on first use (a run that touches only SQLite never starts it) and destroyed when
the session ends (``pg_session`` in conftest). Missing PostgreSQL binaries make the
tests that need it FAIL with the install hint, never skip: CI installs them.
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import psycopg

from tests.store.pgcluster import PgCluster, start_cluster

_lock = threading.Lock()
_cluster: PgCluster | None = None
_names = itertools.count()
_created: list[str] = []


def cluster() -> PgCluster:
    global _cluster
    with _lock:
        if _cluster is None:
            _cluster = start_cluster(shared_buffers="128MB")
        return _cluster


def new_database() -> str:
    """A fresh, empty database; returns its DSN."""
    c = cluster()
    name = f"t{next(_names)}"
    with psycopg.connect(c.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    _created.append(name)
    return c.dsn(name)


def database_for(directory: Path) -> str:
    """The database standing for ``directory`` (as a data dir stands for a SQLite file):
    created the first time, the same one when a test re-opens the same directory."""
    marker = directory / "pg.dsn"
    if not marker.exists():
        marker.write_text(new_database(), "utf-8")
    return marker.read_text("utf-8")


def drop_created() -> None:
    """Drop the databases made since the last call, so a long session stays small."""
    if _cluster is None or not _created:
        return
    with psycopg.connect(_cluster.dsn(), autocommit=True) as conn:
        while _created:
            conn.execute(f"DROP DATABASE IF EXISTS {_created.pop()} WITH (FORCE)")


def shutdown() -> None:
    global _cluster
    with _lock:
        if _cluster is not None:
            _cluster.destroy()
            _cluster = None
