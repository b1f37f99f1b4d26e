"""Fuzz a LIVE ``idr serve`` over HTTP(S): REST API, proxy, SNMS API, console, sessions API.

    python bench/fuzz_http.py [--requests 20000] [--concurrency 32] [--seed 1]

Initialises a node in a temporary directory (``idr init``), starts ``idr serve`` on 127.0.0.1,
then sends hostile requests at a bounded concurrency: random and mutated paths (percent-escapes,
control bytes, ``..``, huge handles), every method, hostile headers (bad Basic, malformed
``Authorization: Handle``, PBKDF2 asking for 10⁹ iterations, huge cookies), bodies of every shape
(deep and wide JSON, indexes as strings and floats and 2⁶³, script URLs, undecodable HS_ADMIN,
HS_VLIST and HS_PUBKEY values, SNMS items with HS_ types, console forms without CSRF), slowloris
connections. Meanwhile a bystander (another 127/8 address) resolves ``0.NA/88.100`` every 50 ms.

Prints answers by status, the bystander's worst latency and failures, the server's RSS before,
at its peak and after, the 5xx answers other than 501 (a route this node's role does not serve)
and 503, and whether the server's log holds a traceback; exits non-zero when the server died or
hung, answered such a 5xx, logged a traceback, stored anything (its log position moved), or the
bystander missed an answer. The
guessing back-off answers most of the credential noise with 429 after a few attempts: that is
the node working.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

IDR = [sys.executable, "-c", "from idr.cli import main; main()"]
SECRET = "fuzz-admin-secret"
ADMIN = "300:0.NA/88.100"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def basic(user: str, password: str) -> str:
    from urllib.parse import quote

    return "Basic " + base64.b64encode(f"{quote(user)}:{password}".encode()).decode()


# ----------------------------------------------------------------------------- generators


def hostile_values(r: random.Random) -> Any:
    pick = r.randrange(14)
    if pick == 0:
        return {
            "values": [{"index": r.choice(["1", 1.5, 2**63, -1, None, True]), "type": "URL", "data": "x"}]
        }
    if pick == 1:
        depth = r.choice([10, 1000, 1100, 5000])
        return json.loads("[" * min(depth, 900) + "]" * min(depth, 900))
    if pick == 2:
        url = r.choice(["javascript:alert(1)", " JaVaScRiPt:x", "data:text/html,<script>", "vbscript:x"])
        return [{"index": 1, "type": "URL", "data": url}]
    if pick == 3:
        adm = {
            "handle": r.choice(["noslash", "", "0.NA/88.100", "a" * 5000]),
            "index": r.choice([-5, 0, 300, "x"]),
        }
        return [{"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": adm}}]
    if pick == 4:
        return [
            {
                "index": 200,
                "type": "HS_VLIST",
                "data": {"format": "vlist", "value": [{"handle": "bad", "index": 1}] * r.randrange(1, 500)},
            }
        ]
    if pick == 5:
        return [
            {
                "index": 300,
                "type": "HS_PUBKEY",
                "data": {
                    "format": "base64",
                    "value": base64.b64encode(r.randbytes(r.randrange(0, 300))).decode(),
                },
            }
        ]
    if pick == 6:
        return [
            {"index": i, "type": "DESC", "data": "y" * r.randrange(0, 2000)}
            for i in range(1, r.randrange(2, 3000))
        ]
    if pick == 7:
        return {"values": None, "handle": "88.100/other"}
    if pick == 8:
        return [{"index": 300, "type": "HS_SECKEY", "data": ""}]
    if pick == 9:
        return [{"index": 1, "type": "HS_" + "X" * r.randrange(1, 2000), "data": "x"}]
    if pick == 10:
        return {"a": [{"b": {"c": [1] * 10000}}]}
    if pick == 11:
        return "\x00\x01" * r.randrange(1, 1000)
    if pick == 12:
        return [
            {
                "index": 1,
                "type": "URL",
                "data": {"format": r.choice(["hex", "base64", "site", "key"]), "value": "zz"},
            }
        ]
    return [{"index": 1, "type": "URL", "data": "https://example.org/" + "%0d%0a" * r.randrange(0, 50)}]


PATHS = [
    "/api/handles/{h}",
    "/api/handles?prefix=88.100&page={n}&pageSize={n}",
    "/api/handles/{h}?index={s}&type={s}",
    "/api/prefixes/{s}",
    "/api/sessions",
    "/api/sessions/this",
    "/api/federation/filings",
    "/api/federation/applications",
    "/api/federation/trace?handle={h}&depth={n}",
    "/api/federation/audit?since={n}&limit={n}",
    "/identity/token",
    "/identity/token/v1",
    "/identityv2/data",
    "/identityv2/data/detail?handle={h}",
    "/identityv2/data/batchCreate",
    "/console/login",
    "/console/chain?id={h}",
    "/console/resolve?id={h}",
    "/console/prefixes/apply",
    "/console/batch",
    "/{h}?urlappend={s}",
    "/{h}?noredirect",
    "/01/{n}/21/{s}",
]


def hostile_handle(r: random.Random) -> str:
    return r.choice(
        [
            "88.100/x",
            "0.NA/88.100",
            "88.100/" + "a" * r.randrange(1, 5000),
            "88.100/%00%0d%0a",
            "../../etc/passwd",
            "88.100/%ff%fe",
            "%2e%2e/%2e%2e",
            "88.100/" + "%" * r.randrange(1, 10),
            "0.NA/" + ".".join(["1"] * r.randrange(1, 300)),
        ]
    )


def hostile_text(r: random.Random) -> str:
    return r.choice(
        ["", "x", "%0d%0aSet-Cookie:%20a=b", "1" * r.randrange(1, 400), "-1", "%00", "javascript:1", "é" * 50]
    )


def hostile_headers(r: random.Random) -> dict[str, str]:
    h: dict[str, str] = {}
    pick = r.randrange(8)
    if pick == 0:
        h["Authorization"] = basic(ADMIN, r.choice(["wrong", "", "x" * 1000]))
    elif pick == 1:
        h["Authorization"] = r.choice(
            [
                'Handle sessionId="x", id="300%3A0.NA/88.100", type="HS_SECKEY", alg="PBKDF2-HMAC-SHA1", '
                'cnonce="AA==", signature="AA==", salt="AA==", iterations="1000000000", length="160"',
                "Handle " + "a=b," * 3000,
                "Handle sessionId=" + "x" * 10000,
                "Bearer " + "x" * 100,
                "Basic !!!",
            ]
        )
    elif pick == 2:
        h["Cookie"] = "__Host-idr_console=" + "x" * r.randrange(1, 4000)
    elif pick == 3:
        h["Content-Type"] = r.choice(
            [
                "application/json",
                "text/plain",
                "multipart/form-data; boundary=x",
                "application/json; charset=utf-16",
            ]
        )
    elif pick == 4:
        h["Accept"] = "application/json"
    elif pick == 5:
        h["X-Requested-With"] = "XMLHttpRequest"
    return h


async def one(
    session: aiohttp.ClientSession, base: str, r: random.Random, stats: Counter[str], bad: list[str]
) -> None:
    path = r.choice(PATHS).format(
        h=hostile_handle(r), n=r.choice([0, 1, -1, 10**12, 10**9]), s=hostile_text(r)
    )
    method = r.choice(["GET", "GET", "PUT", "POST", "DELETE", "HEAD", "OPTIONS", "PATCH"])
    headers = hostile_headers(r)
    body: Any = None
    if method in ("PUT", "POST", "DELETE") and r.random() < 0.8:
        body = hostile_values(r)
    kwargs: dict[str, Any] = {"headers": headers, "allow_redirects": False}
    if body is not None:
        kwargs["data"] = json.dumps(body).encode() if not isinstance(body, str) else body.encode()
        headers.setdefault("Content-Type", "application/json")
    try:
        async with session.request(method, base + path, **kwargs) as resp:
            await resp.read()
            stats[str(resp.status)] += 1
            if resp.status >= 500 and resp.status not in (501, 503):  # 501: a route this role lacks
                bad.append(f"{resp.status} {method} {path[:120]}")
    except (TimeoutError, aiohttp.ClientError, ValueError) as e:
        stats[type(e).__name__] += 1


async def slowloris(port: int, seconds: float) -> int:
    """Connections that trickle header bytes; returns how many the server closed."""
    closed = 0

    async def conn() -> None:
        nonlocal closed
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                writer.write(b"X")
                await writer.drain()
                try:
                    if await asyncio.wait_for(reader.read(100), 1.0) == b"":
                        closed += 1
                        return
                except TimeoutError:
                    pass
            writer.close()
        except OSError:
            closed += 1

    await asyncio.gather(*(conn() for _ in range(50)))
    return closed


async def bystander(
    base: str, ctx: ssl.SSLContext, stop: asyncio.Event, lat: list[float], misses: list[str]
) -> None:
    conn = aiohttp.TCPConnector(ssl=ctx, local_addr=("127.0.0.9", 0))
    async with aiohttp.ClientSession(connector=conn) as s:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                async with s.get(
                    base + "/api/handles/0.NA/88.100", timeout=aiohttp.ClientTimeout(total=5)
                ) as resp:
                    await resp.read()
                    if resp.status != 200:
                        misses.append(str(resp.status))
            except (TimeoutError, aiohttp.ClientError) as e:
                misses.append(type(e).__name__)
            lat.append(time.perf_counter() - t0)
            await asyncio.sleep(0.05)


async def fuzz(
    args: argparse.Namespace, https: str, http: str, ctx: ssl.SSLContext, pid: int
) -> dict[str, Any]:
    r = random.Random(args.seed)
    stats: Counter[str] = Counter()
    bad: list[str] = []
    lat: list[float] = []
    misses: list[str] = []
    peak = rss_kb(pid)
    stop = asyncio.Event()
    watcher = asyncio.create_task(bystander(https, ctx, stop, lat, misses))
    sem = asyncio.Semaphore(args.concurrency)
    conn = aiohttp.TCPConnector(ssl=ctx, limit=0, local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def guarded(i: int) -> None:
            nonlocal peak
            async with sem:
                await one(session, r.choice([https, http]), r, stats, bad)
            if i % 200 == 0:
                peak = max(peak, rss_kb(pid))

        t0 = time.perf_counter()
        slow = asyncio.create_task(
            slowloris(int(http.rsplit(":", 1)[1]), 90.0 if args.requests > 5000 else 5.0)
        )
        await asyncio.gather(*(guarded(i) for i in range(args.requests)))
        elapsed = time.perf_counter() - t0
        slow.cancel()
    stop.set()
    await watcher
    return {"stats": stats, "bad": bad, "lat": lat, "misses": misses, "peak": peak, "elapsed": elapsed}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="idr-fuzz-http-"))
    data = tmp / "node"
    https, http = free_port(), free_port()
    subprocess.run(
        [*IDR, "init", "--data", str(data), "--prefix", "88.100", "--admin-secret", SECRET,
         "--https", f"127.0.0.1:{https}", "--http", f"127.0.0.1:{http}"],
        check=True, capture_output=True,
    )  # fmt: skip
    from idr.store.sqlite import SqliteStore

    store = SqliteStore(data / "idr.sqlite3")
    seq_before = store.last_seq()
    store.close()
    log = (tmp / "serve.log").open("wb")
    proc = subprocess.Popen([*IDR, "serve", "--data", str(data)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", http), 1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    print("idr serve did not start:", (tmp / "serve.log").read_text()[-2000:])
                    return 2
                time.sleep(0.1)
        time.sleep(0.5)
        ctx = ssl.create_default_context(cafile=str(data / "tls" / "cert.pem"))  # made by the first start
        before = rss_kb(proc.pid)
        out = asyncio.run(fuzz(args, f"https://127.0.0.1:{https}", f"http://127.0.0.1:{http}", ctx, proc.pid))
        time.sleep(1.0)
        after = rss_kb(proc.pid)
        alive = proc.poll() is None
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    store = SqliteStore(data / "idr.sqlite3")
    stored = store.last_seq() != seq_before
    store.close()
    text = (tmp / "serve.log").read_text(errors="replace")
    traceback = "Traceback" in text
    lat = sorted(out["lat"]) or [0.0]
    print(f"requests: {args.requests} in {out['elapsed']:.1f} s ({args.requests / out['elapsed']:.0f}/s)")
    print("answers:", ", ".join(f"{k}: {v}" for k, v in sorted(out["stats"].items())))
    print(f"bystander: {len(lat)} resolutions, p50 {lat[len(lat) // 2] * 1000:.1f} ms, "
          f"max {lat[-1] * 1000:.1f} ms, misses {len(out['misses'])}")  # fmt: skip
    mib = {k: round(v / 1024) for k, v in (("before", before), ("peak", out["peak"]), ("after", after))}
    print(f"server RSS (MiB): before {mib['before']}, peak {mib['peak']}, after {mib['after']}")
    print(f"5xx other than 501, 503: {len(out['bad'])}  {out['bad'][:5]}")
    print(f"traceback in the server's log: {traceback}; server alive: {alive}; anything stored: {stored}")
    if traceback:
        i = text.index("Traceback")
        print(text[max(0, i - 500) : i + 2500])
    ok = alive and not traceback and not out["bad"] and not out["misses"] and not stored
    if ok:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"kept for inspection: {tmp}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
