"""A node answers from its first second: a resolution the answer cache does not hold is spliced
from one stored row (``AnswerCache.miss``), byte for byte what the slow path answers, and a
handle the store does not hold gets the learned HANDLE_NOT_FOUND answer; writes, private values,
non-plain requests and recursive nodes are not answered this way."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from idr.codec.values import all_public, encode_values
from idr.core.request import Op, Request
from idr.core.service import NodeService
from idr.model.value import HandleRecord, HandleValue, ValueReference
from idr.resolver.client import HandleClient
from idr.server.handler import Outcome
from idr.server.hotcache import AnswerCache, cache_key
from idr.server.native import READ_HOLD, WARM_SHAPES, NativeOptions, held_reads, plain_request, start_server
from idr.store.base import Write
from idr.store.sqlite import SqliteStore
from tests.resolver.native_node import SECRET, identity, start_node


def _slow(node: object, request: bytes) -> bytes:
    """What the slow path answers to ``request`` (the handler, bypassing every cache)."""
    out = node.server.handler.handle(request, "check", udp=True)  # type: ignore[attr-defined]
    assert isinstance(out, Outcome)
    return out.messages[0]


async def _udp(port: int, request: bytes) -> bytes:
    """One datagram to the node on this loop, its answer back (request id matched)."""
    return await HandleClient("127.0.0.1", port, timeout=5.0, retries=0).send_udp(request)


def _with_id(request: bytes, rid: int) -> bytes:
    return request[:8] + rid.to_bytes(4, "big") + request[12:]


def test_all_public_reads_permission_bits_and_types_without_decoding() -> None:
    url = HandleValue(1, "URL", b"https://example.org/x")
    assert all_public(encode_values([url, HandleValue(2, "EMAIL", b"a@example.org")]))
    assert not all_public(encode_values([]))
    assert not all_public(encode_values([url, HandleValue(3, "DESC", b"private", permissions=0b1100)]))
    # a secret key is never public, whatever its permission bits say (HandleValue.public_read)
    assert not all_public(encode_values([url, HandleValue(300, "hs_seckey", SECRET, permissions=0b1110)]))
    refs = HandleValue(4, "URL", b"x", references=(ValueReference("88.1/a", 1),))
    assert all_public(encode_values([refs, url]))
    whole = encode_values([url, refs])
    assert not all_public(whole[:-1]) and not all_public(whole + b"\0")  # walks to the end exactly


@pytest.mark.asyncio
async def test_cold_node_splices_answers_from_the_store(tmp_path: Path) -> None:
    node = await start_node(tmp_path, NativeOptions())  # no warm-up: the cache starts empty
    srv, svc, port = node.server, node.service, node.server.address[1]
    try:
        shape = WARM_SHAPES[0]
        first = plain_request(shape, b"88.100/bench-0")
        assert (await _udp(port, _with_id(first, 7)))[8:12] == (7).to_bytes(4, "big")  # slow path
        assert len(srv.cache.heads) == 1 and srv.cache.spliced == 0  # ...which taught the splice
        # another handle of the same shape: answered from one row, equal to the slow path
        rec = HandleRecord("88.100/cold-1", (HandleValue(1, "URL", b"https://example.org/cold-1"),))
        resp = await svc.submit(
            Request(Op.CREATE_HANDLE, rec.handle, values=rec.values, identity=identity("secret"))
        )
        assert resp.ok, resp
        req = plain_request(shape, b"88.100/Cold-1")  # as the client spells it, echoed back
        got = await _udp(port, _with_id(req, 11))
        assert srv.cache.spliced == 1, "not spliced from the store"
        assert got == _with_id(_slow(node, req), 11)
        # stored when asked again, not at the first ask (a handle asked once never repays it)
        assert cache_key(req) not in srv.cache.data
        assert await _udp(port, _with_id(req, 13)) == _with_id(got, 13)
        assert srv.cache.spliced == 2 and cache_key(req) in srv.cache.data  # next time a plain hit
        # a handle that does not exist: the slow path teaches the shape's negative answer once
        missing = plain_request(shape, b"88.100/absent-1")
        assert await _udp(port, missing) == _slow(node, missing)
        hits = srv.cache.negative_hits
        other = plain_request(shape, b"88.100/absent-2")
        assert await _udp(port, _with_id(other, 5)) == _with_id(_slow(node, other), 5)
        assert srv.cache.negative_hits == hits + 1
        # a write changes the answer: the spliced one is dropped and the next read sees it
        new = (HandleValue(1, "URL", b"https://example.org/cold-1-moved"),)
        resp = await svc.submit(Request(Op.MODIFY_VALUE, rec.handle, values=new, identity=identity("secret")))
        assert resp.ok, resp
        assert cache_key(req) not in srv.cache.data
        again = await _udp(port, _with_id(req, 12))
        assert b"cold-1-moved" in again and again == _with_id(_slow(node, req), 12)
        # a handle created after a miss was answered is found at once
        resp = await svc.submit(
            Request(Op.CREATE_HANDLE, "88.100/absent-2", values=rec.values, identity=identity("secret"))
        )
        assert resp.ok, resp
        assert int.from_bytes((await _udp(port, other))[24:28], "big") == 1
    finally:
        await node.server.close()
        node.service.close()


@pytest.mark.asyncio
async def test_a_miss_gives_the_answer_to_send_with_the_requests_id_and_expiration(tmp_path: Path) -> None:
    """``AnswerCache.miss`` returns the answer ready to send — spliced with the request's
    RequestId and ExpirationTime in place, or the negative answer patched — byte for byte the
    slow path's; and what it stores is patched on every later hit."""
    node = await start_node(tmp_path, NativeOptions())
    srv, svc, port = node.server, node.service, node.server.address[1]
    try:
        shape = WARM_SHAPES[1]
        await _udp(port, plain_request(shape, b"88.100/bench-0"))  # teaches the splice
        await _udp(port, plain_request(shape, b"88.100/absent-0"))  # and the negative answer
        rec = HandleRecord("88.100/cold-2", (HandleValue(1, "URL", b"https://example.org/cold-2"),))
        resp = await svc.submit(
            Request(Op.CREATE_HANDLE, rec.handle, values=rec.values, identity=identity("secret"))
        )
        assert resp.ok, resp
        for name, rid in ((b"88.100/cold-2", 0x01020304), (b"88.100/absent-1", 0x0A0B0C0D)):
            req = bytearray(plain_request(shape, name))
            req[8:12] = rid.to_bytes(4, "big")
            req[36:40] = (1700000123).to_bytes(4, "big")  # an expiration, echoed
            got = srv.cache.miss(bytes(req), 512)
            assert got is not None and bytes(got) == _slow(node, bytes(req))
            assert got[8:12] == req[8:12] and got[36:40] == req[36:40]
        req = plain_request(shape, b"88.100/cold-2")
        srv.cache.miss(_with_id(req, 21), 512)  # its second ask: stored
        assert await _udp(port, _with_id(req, 22)) == _with_id(_slow(node, req), 22)
        assert srv.cache.spliced == 2  # the last answer was a plain hit
    finally:
        await node.server.close()
        node.service.close()


