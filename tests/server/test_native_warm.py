"""The warm pass in a helper process (``idr.server.warmhelper``): a real child process reads a
snapshot of the real SQLite file (PostgreSQL: tests/server/test_native_warm_pg.py) and ships
ready answers the server merges; the result is byte for byte what the pass on the loop builds,
and an answer read from the snapshot never hides a commit announced after it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from idr.core.service import NodeService
from idr.model.value import HandleRecord, HandleValue
from idr.resolver.client import HandleClient
from idr.server.handler import Outcome
from idr.server.hotcache import cache_key
from idr.server.native import (
    WARM_SHAPES,
    NativeOptions,
    NativeServer,
    check_warm,
    plain_request,
    start_server,
)
from idr.store.base import Write
from idr.store.sqlite import SqliteStore
from tests.resolver.native_node import T0, bench_record, make_service, prefix_values

SHAPES = WARM_SHAPES[:2]
COUNT = 2500  # records beyond the fixture's: three chunks of the helper's 1,000


def _service(data: Path) -> NodeService:
    svc = make_service(data)
    svc.import_now([bench_record(n) for n in range(2, COUNT)])
    return svc


async def _warmed(svc: NodeService, helper: bool, shapes: tuple[bytes, ...] = SHAPES) -> NativeServer:
    srv = await start_server(
        svc, "127.0.0.1", 0, NativeOptions(warm=True, warm_shapes=shapes, warm_helper=helper)
    )
    assert srv.warm_task is not None
    await srv.warm_task
    return srv


def _handles() -> list[str]:
    return ["88.100/big", "0.NA/88.100", *(f"88.100/bench-{n}" for n in range(COUNT))]


@pytest.mark.asyncio
async def test_helper_pass_builds_exactly_what_the_loop_pass_builds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    svc = _service(tmp_path)
    try:
        caplog.set_level(logging.DEBUG, logger="idr.native")
        by_helper = await _warmed(svc, helper=True)
        assert any("warm pass (helper)" in r.getMessage() for r in caplog.records), "the helper did not run"
        on_loop = await _warmed(svc, helper=False)
        try:
            a, b = by_helper.cache, on_loop.cache
            assert len(b.data) == len(SHAPES) * (COUNT + 1)  # every public record (not the prefix's)
            assert a.shelved == len(b.data) and not a.data  # shelved as shipped, nothing inserted
            assert all(a.peek(ck, b._owner[ck]) == answer for ck, answer in b.data.items())
            assert a.known == b.known and "88.100/BENCH-2499" in a.known
            assert a.complete and b.complete
            assert check_warm(by_helper, svc, _handles(), SHAPES) == []
            # served from the merged answers over a real socket, equal to the slow path
            req = plain_request(SHAPES[1], b"88.100/bench-1234")
            slow = by_helper.handler.handle(req, "check", udp=True)
            assert isinstance(slow, Outcome)
            got = await HandleClient("127.0.0.1", by_helper.address[1], timeout=5.0, retries=0).send_udp(req)
            assert got == slow.messages[0] and a.unshelved == 1  # a miss found it on a shelf...
            assert cache_key(req) in a.data  # ...and moved it into the map: a hit from then on
            got = await HandleClient("127.0.0.1", by_helper.address[1], timeout=5.0, retries=0).send_udp(req)
            assert got == slow.messages[0] and a.unshelved == 1
        finally:
            await on_loop.close()
            await by_helper.close()
    finally:
        svc.close()


@pytest.mark.asyncio
async def test_a_commit_after_the_helpers_snapshot_is_never_hidden_by_its_answer(tmp_path: Path) -> None:
    """Another process commits a new value for a handle after the helper read its snapshot and
    before the chunk holding the handle's old answer is merged; the node then serves the new
    value (without the guard in ``AnswerCache.merge`` it served the snapshot's answer)."""
    svc = _service(tmp_path)
    other = SqliteStore(tmp_path / "idr.sqlite3")  # the other process's connection
    new = HandleRecord("88.100/bench-0", (HandleValue(1, "URL", b"https://example.org/after-the-snapshot"),))
    try:
        srv = await start_server(
            svc, "127.0.0.1", 0, NativeOptions(warm=True, warm_shapes=SHAPES, learn_shapes=0)
        )
        shelve = srv.cache.shelve
        calls: list[int] = []

        def commit_then_shelve(*args: Any) -> int:
            if not calls:  # the first chunk with answers (88.100/BENCH-0…) holds the old value
                assert "88.100/BENCH-0" in args[3]
                other.commit("modify", "other", [Write("88.100/BENCH-0", new)])
                svc.on_external_commit(["88.100/BENCH-0"])  # what the log follower announces
            calls.append(1)
            return int(shelve(*args))

        srv.cache.shelve = commit_then_shelve  # type: ignore[method-assign]
        try:
            assert srv.warm_task is not None
            await srv.warm_task
            assert calls, "no chunk was shelved"
            req = plain_request(SHAPES[0], b"88.100/bench-0")
            got = await HandleClient("127.0.0.1", srv.address[1], timeout=5.0, retries=0).send_udp(req)
            assert b"after-the-snapshot" in got
            assert check_warm(srv, svc, _handles(), SHAPES) == []
        finally:
            await srv.close()
    finally:
        other.close()
        svc.close()


@pytest.mark.asyncio
async def test_known_keys_and_learned_shapes_come_from_the_helper(tmp_path: Path) -> None:
    """``idr serve``'s warm-up (no shape at start): the helper's pass gives every key (a complete
    cache answers absent handles from memory); a shape first used is then warmed by the helper."""
    svc = _service(tmp_path)
    try:
        srv = await _warmed(svc, helper=True, shapes=())
        try:
            cache = srv.cache
            assert cache.complete and len(cache.known) >= COUNT + 2 and not cache.data and not cache.shelved
            port = srv.address[1]
            client = HandleClient("127.0.0.1", port, timeout=5.0, retries=0)
            await client.send_udp(plain_request(SHAPES[0], b"88.100/bench-7"))  # slow path: a new shape
            assert len(srv.tasks) == 1
            await next(iter(srv.tasks))
            assert cache.shelved >= COUNT
            assert check_warm(srv, svc, _handles(), SHAPES[:1]) == []
        finally:
            await srv.close()
    finally:
        svc.close()


@pytest.mark.asyncio
async def test_a_helper_that_cannot_open_the_store_leaves_the_pass_to_the_loop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    svc = _service(tmp_path)
    try:
        svc.store.reopen_spec = lambda: ("sqlite", str(tmp_path / "no-such-dir" / "x.sqlite3"))  # type: ignore[method-assign]
        srv = await _warmed(svc, helper=True)
        try:
            assert any("warm-up helper failed" in r.getMessage() for r in caplog.records)
            assert srv.cache.complete and len(srv.cache.data) == len(SHAPES) * (COUNT + 1)  # on the loop
            assert check_warm(srv, svc, _handles(), SHAPES) == []
        finally:
            await srv.close()
    finally:
        svc.close()


@pytest.fixture(scope="module")
def pg_cluster_stopped_after() -> Iterator[None]:
    yield
    from tests.store import pg

    pg.shutdown()


@pytest.mark.asyncio
async def test_helper_pass_on_postgres(
    pg_cluster_stopped_after: None, caplog: pytest.LogCaptureFixture
) -> None:
    """The helper opens the same PostgreSQL database (the DSN never on its command line) and
    reads one snapshot there: the same answers as the pass on the loop."""
    from idr.store.postgres import PostgresStore
    from tests.store import pg

    svc = NodeService(PostgresStore(pg.new_database(), partitions=4, pool_size=4), clock=lambda: T0)
    try:
        svc.bootstrap("88.100", prefix_values())
        svc.import_now([bench_record(n) for n in range(COUNT)])
        caplog.set_level(logging.DEBUG, logger="idr.native")
        by_helper = await _warmed(svc, helper=True)
        assert any("warm pass (helper)" in r.getMessage() for r in caplog.records), "the helper did not run"
        on_loop = await _warmed(svc, helper=False)
        try:
            a, b = by_helper.cache, on_loop.cache
            assert len(b.data) == len(SHAPES) * COUNT and a.shelved == len(b.data)
            assert all(a.peek(ck, b._owner[ck]) == answer for ck, answer in b.data.items())
            assert a.known == b.known
            assert by_helper.cache.complete
        finally:
            await on_loop.close()
            await by_helper.close()
    finally:
        svc.close()
        pg.drop_created()


def _cached(srv: NativeServer, shape: bytes, handles: list[str]) -> list[str]:
    """The handles whose answer for ``shape`` is in the cache (hot map or a shelf)."""
    from idr.model.handle import normalize_key

    peek = srv.cache.peek
    return [h for h in handles if peek(cache_key(plain_request(shape, h.encode())), normalize_key(h))]


def test_warm_shapes_are_named_in_idr_toml(tmp_path: Path) -> None:
    """``[native] warm_shapes`` names the clients whose request shape is warmed at start; a name
    idr does not know, or a string instead of a list, is refused with the names it knows."""
    from idr.cli.node import init_node
    from idr.core.config import ConfigError, NativeLimits, NodeConfig

    limits = NativeLimits(warm_shapes=["rfc3652", "handle.net"])
    assert NativeOptions.from_config(limits).warm_shapes == (WARM_SHAPES[1], WARM_SHAPES[0])
    assert NativeOptions.from_config(NativeLimits()).warm_shapes == ()
    init_node(tmp_path / "n", "88.100", secret="s3cret-key", https="", native="127.0.0.1:0")
    toml = tmp_path / "n" / "idr.toml"
    text = toml.read_text()
    assert "\nwarm_shapes = []\n" in text  # written by idr init, with every [native] setting
    for value, ok in (('["idr"]', True), ('["hdllib"]', False), ('"rfc3652"', False)):
        toml.write_text(text.replace("\nwarm_shapes = []\n", f"\nwarm_shapes = {value}\n", 1))
        if ok:
            assert NodeConfig.load(tmp_path / "n").native_limits.warm_shapes == ["idr"]
        else:
            with pytest.raises(ConfigError, match=r"warm_shapes is a list of some of 'handle\.net', 'rfc"):
                NodeConfig.load(tmp_path / "n")


@pytest.mark.asyncio
async def test_named_shapes_are_warmed_before_anyone_asks_and_again_after_a_recopy(tmp_path: Path) -> None:
    """A mirror nobody asks before its failover: with ``warm`` and ``warm_shapes`` its answers
    for those clients are built at start, and built again when everything is dropped (its store
    re-copied from the primary), so once promoted it answers from memory."""
    from idr.core.config import NativeLimits
    from idr.core.interface import EVERYTHING

    svc = _service(tmp_path)
    try:
        opts = NativeOptions.from_config(NativeLimits(warm=True, warm_shapes=["rfc3652"]), warm=True)
        srv = await start_server(svc, "127.0.0.1", 0, opts)
        try:
            assert srv.warm_task is not None
            await srv.warm_task
            handles = [f"88.100/bench-{n}" for n in range(2, COUNT)]
            assert _cached(srv, WARM_SHAPES[1], handles) == handles  # nobody asked
            assert _cached(srv, WARM_SHAPES[0], handles) == []  # a shape not named: on first use
            assert check_warm(srv, svc, handles[:50], WARM_SHAPES[1:2]) == []
            svc.on_external_commit(EVERYTHING)  # as a mirror re-copied from its primary
            assert _cached(srv, WARM_SHAPES[1], handles) == []
            for _ in range(600):  # the re-warm runs in the background: bounded wait
                if srv.tasks:
                    await asyncio.wait(list(srv.tasks), timeout=0.05)
                if not srv.tasks and _cached(srv, WARM_SHAPES[1], handles[-1:]):
                    break
                await asyncio.sleep(0.01)
            assert _cached(srv, WARM_SHAPES[1], handles) == handles
        finally:
            await srv.close()
    finally:
        svc.close()
