"""REST resolution throughput: ``GET /api/handles/88.100/bench-N`` over keep-alive HTTP.

Honest on a small box: the server process is pinned to one core (``--server-cpu``, the
``sched_setaffinity`` call ``taskset -c 0`` makes) and the load generator to another
(``taskset -c 1 wrk …``), so the client's CPU never comes out of the server's. The load is
``wrk`` with a Lua script that picks a random ``88.100/bench-N`` of the ``--handles`` loaded
handles for every request (so the whole key space is resolved, not one cached entry).

In the same run, on the same core and event loop, a *baseline* aiohttp app that returns a
fixed JSON body of the same size as idr's answer is measured the same way; idr is quoted as
a ratio of it: what the REST layer costs on top of aiohttp's own floor.

wrk is the Debian package (``apt-get install -y wrk``); without it the script says so and
falls back to a Python aiohttp client, whose figures are client-bound and only indicative.

    python bench/http_resolve.py --handles 100000 --seconds 10 --rounds 3 [--tls] [--profile out.svg]

After the cold run (empty cache) and a warm-up pass, idr and the baseline are measured in
alternating rounds with both servers up, and the medians and per-round ratios are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import shutil
import socket
import statistics
import subprocess
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
SAMPLE = f"{PREFIX}/bench-0"
MAX_WARMUP_S = 120.0

# wrk's Lua: a random handle per request; ``done`` prints one JSON line we parse.
WRK_SCRIPT = """
local n = %(handles)d
local sequential = %(sequential)s
local i = -1
math.randomseed(%(seed)d)
request = function()
  if sequential then i = (i + 1) %% n else i = math.random(0, n - 1) end
  return wrk.format("GET", "/api/handles/%(prefix)s/bench-" .. i)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"p50_us":%%d,"p99_us":%%d,' ..
    '"errors":%%d,"non2xx":%%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def _records(n: int) -> Any:
    from idr.codec.values import encode_admin
    from idr.model.value import AdminRecord, HandleRecord, HandleValue

    now = int(time.time())
    admin = HandleValue(100, "HS_ADMIN", encode_admin(AdminRecord("0.NA/88.100", 300)), timestamp=now)
    for i in range(n):
        url = HandleValue(1, "URL", f"https://example.org/bench/{i}".encode(), timestamp=now)
        yield HandleRecord(f"{PREFIX}/bench-{i}", (url, admin))


def _pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def _install_uvloop() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass


def _ssl(data_dir: str, tls: bool) -> Any:
    if not tls:
        return None
    from idr.server.tls import server_context

    return server_context(Path(data_dir))


async def _serve(
    app: Any, sock: socket.socket, ssl_ctx: Any, ready: Any, info: Any, stop: EventType, fast: bool = False
) -> None:
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    if fast:  # as idr serve: cached anonymous resolutions answered before routing
        from idr.server.http import fast_path

        runner.server.request_handler = fast_path(app, runner.server.request_handler)
    await web.SockSite(runner, sock, backlog=1024, ssl_context=ssl_ctx).start()
    ready.put(info)
    await asyncio.get_running_loop().run_in_executor(None, stop.wait)
    await runner.cleanup()


def serve_idr(
    data_dir: str,
    handles: int,
    sock: socket.socket,
    fast: bool,
    tls: bool,
    cpu: int | None,
    ready: Any,
    stop: EventType,
) -> None:
    """Server process: load the handles, then serve idr's app until ``stop`` is set (``fast``:
    with the fast path ``idr serve`` installs, ``idr.server.http.fast_path``)."""
    from idr.codec.values import encode_admin
    from idr.core.service import NodeService
    from idr.model.value import AdminRecord, HandleValue
    from idr.server.http import make_http_app
    from idr.store.sqlite import SqliteStore

    _install_uvloop()
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
    _pin(cpu)  # loading may use any core; serving gets exactly one
    app = make_http_app(service, tls=tls, cache_entries=handles + 16)
    try:
        asyncio.run(_serve(app, sock, _ssl(data_dir, tls), ready, (os.getpid(), load_s), stop, fast))
    finally:
        service.close()


def serve_baseline(
    data_dir: str, body: bytes, sock: socket.socket, tls: bool, cpu: int | None, ready: Any, stop: EventType
) -> None:
    """The floor: aiohttp answering every ``/api/handles/…`` with the same-sized fixed JSON."""
    from aiohttp import web

    _install_uvloop()
    _pin(cpu)

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/handles/{handle:.*}", handler)
    asyncio.run(_serve(app, sock, _ssl(data_dir, tls), ready, (os.getpid(), 0.0), stop))