@pytest.mark.asyncio
async def test_private_values_and_filters_are_left_to_the_slow_path(tmp_path: Path) -> None:
    node = await start_node(tmp_path, NativeOptions())
    srv, svc, port = node.server, node.service, node.server.address[1]
    try:
        shape = WARM_SHAPES[2]  # idr's own client: PO set
        await _udp(port, plain_request(shape, b"88.100/bench-0"))  # learn the splice
        values = (
            HandleValue(1, "URL", b"https://example.org/p"),
            HandleValue(2, "DESC", b"staff only", permissions=0b1100),
        )
        resp = await svc.submit(
            Request(Op.CREATE_HANDLE, "88.100/private-1", values=values, identity=identity("secret"))
        )
        assert resp.ok, resp
        req = plain_request(shape, b"88.100/private-1")
        spliced = srv.cache.spliced
        got = await _udp(port, req)
        assert srv.cache.spliced == spliced and b"staff only" not in got
        assert got == _slow(node, req)
        # the prefix handle and a handle under a prefix not ours: never from the store
        for name in (b"0.NA/88.100", b"99.999/x"):
            r = plain_request(shape, name)
            assert await _udp(port, r) == _slow(node, r)
        assert srv.cache.spliced == spliced
    finally:
        await node.server.close()
        node.service.close()


def test_cache_without_a_store_reader_answers_nothing_from_absence() -> None:
    """A recursive node's cache has no reader: a name its own (empty) store lacks is not absent."""
    cache = AnswerCache()
    cache.responsible = lambda h: True
    shape = WARM_SHAPES[1]
    req = plain_request(shape, b"88.100/anything")
    cache.negative[req[:8] + req[12:16] + req[20:36]] = b"template"
    assert cache.miss(req, 512) is None


@pytest.mark.asyncio
async def test_only_an_authoritative_node_on_an_embedded_store_reads_rows_on_the_loop(tmp_path: Path) -> None:
    svc = NodeService(SqliteStore(tmp_path / "idr.sqlite3"))
    try:
        srv = await start_server(svc, "127.0.0.1", 0, NativeOptions(tcp=False))
        assert srv.cache.read_raw is not None
        await srv.close()
        svc.role = "recursive"  # holds nothing: a name its store lacks is not therefore absent
        srv = await start_server(svc, "127.0.0.1", 0, NativeOptions(tcp=False))
        assert srv.cache.read_raw is None
        await srv.close()
    finally:
        svc.close()


