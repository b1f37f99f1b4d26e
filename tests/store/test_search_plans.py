"""Reverse lookup stays an index lookup: the engines' own plans (EXPLAIN) for each pattern shape.

bench/search.py prints the same plans and the query times at 100,000 identifiers, with the
forced-scan baseline; this test keeps the plans from regressing at a size the suite can load.
"""

from __future__ import annotations

from pathlib import Path

from idr.model.value import HandleRecord, HandleValue
from idr.store import Store
from idr.store.postgres import PostgresStore
from idr.store.search import make_terms
from idr.store.sqlite import SqliteStore

from . import pg

N = 5000


def load(store: Store, n: int = N) -> None:
    store.bulk_load(
        HandleRecord(
            f"88.100/plan-{i}",
            (
                HandleValue(1, "URL", f"https://repo.example/objects/{i}".encode()),
                HandleValue(2, "EMAIL", f"owner-{i % 100}@example.org".encode()),
            ),
        )
        for i in range(n)
    )


def plan(store: Store, *pairs: tuple[str, str]) -> str:
    assert isinstance(store, SqliteStore | PostgresStore)
    return store.search_plan(make_terms(pairs))


def test_sqlite_plans(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "node.db")
    load(store)
    assert "SEARCH value_index USING COVERING INDEX value_index_td (type=? AND data=?)" in plan(
        store, ("URL", "https://repo.example/objects/17")
    )
    assert "value_index_td (type=? AND data>? AND data<?)" in plan(
        store, ("URL", "https://repo.example/objects/17*")
    )
    substring = plan(store, ("URL", "*objects/17*"))
    assert "SCAN value_trgm VIRTUAL TABLE INDEX 0:G" in substring
    assert "SEARCH v USING INTEGER PRIMARY KEY" in substring
    two = plan(store, ("URL", "*objects/17*"), ("EMAIL", "owner-17@example.org"))
    assert "value_index_td (type=? AND data=?)" in two  # the exact term drives
    assert "SEARCH f USING INDEX value_index_key (key=?)" in two  # the other is checked per handle
    assert "SCAN value_index" not in "\n".join([substring, two])
    store.close()


def test_postgres_plans(tmp_path: Path) -> None:
    """PostgreSQL plans by cost: from this size on, single-term queries take the indexes (below
    it a scan of the few entries costs less; bench/search.py shows all shapes at 100,000)."""
    store = PostgresStore(pg.database_for(tmp_path), partitions=4, pool_size=2)
    try:
        load(store, 20_000)
        with store._conn() as conn:
            conn.execute("ANALYZE value_index")
        exact = plan(store, ("URL", "https://repo.example/objects/17"))
        assert "Index Only Scan using value_index_pkey on value_index" in exact
        prefix = plan(store, ("URL", "https://repo.example/objects/177*"))
        assert "value_index_pkey" in prefix and "Index Cond: ((type = 'URL'::text) AND (data >=" in prefix
        substring = plan(store, ("URL", "*objects/177*"))
        assert "Bitmap Index Scan on value_index_trgm" in substring
        assert "Seq Scan on value_index" not in "\n".join([exact, prefix, substring])
    finally:
        store.close()