def drive_python(url: str, handles: int, seconds: float, concurrency: int, cpu: int | None, out: Any) -> None:
    """Fallback load process (no wrk): ``concurrency`` keep-alive aiohttp workers."""
    import aiohttp

    _pin(cpu)

    async def main() -> tuple[int, int, list[float]]:
        latencies: list[float] = []
        errors = 0
        conn = aiohttp.TCPConnector(limit=concurrency, force_close=False, ssl=False)
        base = f"{url}/api/handles/{PREFIX}/bench-"
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

    _install_uvloop()
    t0 = time.perf_counter()
    n, errors, lat = asyncio.run(main())
    elapsed = time.perf_counter() - t0
    ms = sorted(x * 1000 for x in lat)
    p50 = statistics.median(ms) if ms else float("nan")
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))] if ms else float("nan")
    out.put({"rps": n / elapsed, "p50_ms": p50, "p99_ms": p99, "errors": errors, "requests": n})


def run_wrk(
    url: str, handles: int, seconds: float, concurrency: int, cpu: int | None, *, sequential: bool = False
) -> dict[str, Any]:
    """One wrk run (one thread, ``concurrency`` keep-alive connections) pinned to ``cpu``;
    ``sequential`` walks bench-0, bench-1, … instead (the warm-up pass)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        seed = random.randrange(1 << 30)
        lua = "true" if sequential else "false"
        f.write(WRK_SCRIPT % {"handles": handles, "seed": seed, "prefix": PREFIX, "sequential": lua})
        script = f.name
    try:
        duration = f"-d{max(1, round(seconds))}s"
        cmd = ["wrk", "-t1", f"-c{concurrency}", duration, "--latency", "-s", script, url]
        if cpu is not None and shutil.which("taskset"):
            cmd = ["taskset", "-c", str(cpu), *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    finally:
        os.unlink(script)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
    r = json.loads(line.removeprefix("WRKJSON "))
    return {
        "rps": r["requests"] / (r["duration_us"] / 1e6),
        "p50_ms": r["p50_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "errors": r["errors"] + r["non2xx"],
        "requests": r["requests"],
    }


def _listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def _sample_body(url: str) -> bytes:
    """idr's answer for one handle, fetched once: the baseline returns a body this size."""
    import http.client
    import ssl
    from urllib.parse import urlsplit

    u = urlsplit(url)
    assert u.hostname is not None and u.port is not None
    conn: http.client.HTTPConnection
    if u.scheme == "https":
        ctx = ssl._create_unverified_context()
        conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=10)
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request("GET", f"/api/handles/{SAMPLE}")
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"sample resolution failed: {resp.status} {body!r}")
        return body
    finally:
        conn.close()


class Run:
    """Start one server process, measure it, stop it (always)."""

    def __init__(self, ctx: Any, target: Any, args: tuple[Any, ...], tls: bool) -> None:
        self.sock = _listener()
        self.ready, self.stop = ctx.Queue(), ctx.Event()
        self.proc = ctx.Process(
            target=target, args=(*args[:2], self.sock, *args[2:], self.ready, self.stop), daemon=True
        )
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.sock.getsockname()[1]}"

    def __enter__(self) -> tuple[int, float]:
        self.proc.start()
        pid, load_s = self.ready.get(timeout=READY_TIMEOUT)
        return int(pid), float(load_s)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(10)
        self.sock.close()


def warm_up(url: str, args: argparse.Namespace, cold_rps: float) -> float:
    """Walk every handle once (sequentially) so the warm figure measures the steady state of a
    node whose cache holds its working set; the duration comes from the cold run's rate."""
    seconds = min(MAX_WARMUP_S, 1.0 + 1.5 * int(args.handles) / max(cold_rps, 1.0))
    run_wrk(url, args.handles, seconds, args.concurrency, args.load_cpu, sequential=True)
    return seconds


def _py_spy() -> str:
    """py-spy from PATH or beside this interpreter (a venv's bin/); ``pip install py-spy``."""
    beside = Path(sys.executable).with_name("py-spy")
    found = shutil.which("py-spy") or (str(beside) if beside.exists() else None)
    if found is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    return found


