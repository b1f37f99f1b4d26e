"""Cross-process coherence (issue 11 item 4(a), 4(b)): a running node follows its store's
log, so another writer's commits reach every front-end's caches within the bound.

Each test is real processes: ``idr serve`` with its own config, another process writing to
the same store (``idr import``, a second ``idr serve`` on the same PostgreSQL database, the
primary a PostgreSQL hot standby streams from). Before the change each of them kept the
old answer (a cached 404, a cached value) until restart: the bounded waits below failed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from idr.core.config import NodeConfig
from idr.model.errors import ResponseCode
from idr.runtime.follow import FOLLOW_INTERVAL
from tests.procs import ServeProc, idr
from tests.store.pgcluster import PgCluster, primary_and_standby, wait_replayed

SECRET = "coherence-secret"
ADMIN = ("300:0.NA/88.100", SECRET)
# The design bound is one poll (FOLLOW_INTERVAL, 10 ms) plus reading the entries; the test
# allows far more, for a loaded CI machine — a node that does not follow never gets there.
COHERENCE_BOUND = 3.0
FRONT_ENDS = ("https", "http", "udp", "tcp")


def url_of(node: ServeProc, handle: str, front_end: str) -> tuple[int, list[str]]:
    """(response code, URL values) of ``handle`` as one front-end answers it."""
    if front_end in ("udp", "tcp"):
        code, values = node.resolve_native(handle, front_end)
        return code, [d.decode() for _, t, d in values if t == "URL"]
    status, doc = node.get(f"/api/handles/{handle}", secure=front_end == "https")
    code = int(doc.get("responseCode", 0)) if isinstance(doc, dict) else status
    urls = [v["data"]["value"] for v in doc.get("values", []) if v["type"] == "URL"] if code == 1 else []
    return code, urls


def answered_within(check: Callable[[], bool], bound: float = COHERENCE_BOUND) -> float:
    """Seconds until ``check()`` holds; fails after ``bound``."""
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < bound, f"still stale after {bound} s"
        time.sleep(0.005)
    return time.monotonic() - t0


def put(node: ServeProc, handle: str, url: str) -> None:
    body = {"values": [{"index": 1, "type": "URL", "data": {"format": "string", "value": url}}]}
    status, doc = node.call("PUT", f"/api/handles/{handle}", body, auth=ADMIN)
    assert status in (200, 201) and doc["responseCode"] == 1, doc


@pytest.fixture
def started() -> Iterator[list[ServeProc]]:
    nodes: list[ServeProc] = []
    yield nodes
    for n in nodes:
        n.stop()


def test_the_design_bound_is_one_poll() -> None:
    assert FOLLOW_INTERVAL <= 0.01


def test_import_into_a_running_node_reaches_every_front_end(tmp_path: Path, started: list[ServeProc]) -> None:
    node = ServeProc.init(tmp_path / "node", "--prefix", "88.100", "--admin-secret", SECRET)
    started.append(node.start())
    put(node, "88.100/old", "https://example.org/v1")
    for fe in FRONT_ENDS:  # each front-end now holds the old value and a "not found"
        assert url_of(node, "88.100/old", fe) == (1, ["https://example.org/v1"]), fe
        assert url_of(node, "88.100/new", fe)[0] == ResponseCode.HANDLE_NOT_FOUND, fe
        assert url_of(node, "88.100/old", fe) == (1, ["https://example.org/v1"]), fe  # cached now
        assert url_of(node, "88.100/new", fe)[0] == ResponseCode.HANDLE_NOT_FOUND, fe
    lines = [
        {"handle": "88.100/new", "values": [{"index": 1, "type": "URL", "data": "https://example.org/new"}]},
        {"handle": "88.100/old", "values": [{"index": 1, "type": "URL", "data": "https://example.org/v2"}]},
    ]
    src = tmp_path / "batch.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    idr("import", "--data", str(node.data), str(src))  # another process, same store
    for fe in FRONT_ENDS:
        answered_within(lambda fe=fe: url_of(node, "88.100/new", fe) == (1, ["https://example.org/new"]))
        answered_within(lambda fe=fe: url_of(node, "88.100/old", fe) == (1, ["https://example.org/v2"]))


def test_two_servers_on_one_postgres_database_see_each_others_writes(
    tmp_path: Path, pg_dsn: str, started: list[ServeProc]
) -> None:
    store = ("--store", "postgres", "--dsn", pg_dsn)
    a = ServeProc.init(tmp_path / "a", "--prefix", "88.100", "--admin-secret", SECRET, *store)
    b = ServeProc(tmp_path / "b")  # the same node's data on a second server: its own listeners
    cfg = NodeConfig.load(a.data)
    cfg.data_dir = b.data
    cfg.https, cfg.http, cfg.native = (f"127.0.0.1:{p}" for p in (b.https, b.http, b.native))
    cfg.save()
    started += [a.start(), b.start()]
    for fe in FRONT_ENDS:
        assert url_of(b, "88.100/x", fe)[0] == ResponseCode.HANDLE_NOT_FOUND  # cached "not found" at B
    put(a, "88.100/x", "https://example.org/from-a")
    for fe in FRONT_ENDS:
        answered_within(lambda fe=fe: url_of(b, "88.100/x", fe) == (1, ["https://example.org/from-a"]))
    put(b, "88.100/x", "https://example.org/from-b")  # and the other way round, a cached value
    for fe in FRONT_ENDS:
        answered_within(lambda fe=fe: url_of(a, "88.100/x", fe) == (1, ["https://example.org/from-b"]))


@pytest.fixture
def streaming() -> Iterator[tuple[PgCluster, PgCluster]]:
    with primary_and_standby() as pair:
        yield pair


def test_a_mirror_reading_a_hot_standby_follows_the_primarys_writes(
    tmp_path: Path, streaming: tuple[PgCluster, PgCluster], started: list[ServeProc]
) -> None:
    primary_db, standby_db = streaming
    store = ("--store", "postgres", "--dsn", primary_db.dsn())
    primary = ServeProc.init(tmp_path / "primary", "--prefix", "88.100", "--admin-secret", SECRET, *store)
    mirror = ServeProc(tmp_path / "mirror")
    cfg = NodeConfig.load(primary.data)
    cfg.data_dir, cfg.dsn, cfg.standby = mirror.data, standby_db.dsn(), True
    cfg.https, cfg.http, cfg.native = (f"127.0.0.1:{p}" for p in (mirror.https, mirror.http, mirror.native))
    cfg.save()
    started += [primary.start(), mirror.start()]
    # PostgreSQL's own streaming delay (seconds on a busy disk) is waited out apart: the bound
    # is on what the mirror does once its standby holds the commit.
    wait_replayed(primary_db.dsn(), standby_db.dsn())
    answered_within(lambda: url_of(mirror, "0.NA/88.100", "udp")[0] == 1)
    for fe in FRONT_ENDS:
        assert url_of(mirror, "88.100/s", fe)[0] == ResponseCode.HANDLE_NOT_FOUND
    put(primary, "88.100/s", "https://example.org/streamed")
    wait_replayed(primary_db.dsn(), standby_db.dsn())
    for fe in FRONT_ENDS:
        answered_within(lambda fe=fe: url_of(mirror, "88.100/s", fe) == (1, ["https://example.org/streamed"]))
    # The mirror takes no writes: the standby is read-only, and it says where writes go.
    body = {"values": [{"index": 1, "type": "URL", "data": {"format": "string", "value": "x"}}]}
    status, doc = mirror.call("PUT", "/api/handles/88.100/m", body, auth=ADMIN)
    assert doc["responseCode"] == ResponseCode.SERVER_READ_ONLY and "primary" in doc["message"], (status, doc)
