"""A live native server under fuzz (CI-sized bench/fuzz_native.py), and the warm answer cache:
warmed answers equal the slow path's, and "not found" from the complete cache stays true across
writes."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from idr.core.request import Op, Request
from idr.model.value import HandleRecord, HandleValue
from idr.server.hotcache import cache_key
from idr.server.native import WARM_SHAPES, NativeOptions, check_warm, plain_request
from tests.resolver.native_node import identity, start_node

BENCH = Path(__file__).resolve().parents[2] / "bench" / "fuzz_native.py"


def _fuzz_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_native", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_native"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_live_server_survives_fuzz(tmp_path: Path) -> None:
    fz = _fuzz_module()
    t0 = time.monotonic()
    st, info = fz.run(tmp_path, 20_000, 300, 20_000.0, 7, 45.0)
    print(*fz.report(st, info, time.monotonic() - t0), sep="\n")
    assert info["alive"] == 1, "server process died"
    assert st.checks > 50 and st.check_fail == 0, "a valid resolution went wrong or unanswered"
    assert st.check_max < fz.CHECK_BOUND
    assert st.streams >= 300
    unanswered = st.lost + len(st.outstanding)
    assert unanswered <= max(10, st.expected // 100), f"{unanswered} well-formed requests unanswered"
    assert sum(st.codes.values()) > 0 and set(st.codes) - {1}, "errors were answered with codes"
    assert info["rss_after_kib"] < info["rss_before_kib"] + 64 * 1024


@pytest.mark.asyncio
async def test_warm_answers_equal_slow_path_and_negatives_follow_writes(tmp_path: Path) -> None:
    node = await start_node(tmp_path, NativeOptions(warm=True))
    try:
        srv, svc = node.server, node.service
        assert srv.warm_task is not None
        stored = await srv.warm_task
        assert stored >= 3 * 2 and srv.cache.complete
        assert check_warm(srv, svc, ["88.100/bench-0", "88.100/bench-1", "88.100/big"]) == []
        shape = WARM_SHAPES[1]
        missing = plain_request(shape, b"88.100/later")
        # teach the shape's negative answer, then it is answered from memory
        out = srv.handler.handle(plain_request(shape, b"88.100/nothing"), "t", udp=True)
        assert not hasattr(out, "send") and out.exists is False  # type: ignore[union-attr]
        srv.cache.learn(plain_request(shape, b"88.100/nothing"), out.messages[0],  # type: ignore[union-attr]
                        "88.100/NOTHING", False, srv.cache.generation)
        assert srv.cache.not_found(missing) is not None
        # a write makes the handle exist: the cache must stop claiming "not found"
        rec = HandleRecord("88.100/later", (HandleValue(1, "URL", b"https://example.org/later"),))
        resp = await svc.submit(Request(Op.CREATE_HANDLE, rec.handle, values=rec.values,
                                        identity=identity("secret")))
        assert resp.ok, resp
        assert srv.cache.not_found(missing) is None
        assert cache_key(missing) not in srv.cache.data
    finally:
        await node.server.close()
        node.service.close()