def _cpu_seconds(pid: int) -> float:
    """user + system CPU of ``pid`` so far (Linux ``/proc``); NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    ctx: Any, url: str, args: argparse.Namespace, pid: int, *, profile: bool = False
) -> dict[str, Any]:
    """One load run; also the server's CPU time per request, which a noisy neighbour on the
    same core disturbs far less than requests/s (it steals wall time, not our CPU time)."""
    cpu0 = _cpu_seconds(pid)
    profiler = None
    if args.profile and profile:
        profiler = subprocess.Popen(
            [
                _py_spy(),
                "record",
                "-p",
                str(pid),
                "-o",
                args.profile,
                "-d",
                str(round(args.seconds)),
                "-r",
                "200",
                "--nonblocking",
                *(["-f", "speedscope"] if args.profile.endswith(".json") else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    try:
        if shutil.which("wrk"):
            result = run_wrk(url, args.handles, args.seconds, args.concurrency, args.load_cpu)
            result["client"] = "wrk"
        else:
            out = ctx.Queue()
            client = ctx.Process(
                target=drive_python,
                args=(url, args.handles, args.seconds, args.concurrency, args.load_cpu, out),
                daemon=True,
            )
            client.start()
            result = out.get(timeout=args.seconds + READY_TIMEOUT)
            client.join(10)
            result["client"] = "python-aiohttp"
    finally:
        if profiler is not None:
            profiler.wait(timeout=args.seconds + 60)
    result["cpu_us"] = (_cpu_seconds(pid) - cpu0) / max(result["requests"], 1) * 1e6
    return result


def _line(label: str, r: dict[str, Any], extra: str = "") -> str:
    return (
        f"{label}: {r['rps']:,.0f} requests/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
        f"server CPU {r['cpu_us']:.0f} us/request  errors {r['errors']}  "
        f"({r['requests']} requests, {r['client']}){extra}"
    )


def _median(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-figure medians over rounds (requests and errors summed)."""
    out = {k: statistics.median(r[k] for r in results) for k in ("rps", "p50_ms", "p99_ms", "cpu_us")}
    out["errors"] = sum(r["errors"] for r in results)
    out["requests"] = sum(r["requests"] for r in results)
    out["client"] = results[0]["client"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--handles", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each measurement")
    ap.add_argument("--rounds", type=int, default=3, help="idr/baseline alternations (medians quoted)")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--tls", action="store_true", help="measure HTTPS instead of plain HTTP")
    ap.add_argument("--server-cpu", type=int, default=0, help="core for the servers (-1: unpinned)")
    ap.add_argument("--load-cpu", type=int, default=1, help="core for the load generator (-1: unpinned)")
    ap.add_argument("--profile", metavar="FILE", help="py-spy record the idr server (.svg or .json)")
    ap.add_argument(
        "--no-fast-path", action="store_true", help="idr's app without idr serve's pre-routing fast path"
    )
    args = ap.parse_args(argv)
    ncpu = os.cpu_count() or 1
    server_cpu = args.server_cpu if 0 <= args.server_cpu < ncpu else None
    args.load_cpu = args.load_cpu if 0 <= args.load_cpu < ncpu else None
    if not shutil.which("wrk"):
        print(
            "wrk not found (Debian: apt-get install -y wrk); falling back to the Python client, "
            "whose figures are client-bound",
            file=sys.stderr,
        )
    ctx = mp.get_context("spawn")
    scheme = "https" if args.tls else "http"
    pins = f"server cpu {server_cpu}, load cpu {args.load_cpu}, {args.concurrency} connections"
    idr_rounds: list[dict[str, Any]] = []
    base_rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="idr-bench-") as data_dir:
        fast = not args.no_fast_path
        idr_run = Run(ctx, serve_idr, (data_dir, args.handles, fast, args.tls, server_cpu), args.tls)
        with idr_run as (pid, load_s):
            rate = args.handles / load_s
            print(f"loaded {args.handles} handles in {load_s:.1f}s ({rate:,.0f}/s)  [{pins}]")
            body = _sample_body(idr_run.url)
            cold = measure(ctx, idr_run.url, args, pid)
            print(_line(f"http_resolve idr cold ({scheme}, empty cache, misses hit SQLite)", cold))
            if shutil.which("wrk"):
                print(f"warm-up: every handle once, {warm_up(idr_run.url, args, cold['rps']):.0f}s")
            # Both servers stay up (the idle one costs nothing) and are measured in turn, so a
            # noisy neighbour hits both alike and the ratio is per round, not across minutes.
            base_run = Run(ctx, serve_baseline, (data_dir, body, args.tls, server_cpu), args.tls)
            with base_run as (base_pid, _):
                for i in range(max(1, args.rounds)):
                    idr_rounds.append(measure(ctx, idr_run.url, args, pid, profile=i == 0))
                    base_rounds.append(measure(ctx, base_run.url, args, base_pid))
                    a, b = idr_rounds[-1], base_rounds[-1]
                    print(
                        f"round {i + 1}: idr {a['rps']:,.0f}/s ({a['cpu_us']:.0f} us CPU/req), "
                        f"baseline {b['rps']:,.0f}/s ({b['cpu_us']:.0f} us CPU/req), "
                        f"ratio {a['rps'] / b['rps']:.2f}"
                    )
    idr, base = _median(idr_rounds), _median(base_rounds)
    print(_line(f"http_resolve idr warm ({scheme}, median of {len(idr_rounds)})", idr))
    print(_line(f"http_resolve baseline ({scheme}, fixed {len(body)}-byte JSON)", base))
    ratios = [a["rps"] / b["rps"] for a, b in zip(idr_rounds, base_rounds, strict=True)]
    print(
        f"http_resolve ratio idr/baseline: {statistics.median(ratios):.2f} (median of per-round ratios); "
        f"CPU per request baseline/idr: {base['cpu_us'] / idr['cpu_us']:.2f}"
    )
    if args.profile:
        print(f"profile (first warm round): {args.profile}")
    return 1 if idr["errors"] or base["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
