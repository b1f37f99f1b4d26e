"""A mirror that is promoted keeps its warm answer cache: promotion changes the role and the
epoch, not the records nor the homed prefixes, so nothing is dropped and the new primary
answers at full speed from its first second; its own writes are then served new."""

from __future__ import annotations

from collections.abc import Callable

from idr.resolver.client import HandleClient
from idr.server.native import WARM_SHAPES, NativeOptions, plain_request, start_server

from .conftest import Site, until


async def test_a_promoted_mirror_keeps_its_warm_answers(make_pair: Callable[..., tuple[Site, Site]]) -> None:
    a, b = make_pair("async")
    await a.start()
    await b.start()
    for i in range(50):
        assert (await a.write(f"h{i}", f"https://example.cn/old-{i}")).ok
    await until(lambda: b.has("h49"))
    srv = await start_server(b.svc, "127.0.0.1", 0, NativeOptions(warm=True, warm_shapes=WARM_SHAPES[:1]))
    try:
        assert srv.warm_task is not None
        await srv.warm_task
        cache = srv.cache
        warmed = dict(cache.data)
        assert cache.shelved + len(warmed) >= 50 and cache.complete
        client = HandleClient("127.0.0.1", srv.address[1], timeout=5.0, retries=0)
        shelved = cache.shelved
        await a.stop()  # the primary is lost
        await b.r.promote()
        assert cache.data == warmed and cache.shelved == shelved and cache.complete  # nothing dropped
        spliced, slow = cache.spliced, srv.udp.slow
        got = await client.send_udp(plain_request(WARM_SHAPES[0], b"88.100/h7"))
        assert b"old-7" in got
        assert cache.spliced == spliced and srv.udp.slow == slow  # from memory: no store read
        assert (await b.write("h7", "https://example.cn/new-7")).ok  # the new primary writes
        got = await client.send_udp(plain_request(WARM_SHAPES[0], b"88.100/h7"))
        assert b"new-7" in got
    finally:
        await srv.close()
