"""REST resolution throughput: ``GET /api/handles/88.100/bench-N`` over keep-alive HTTP.

A node (SQLite file, NodeService, the aiohttp app over plain HTTP) runs in one process
with ``--handles`` handles loaded by ``store.bulk_load``; a separate process drives it
with ``--concurrency`` aiohttp client coroutines for ``--seconds`` and reports
requests/s, p50/p99 latency and errors. Separate processes so the client's CPU does not
come out of the server's event loop.

    python bench/http_resolve.py --handles 100000 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import random
import socket
import statistics
import sys
import tempfile
import time
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

PREFIX = "88.100"
ADMIN = "300:0.NA/88.100"
LOAD_BATCH = 10_000
READY_TIMEOUT = 600.0


def _records(n: int) -> Any:
    from idr.codec.values import encode_admin
    from idr.model.value import AdminRecord, HandleRecord, HandleValue

    now = int(time.time())
    admin = HandleValue(100, "HS_ADMIN", encode_admin(AdminRecord("0.NA/88.100", 300)), timestamp=now)
    for i in range(n):
        url = HandleValue(1, "URL", f"https://example.org/bench/{i}".encode(), timestamp=now)
        yield HandleRecord(f"{PREFIX}/bench-{i}", (url, admin))


def serve(data_dir: str, handles: int, sock: socket.socket, ready: Any, stop: EventType) -> None:
    """Server process: load the handles, then serve until ``stop`` is set."""
    from aiohttp import web

    from idr.codec.values import encode_admin
    from idr.core.service import NodeService
    from idr.model.value import AdminRecord, HandleValue
    from idr.server.http import make_http_app
    from idr.store.sqlite import SqliteStore

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    store = SqliteStore(Path(data_dir) / "idr.sqlite3")
    service = NodeService(store, admins=[ADMIN], cache_entries=handles + 16)
    admin = HandleValue(100, "HS_ADMIN", encode_admin(AdminRecord("0.NA/88.100", 300)))
    service.bootstrap(PREFIX, [admin, HandleValue(300, "HS_SECKEY", b"secret-key", permissions=0b1100)])
    t0 = time.perf_counter()
    batch = []
    for rec in _records(handles):
        batch.append(rec)
        if len(batch) == LOAD_BATCH:
            store.bulk_load(batch)
            batch.clear()
    if batch:
        store.bulk_load(batch)
    service.cache.clear()
    load_s = time.perf_counter() - t0

    async def main() -> None:
        runner = web.AppRunner(make_http_app(service, tls=False), access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock, backlog=1024).start()
        ready.put(load_s)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, stop.wait)
        await runner.cleanup()

    try:
        asyncio.run(main())
    finally:
        service.close()


def drive(port: int, handles: int, seconds: float, concurrency: int, out: Any) -> None:
    """Load process: ``concurrency`` keep-alive workers, each one request at a time."""
    import aiohttp

    async def main() -> tuple[int, int, list[float]]:
        latencies: list[float] = []
        errors = 0
        conn = aiohttp.TCPConnector(limit=concurrency, force_close=False)
        base = f"http://127.0.0.1:{port}/api/handles/{PREFIX}/bench-"
        deadline = time.perf_counter() + seconds

        async def worker(session: aiohttp.ClientSession, seed: int) -> None:
            nonlocal errors
            rnd = random.Random(seed)
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                try:
                    async with session.get(base + str(rnd.randrange(handles))) as resp:
                        await resp.read()
                        ok = resp.status == 200
                except aiohttp.ClientError:
                    ok = False
                latencies.append(time.perf_counter() - t)
                errors += not ok

        async with aiohttp.ClientSession(connector=conn) as session:
            await asyncio.gather(*(worker(session, i) for i in range(concurrency)))
        return len(latencies), errors, latencies

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    t0 = time.perf_counter()
    n, errors, lat = asyncio.run(main())
    out.put((n, errors, time.perf_counter() - t0, lat))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--handles", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args(argv)

    ctx = mp.get_context("spawn")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="idr-bench-") as data_dir:
        ready, results, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
        server = ctx.Process(target=serve, args=(data_dir, args.handles, sock, ready, stop), daemon=True)
        server.start()
        try:
            load_s = ready.get(timeout=READY_TIMEOUT)
            print(f"loaded {args.handles} handles in {load_s:.1f}s ({args.handles / load_s:,.0f}/s)")
            client = ctx.Process(
                target=drive, args=(port, args.handles, args.seconds, args.concurrency, results), daemon=True
            )
            client.start()
            n, errors, elapsed, lat = results.get(timeout=args.seconds + READY_TIMEOUT)
            client.join(10)
        finally:
            stop.set()
            server.join(10)
            if server.is_alive():
                server.terminate()
            sock.close()
    lat_ms = sorted(x * 1000 for x in lat)
    p50 = statistics.median(lat_ms) if lat_ms else float("nan")
    p99 = lat_ms[min(len(lat_ms) - 1, int(len(lat_ms) * 0.99))] if lat_ms else float("nan")
    print(
        f"http_resolve: {n / elapsed:,.0f} requests/s  p50 {p50:.2f} ms  p99 {p99:.2f} ms  "
        f"errors {errors}  ({n} requests, {args.concurrency} connections, {elapsed:.1f}s, "
        f"{args.handles} handles)"
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