def test_answer_cache_size_comes_from_native_limits() -> None:
    from idr.core.config import NativeLimits

    assert NativeOptions.from_config(NativeLimits(answer_cache=5)).cache_entries == 5
    assert NativeOptions.from_config(NativeLimits()).cache_entries == 2_000_000
    assert NativeOptions.from_config(NativeLimits(), cache_entries=7).cache_entries == 7


def test_a_burst_of_miss_reads_shares_one_snapshot_until_released(tmp_path: Path) -> None:
    """``SqliteStore.raw_reads``: the first read opens a read transaction the next ones share
    (released at the loop's next turn: ``defer``); a commit by another connection is not seen
    until ``release``, and then it is."""
    store = SqliteStore(tmp_path / "s.sqlite3")
    deferred: list[object] = []
    try:
        reads = store.raw_reads(deferred.append)
        url = HandleValue(1, "URL", b"https://example.org/v1")
        store.commit("create", "a", [Write("88.100/X", HandleRecord("88.100/x", (url,)))])
        assert reads.get("88.100/X") == encode_values([url])
        assert deferred == [reads.release]  # one release asked for, at the first read
        assert reads.get("88.100/MISSING") is None
        assert deferred == [reads.release]  # the burst shares it
        v2 = HandleValue(1, "URL", b"https://example.org/v2")
        store.commit("modify", "a", [Write("88.100/X", HandleRecord("88.100/x", (v2,)))])
        assert reads.get("88.100/X") == encode_values([url])  # the burst's snapshot
        reads.release()
        assert reads.get("88.100/X") == encode_values([v2])
        assert len(deferred) == 2
    finally:
        store.close()
    reads.release()  # after the store closed: nothing to end, no error


async def test_misses_share_a_snapshot_across_turns_of_the_loop_for_a_bounded_hold(tmp_path: Path) -> None:
    """``held_reads`` (what a served node's misses read through): the snapshot the first miss
    takes outlives the loop's turn — the misses of the next turns share it, not one ``BEGIN``
    and ``ROLLBACK`` per burst — and ends by itself after its hold, so a commit nobody
    announced is seen within the hold (an announced one ends it at once: the next test)."""
    assert 0 < READ_HOLD <= 0.01  # never holds back a WAL checkpoint for long
    store = SqliteStore(tmp_path / "s.sqlite3")
    loop = asyncio.get_running_loop()
    url = HandleValue(1, "URL", b"https://example.org/v1")
    v2 = HandleValue(1, "URL", b"https://example.org/v2")
    v3 = HandleValue(1, "URL", b"https://example.org/v3")
    try:
        store.commit("create", "a", [Write("88.100/X", HandleRecord("88.100/x", (url,)))])
        reads = held_reads(store, loop, hold=600.0)
        assert reads.get("88.100/X") == encode_values([url])
        store.commit("modify", "a", [Write("88.100/X", HandleRecord("88.100/x", (v2,)))])
        for _ in range(10):  # turns of the loop (a snapshot released at the next turn: v2)
            await asyncio.sleep(0)
        assert reads.get("88.100/X") == encode_values([url])
        reads.release()
        assert reads.get("88.100/X") == encode_values([v2])
        reads.release()

        short = held_reads(store, loop, hold=0.02)
        assert short.get("88.100/X") == encode_values([v2])
        store.commit("modify", "a", [Write("88.100/X", HandleRecord("88.100/x", (v3,)))])
        deadline = time.monotonic() + 10.0
        while short.get("88.100/X") != encode_values([v3]):
            assert time.monotonic() < deadline, "the hold never ended"
            await asyncio.sleep(0.01)
        short.release()
    finally:
        store.close()


def test_a_miss_after_an_invalidation_never_reads_an_older_snapshot(tmp_path: Path) -> None:
    """The answer cache ends the shared snapshot before any read that follows an invalidation,
    so a commit announced within one turn of the loop is never answered from before it."""
    store = SqliteStore(tmp_path / "s.sqlite3")
    try:
        reads = store.raw_reads(lambda release: None)  # never released by the loop here
        cache = AnswerCache()
        cache.read_raw, cache.read_release = reads.get, reads.release
        cache.responsible = lambda h: True
        url = HandleValue(1, "URL", b"https://example.org/v1")
        store.commit("create", "a", [Write("88.100/X", HandleRecord("88.100/x", (url,)))])
        request = plain_request(WARM_SHAPES[1], b"88.100/x")
        assert cache.miss(request, 1 << 16) is None  # no splice learned yet: but the row was read
        v2 = HandleValue(1, "URL", b"https://example.org/v2")
        store.commit("modify", "a", [Write("88.100/X", HandleRecord("88.100/x", (v2,)))])
        assert reads.get("88.100/X") == encode_values([url])  # still the old snapshot
        cache.invalidate(["88.100/X"])
        seen: list[bytes | None] = []
        cache.read_raw = lambda key: seen.append(reads.get(key)) or seen[-1]
        cache.miss(request, 1 << 16)
        assert seen == [encode_values([v2])]
    finally:
        store.close()
