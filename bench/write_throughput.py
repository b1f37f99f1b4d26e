"""HTTPS write throughput: group commit at 1, 16 and 64 concurrent clients (issue 14 goal 3).

For each store engine (SQLite; PostgreSQL in a throwaway local cluster) and each replication
mode (none; sync: a mirror site that must hold every write before it is acknowledged), real
``idr serve`` processes are started on 127.0.0.1 and driven by N concurrent HTTPS clients
(keep-alive, one connection each, Basic auth as the prefix's admin), each creating new
handles back to back (``PUT /api/handles/88.100/w<client>-<i>``) for ``--seconds``. A write
counts when its answer is ``responseCode: 1`` — i.e. when it is durable (and, in sync mode,
held by the mirror). Printed per point: writes/s, mean latency; then the ratios the issue
asks for, each from this one run: 64 clients ÷ 1 client (goal ≥ 5, per engine) and sync ÷
no replication at 64 clients (goal ≥ 0.7, per engine).

The load generator is ``wrk`` (Debian package; one C thread, a Lua script making each
request a new handle), or, without it, this process (uvloop + aiohttp, which costs about
half a server's CPU per write); the server is another process, the mirror a third. On a
2-core machine they share the cores, so the 64-client figures are bounded by CPU as much as
by the disk: quote ratios from one run, not absolute figures across machines.

    python bench/write_throughput.py [--seconds 10] [--clients 1,16,64]
        [--engines sqlite,postgres] [--modes none,sync] [--json] [--before SRC]

``--before SRC``: every point also measured with idr from another checkout's source tree (e.g.
``/work/main/src``), before and after alternating per engine and mode, so a change to the write
path is judged by the ratios of one run.

Small check during development: ``--seconds 2 --clients 1,16``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

IDR = [sys.executable, "-c", "from idr.cli import main; main()"]
SRC: dict[str, str] = {}  # PYTHONPATH for the idr processes of the source being measured
SECRET = "bench-s3cret"
REPL_SECRET = secrets.token_urlsafe(32)  # a generated key, as idr replication setup makes
AUTH = aiohttp.encode_basic_auth("300%3A0.NA%2F88.100", SECRET)  # type: ignore[attr-defined]
READY_TIMEOUT = 60.0
WARMUP_S = 1.0
WRK = shutil.which("wrk")  # Debian: apt-get install -y wrk (else a Python client, CPU-hungrier)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Site:
    name: str
    dir: Path
    https: int = field(default_factory=free_port)
    repl: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.dir.parent / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(
            [*IDR, "serve", "--data", str(self.dir)], stdout=log, stderr=log, env=_env()
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def cpu_seconds(site: Site) -> float:
    """User + system CPU time of the site's server process so far (Linux /proc)."""
    if site.proc is None:
        return 0.0
    try:
        fields = Path(f"/proc/{site.proc.pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


GAUGES = ("idr_write_groups", "idr_writes_grouped", "idr_gc_collections_gen0", "idr_gc_collections_gen2")


def node_gauges(site: Site) -> dict[str, float]:
    """Groups committed, writes in them, the collector's young and full collections, from the
    node's /metrics (absent when unreadable or, for the collector, from code before it)."""
    import ssl
    import urllib.request

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{site.https}/metrics", context=ctx, timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return {}
    got = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in GAUGES:
            got[name] = float(value)
    return got


def _env() -> dict[str, str]:
    return {**os.environ, **SRC}


def idr(*args: str) -> None:
    r = subprocess.run([*IDR, *args], capture_output=True, text=True, env=_env())
    if r.returncode != 0:
        raise RuntimeError(f"idr {' '.join(args)} failed: {r.stdout}{r.stderr}")


def setup_site(root: Path, name: str, dsn: str | None) -> Site:
    site = Site(name, root / name)
    store = ["--store", "postgres", "--dsn", dsn] if dsn else []
    idr("init", "--data", str(site.dir), "--prefix", "88.100", "--admin-secret", SECRET,
        "--https", f"127.0.0.1:{site.https}", *store)  # fmt: skip
    return site


def replicate(site: Site, peer: Site, role: str) -> None:
    idr("replication", "setup", "--data", str(site.dir), "--listen", f"127.0.0.1:{site.repl}",
        "--peer", f"127.0.0.1:{peer.repl}", "--secret", REPL_SECRET, "--role", role,
        "--mode", "sync")  # fmt: skip


async def wait_ready(site: Site, session: aiohttp.ClientSession, *, writable: bool) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    url = f"https://127.0.0.1:{site.https}/api/handles/0.NA/88.100"
    probe = f"https://127.0.0.1:{site.https}/api/handles/88.100/ready-probe"
    body = {"values": [{"index": 1, "type": "URL", "data": {"format": "string", "value": "x"}}]}
    while time.monotonic() < deadline:
        if site.proc is not None and site.proc.poll() is not None:
            raise RuntimeError(f"{site.name} exited ({site.proc.returncode}); see {site.dir.parent}")
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            if not writable:
                async with session.get(url, ssl=False) as r:
                    if r.status == 200:
                        return
            else:
                headers = {"Authorization": AUTH}
                async with session.put(probe, json=body, headers=headers, ssl=False) as r:
                    doc = await r.json(content_type=None)
                    if doc.get("responseCode") == 1:
                        return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{site.name} not ready in {READY_TIMEOUT} s")


WRK_SCRIPT = """
local counter = 0
ok, bad = 0, 0  -- globals: done() reads them per thread
local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
request = function()
  counter = counter + 1
  local h = "88.100/%(tag)s-" .. id .. "-" .. counter
  local body = '{"values":[{"index":1,"type":"URL","data":{"format":"string",' ..
    '"value":"https://example.org/' .. h .. '"}}]}'
  return wrk.format("PUT", "/api/handles/" .. h,
    {["Authorization"] = "%(auth)s", ["Content-Type"] = "application/json"}, body)
end
response = function(status, headers, body)
  if status == 200 and string.find(body, '"responseCode":1', 1, true) then ok = ok + 1 else bad = bad + 1 end
end
done = function(summary, latency, requests)
  local t_ok, t_bad = 0, 0
  for _, t in ipairs(threads) do t_ok = t_ok + t:get("ok"); t_bad = t_bad + t:get("bad") end
  local e = summary.errors
  io.write(string.format('WRKJSON {"ok":%%d,"bad":%%d,"duration_us":%%d,"mean_us":%%f,"errors":%%d}\\n',
    t_ok, t_bad, summary.duration, latency.mean, e.connect + e.read + e.write + e.timeout))
end
"""


def drive_wrk(port: int, clients: int, seconds: float, tag: str, root: Path) -> dict[str, float]:
    """The load from ``wrk`` (C, one thread): the client's CPU cost stays far below the server's."""
    script = root / f"wrk-{tag}.lua"
    script.write_text(WRK_SCRIPT % {"tag": tag, "auth": AUTH})
    url = f"https://127.0.0.1:{port}"
    warm = [str(WRK), "-t1", f"-c{clients}", f"-d{WARMUP_S:g}s", "--timeout", "30s", "-s", str(script), url]
    subprocess.run(warm, capture_output=True, check=True)
    script.write_text(WRK_SCRIPT % {"tag": tag + "m", "auth": AUTH})
    cmd = [str(WRK), "-t1", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "30s", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    doc = json.loads(line[len("WRKJSON ") :])
    elapsed = doc["duration_us"] / 1e6
    return {
        "writes_per_s": doc["ok"] / elapsed,
        "mean_ms": doc["mean_us"] / 1000,
        "failed": doc["bad"] + doc["errors"],
    }


async def drive(port: int, clients: int, seconds: float, tag: str) -> dict[str, float]:
    """``clients`` writers, each on its own keep-alive connection, for ``seconds`` after a
    warm-up; returns acknowledged writes/s, mean latency (ms) and failures."""
    headers = {"Authorization": AUTH, "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=clients, ssl=False)
    timeout = aiohttp.ClientTimeout(total=30)
    counting = False
    stop = False
    done = 0
    failed = 0
    latency = 0.0

    async def writer(n: int, session: aiohttp.ClientSession) -> None:
        nonlocal done, failed, latency
        i = 0
        while not stop:
            i += 1
            handle = f"88.100/{tag}-{n}-{i}"
            body = (
                b'{"values":[{"index":1,"type":"URL","data":{"format":"string","value":"https://example.org/'
                + handle.encode()
                + b'"}}]}'
            )
            t0 = time.perf_counter()
            try:
                async with session.put(
                    f"https://127.0.0.1:{port}/api/handles/{handle}", data=body, headers=headers
                ) as r:
                    doc = await r.json(content_type=None)
                ok = doc.get("responseCode") == 1
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if counting:
                if ok:
                    done += 1
                    latency += time.perf_counter() - t0
                else:
                    failed += 1

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.ensure_future(writer(n, session)) for n in range(clients)]
        await asyncio.sleep(WARMUP_S)
        counting = True
        t0 = time.perf_counter()
        await asyncio.sleep(seconds)
        counting = False
        elapsed = time.perf_counter() - t0
        stop = True
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "writes_per_s": done / elapsed,
        "mean_ms": latency / done * 1000 if done else float("nan"),
        "failed": failed,
    }


@contextlib.contextmanager
def postgres() -> Iterator[Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test helpers (not in the wheel)
    from tests.store.pgcluster import start_cluster

    cluster = start_cluster(shared_buffers="256MB")
    try:
        yield cluster
    finally:
        cluster.destroy()


def new_db(cluster: Any, name: str) -> str:
    import psycopg

    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return str(cluster.dsn(name))


async def measure(
    engine: str, mode: str, levels: list[int], seconds: float, cluster: Any, root: Path, src: str = "after"
) -> list[dict[str, Any]]:
    tag = f"{engine}_{mode}" + ("_before" if src == "before" else "")
    base = root / tag
    base.mkdir()
    dsn = new_db(cluster, f"{tag}_primary") if engine == "postgres" else None
    primary = setup_site(base, "primary", dsn)
    sites = [primary]
    if mode == "sync":
        mdsn = new_db(cluster, f"{tag}_mirror") if engine == "postgres" else None
        mirror = setup_site(base, "mirror", mdsn)
        replicate(primary, mirror, "primary")
        replicate(mirror, primary, "mirror")
        sites.append(mirror)
    out = []
    try:
        for s in sites:
            s.start()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session:
            await wait_ready(primary, session, writable=True)  # sync: a mirror holds it too
        for clients in levels:
            cpu0 = [cpu_seconds(s) for s in sites]
            g0 = node_gauges(primary)
            t0 = time.perf_counter()
            if WRK is not None:
                r = drive_wrk(primary.https, clients, seconds, f"c{clients}", base)
            else:
                r = await drive(primary.https, clients, seconds, f"c{clients}")
            # CPU per write, warm-up included on both sides of the division (rate × wall time).
            writes = r["writes_per_s"] * (time.perf_counter() - t0)
            used = [cpu_seconds(s) - c for s, c in zip(sites, cpu0, strict=True)]
            cpu = [u / writes * 1000 if writes else 0.0 for u in used]
            g1 = node_gauges(primary)
            d = {k: g1.get(k, float("nan")) - g0.get(k, float("nan")) for k in GAUGES}
            groups = d["idr_write_groups"]
            per_commit = d["idr_writes_grouped"] / groups if groups > 0 else float("nan")
            # the collector's passes per 1,000 writes (young; full): nan for code before gcpace
            gc_young, gc_full = (d[f"idr_gc_collections_gen{g}"] / writes * 1000 for g in (0, 2))
            point = {
                "src": src,
                "engine": engine,
                "replication": mode,
                "clients": clients,
                **r,
                "cpu_ms": cpu,
                "writes_per_commit": per_commit,
                "gc_per_1000_writes": [gc_young, gc_full],
            }
            out.append(point)
            print(
                ("before    " if src == "before" else "")
                + f"{engine:9} {mode:5} {clients:3} clients: {r['writes_per_s']:8.0f} writes/s  "
                f"mean {r['mean_ms']:6.2f} ms  failed {r['failed']}  writes/commit {per_commit:5.1f}  "
                f"server CPU/write " + " + ".join(f"{c:.2f}" for c in cpu) + " ms  "
                f"gc per 1k writes {gc_young:.1f} young, {gc_full:.2f} full",
                flush=True,
            )
    finally:
        for s in reversed(sites):
            s.stop()
    return out


def ratios(points: list[dict[str, Any]], levels: list[int]) -> list[dict[str, Any]]:
    by = {(p["engine"], p["replication"], p["clients"]): p["writes_per_s"] for p in points}
    lo, hi = min(levels), max(levels)
    out = []
    for engine in sorted({p["engine"] for p in points}):
        for mode in ("none", "sync"):
            a, b = by.get((engine, mode, lo)), by.get((engine, mode, hi))
            if a and b:
                what = f"{engine} {mode}: {hi} clients / {lo} client"
                out.append({"what": what, "ratio": b / a, "goal": 5.0})
        a, b = by.get((engine, "none", hi)), by.get((engine, "sync", hi))
        if a and b:
            what = f"{engine}: sync / no replication at {hi} clients"
            out.append({"what": what, "ratio": b / a, "goal": 0.7})
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    levels = [int(x) for x in args.clients.split(",")]
    engines = args.engines.split(",")
    modes = args.modes.split(",")
    points: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="idr-bench-writes-") as tmp, contextlib.ExitStack() as stack:
        cluster = stack.enter_context(postgres()) if "postgres" in engines else None
        for engine in engines:
            for mode in modes:
                if args.before is not None:
                    SRC["PYTHONPATH"] = str(args.before)
                    points += await measure(engine, mode, levels, args.seconds, cluster, Path(tmp), "before")
                    SRC.clear()
                points += await measure(engine, mode, levels, args.seconds, cluster, Path(tmp))
    rs = ratios([p for p in points if p["src"] == "after"], levels)
    print()
    if args.before is not None:
        for r in ratios([p for p in points if p["src"] == "before"], levels):
            print(f"before: {r['what']:40} {r['ratio']:5.2f}×")
        by = {(p["src"], p["engine"], p["replication"], p["clients"]): p for p in points}
        for (src, engine, mode, clients), p in by.items():
            base = by.get(("before", engine, mode, clients))
            if src == "after" and base and base["writes_per_s"]:
                rate = p["writes_per_s"] / base["writes_per_s"]
                cpu = sum(p["cpu_ms"]) / sum(base["cpu_ms"]) if sum(base["cpu_ms"]) else float("nan")
                print(
                    f"after / before: {engine} {mode} {clients} clients {rate:5.2f}× writes/s, "
                    f"{cpu:5.2f}× server CPU per write"
                )
        print()
    for r in rs:
        verdict = "ok" if r["ratio"] >= r["goal"] else "below goal"
        print(f"{r['what']:48} {r['ratio']:5.2f}×  (goal ≥ {r['goal']:g}: {verdict})")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n1-min load average at the end: {load:.2f} (a quiet 2-core machine is < 2.5)")
    return {"points": points, "ratios": rs, "load": load}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", default="1,16,64")
    ap.add_argument("--engines", default="sqlite,postgres")
    ap.add_argument("--modes", default="none,sync")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--before", type=Path, help="also measure idr from this source tree (PYTHONPATH)")
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
