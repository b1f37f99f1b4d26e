"""Native Handle resolution throughput: idr vs a minimal uvloop UDP responder and the reference.

    python bench/native_resolve.py [--handles 1000000] [--seconds 10] [--workers 1]

Builds ``hdlperf`` (../shared/tools/hdlperf.c) into bench/, creates (once, cached under
/tmp/idr-bench-N) a node with N handles ``88.100/bench-i`` holding the three values of
../shared/vectors/handle, starts the server in its own process pinned to core 0 (``taskset``),
waits for its answer cache to be warm, and drives it with hdlperf pinned to the last core: 16
requests in flight, 10% for missing handles. Then the same over TCP with persistent (KA)
connections from a small multiprocess uvloop pipelined client, and, in the same run, a minimal
uvloop UDP responder (a fixed pre-encoded 233-byte answer, RequestId patched) under the same
hdlperf settings. Prints one line per figure and idr's rate against that baseline and against the
reference server's 46,000/s. ``--workers N``: N server processes on one port (SO_REUSEPORT),
each with its own warm cache, driven by 2N hdlperf sockets (the kernel spreads by 4-tuple);
the extra workers follow the store's log as ``idr serve --workers`` does. ``--profile PATH``:
py-spy samples worker 0 during the UDP run (200 Hz, native frames; from the load core, so that
run's figures are depressed) and the top frames are printed. ``--before SRC [--rounds N]``: idr
from another checkout's source tree against this one, UDP runs alternating, the after/before
ratio (how a change to the hot path is measured, e.g. ``--before /path/to/main/src``).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REFERENCE_QPS = 46_000  # Handle.Net 9.2.0 on one core of this machine (issue 3)
HERE = Path(__file__).resolve().parent
# ../shared/tools/hdlperf.c beside the checkout (a git worktree elsewhere: IDR_HDLPERF_SRC=path)
HDLPERF_SRC = Path(os.environ.get("IDR_HDLPERF_SRC", HERE.parents[1] / "shared" / "tools" / "hdlperf.c"))
HDLPERF = HERE / "hdlperf"
IN_FLIGHT = 16
MISS_PERCENT = 10
NCPU = os.cpu_count() or 1
STARTUP_TIMEOUT = 900.0


# ---------------------------------------------------------------------------- data set


def build_hdlperf() -> None:
    """Build hdlperf from a copy with one fix: it measures latency and the 1 s resend sweep
    against ``t``, taken *before* the receive loop that re-sends, so an answer arriving in the
    same batch as its request (common on loopback) underflows to "100 ms" and a slot re-sent in
    that batch counts as a timeout (and its answer as stray). p99 is read off after the fix."""
    src = HDLPERF_SRC.read_text()
    fixed = src.replace("uint64_t lat = t - sent_at[slot];", "uint64_t lat = now_us() - sent_at[slot];")
    fixed = fixed.replace("if (t - sent_at[s] > 1000000)", "if (t > sent_at[s] && t - sent_at[s] > 1000000)")
    assert fixed.count("now_us() - sent_at[slot]") == 1 and "t > sent_at[s]" in fixed, "hdlperf.c changed"
    tmp = Path(f"/tmp/hdlperf-{os.getpid()}.c")
    tmp.write_text(fixed)
    try:
        subprocess.run(["cc", "-O2", "-o", str(HDLPERF), str(tmp)], check=True)
    finally:
        tmp.unlink()


def bench_record(n: int) -> object:
    from idr.codec.values import encode_admin
    from idr.model.value import AdminRecord, HandleRecord, HandleValue

    admin = _ADMIN.get("v")
    if admin is None:
        admin = _ADMIN["v"] = encode_admin(AdminRecord("0.NA/88.100", 300, 0x0FFF))
    return HandleRecord(
        f"88.100/bench-{n}",
        (
            HandleValue(1, "URL", f"https://example.org/objects/{n}".encode()),
            HandleValue(2, "EMAIL", f"owner-{n}@example.org".encode()),
            HandleValue(100, "HS_ADMIN", admin),
        ),
    )


_ADMIN: dict[str, bytes] = {}


def make_data(handles: int) -> Path:
    """A SQLite node home to 88.100 with ``handles`` bench handles (reused across runs)."""
    from idr.codec.values import encode_admin
    from idr.core.service import NodeService
    from idr.model.value import AdminPermission, AdminRecord, HandleValue
    from idr.store.sqlite import SqliteStore

    d = Path(f"/tmp/idr-bench-{handles}")
    if (d / "ready").exists():
        return d
    d.mkdir(parents=True, exist_ok=True)
    for f in d.glob("idr.sqlite3*"):
        f.unlink()
    t0 = time.monotonic()
    svc = NodeService(SqliteStore(d / "idr.sqlite3"), admins=["300:0.NA/88.100"])
    try:
        svc.bootstrap(
            "88.100",
            [
                HandleValue(
                    100, "HS_ADMIN", encode_admin(AdminRecord("0.NA/88.100", 300, AdminPermission.ALL))
                )
            ],
        )
        batch = 50_000
        for lo in range(0, handles, batch):
            svc.store.bulk_load([bench_record(i) for i in range(lo, min(handles, lo + batch))])  # type: ignore[misc]
    finally:
        svc.close()
    (d / "ready").write_text(str(handles))
    print(f"data      {handles} handles loaded in {time.monotonic() - t0:.1f} s ({d})", flush=True)
    return d


# ---------------------------------------------------------------------------- server processes


def rss_mib() -> int:
    for ln in Path("/proc/self/status").read_text().splitlines():
        if ln.startswith("VmRSS:"):
            return int(ln.split()[1]) // 1024
    return 0


async def _serve(data: Path, port: int, worker: int, workers: int, cache: int) -> None:
    from idr.core.service import NodeService
    from idr.server.native import FOLLOW_INTERVAL, WARM_SHAPES, NativeOptions, start_server
    from idr.store.sqlite import SqliteStore

    svc = NodeService(SqliteStore(data / "idr.sqlite3"), admins=["300:0.NA/88.100"])
    # As ``idr serve --workers``: worker 0 has TCP, the others UDP only and follow the log.
    # Warmed at start: the one shape hdlperf and the TCP client send (plain 2.1, REC|CA|PO; KA is
    # not part of TCP's key); any other would be learned on first use.
    opts = NativeOptions(
        cache_entries=cache,
        reuse_port=workers > 1,
        tcp=worker == 0,
        warm=True,
        warm_shapes=(WARM_SHAPES[1],),
        follow=FOLLOW_INTERVAL if worker else 0.0,
    )
    rss0 = rss_mib()
    srv = await start_server(svc, "127.0.0.1", port, opts)
    assert srv.warm_task is not None
    t0 = time.monotonic()
    stored = await srv.warm_task
    print(
        f"READY worker={worker} pid={os.getpid()} answers={stored} complete={srv.cache.complete} "
        f"warm_s={time.monotonic() - t0:.1f} warm_rss_mib=+{rss_mib() - rss0} rss_mib={rss_mib()}",
        flush=True,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    print(
        f"STATS worker={worker} udp_hits={srv.udp.hits} slow={srv.udp.slow} "
        f"negative={srv.cache.negative_hits} cached={len(srv.cache)}",
        flush=True,
    )
    await srv.close()
    svc.close()


async def _echo(port: int) -> None:
    """The baseline: a minimal uvloop UDP responder with a fixed pre-encoded 233-byte answer."""
    answer = (HERE.parent / "tests" / "vectors" / "handle" / "udp_resolve_bench-0_response.bin").read_bytes()
    assert len(answer) == 233

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.sendto = transport.sendto  # type: ignore[attr-defined]

        def datagram_received(self, data: bytes, addr: object) -> None:
            out = bytearray(answer)
            out[8:12] = data[8:12]
            self.sendto(out, addr)

    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", port))
    print("READY echo", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
        for _ in range(50):
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            try:
                t.bind(("127.0.0.1", port))
                return int(port)
            except OSError:
                u.close()
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raise RuntimeError("no free port")


def spawn(args: list[str], core: int, src: Path | None = None) -> subprocess.Popen[str]:
    """This script in a process pinned to ``core``; ``src``: import idr from that source tree."""
    cmd = ["taskset", "-c", str(core), sys.executable, str(Path(__file__).resolve()), *args]
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True, env=env)


def wait_ready(proc: subprocess.Popen[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"server exited with {proc.wait(5)}")
        if line.startswith("READY"):
            return line.strip()
    raise RuntimeError("server not ready in time")


def stop(procs: list[subprocess.Popen[str]]) -> list[str]:
    out = []
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            rest, _ = p.communicate(timeout=10)
            out += [ln for ln in rest.splitlines() if ln.startswith("STATS")]
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
    return out


# ---------------------------------------------------------------------------- load


def hdlperf(port: int, seconds: int, handles: int, sockets: int) -> dict[str, object]:
    """``sockets`` hdlperf processes on the last core sharing IN_FLIGHT; summed rate, worst tail."""
    each = max(1, IN_FLIGHT // sockets)
    cmd = [
        "taskset",
        "-c",
        str(NCPU - 1),
        str(HDLPERF),
        "-p",
        str(port),
        "-l",
        str(seconds),
        "-c",
        str(each),
        "-n",
        str(handles),
        "-m",
        str(MISS_PERCENT),
    ]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(sockets)]
    qps, p50, p99, timeouts = 0.0, 0, 0, 0
    codes: dict[str, int] = {}
    for p in procs:
        out, _ = p.communicate(timeout=seconds + 30)
        m = re.search(r"qps=(\d+).*timeouts=(\d+).*rc\{([^}]*)\} p50_us=(\d+) p99_us=(\d+)", out)
        if m is None:
            raise RuntimeError(f"hdlperf: {out!r}")
        qps += float(m.group(1))
        timeouts += int(m.group(2))
        for kv in filter(None, m.group(3).split(",")):
            k, v = kv.split("=")
            codes[k] = codes.get(k, 0) + int(v)
        p50, p99 = max(p50, int(m.group(4))), max(p99, int(m.group(5)))
    return {"qps": qps, "p50": p50, "p99": p99, "codes": codes, "timeouts": timeouts}


def _tcp_requests(handles: int, count: int, seed: int) -> list[bytes]:
    """Plain 2.1 resolution requests with KA set (persistent connections), 10% misses."""
    rnd = random.Random(seed)
    exp = (int(time.time()) + 43200).to_bytes(4, "big")
    out = []
    for _ in range(count):
        name = f"88.100/bench-{rnd.randrange(handles)}" + (
            "-missing" if rnd.randrange(100) < MISS_PERCENT else ""
        )
        h = name.encode()
        n = len(h)
        out.append(
            b"\x02\x01\x00\x00"
            + bytes(12)
            + (40 + n).to_bytes(4, "big")
            + (1).to_bytes(4, "big")
            + bytes(4)
            + b"\x1b\x00\x00\x00\xff\xff\x00\x00"
            + exp
            + (12 + n).to_bytes(4, "big")
            + n.to_bytes(4, "big")
            + h
            + bytes(12)
        )
    return out


def _tcp_client(
    port: int,
    seconds: float,
    conns: int,
    depth: int,
    handles: int,
    seed: int,
    result: mp.Queue,  # type: ignore[type-arg]
) -> None:
    import uvloop

    async def main() -> None:
        pool = _tcp_requests(handles, 20_000, seed)
        lat: list[int] = []
        codes: dict[int, int] = {}
        loop = asyncio.get_running_loop()
        end = time.monotonic() + seconds
        done = loop.create_future()
        live = [conns]

        class Conn(asyncio.Protocol):
            def __init__(self) -> None:
                self.buf = b""
                self.sent: dict[int, int] = {}
                self.rid = 1
                self.i = seed

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.t = transport
                for _ in range(depth):
                    self.send()

            def send(self) -> None:
                req = bytearray(pool[self.i % len(pool)])
                self.i += 7
                self.rid += 1
                req[8:12] = self.rid.to_bytes(4, "big")
                self.sent[self.rid] = time.perf_counter_ns()
                self.t.write(req)  # type: ignore[attr-defined]

            def data_received(self, data: bytes) -> None:
                buf = self.buf + data
                now = time.perf_counter_ns()
                pos = 0
                while len(buf) - pos >= 20:
                    end_ = pos + 20 + int.from_bytes(buf[pos + 16 : pos + 20], "big")
                    if end_ > len(buf):
                        break
                    rid = int.from_bytes(buf[pos + 8 : pos + 12], "big")
                    rc = int.from_bytes(buf[pos + 24 : pos + 28], "big")
                    codes[rc] = codes.get(rc, 0) + 1
                    lat.append(now - self.sent.pop(rid, now))
                    pos = end_
                    if time.monotonic() < end:
                        self.send()
                self.buf = buf[pos:]
                if not self.sent:
                    self.t.close()

            def connection_lost(self, exc: Exception | None) -> None:
                live[0] -= 1
                if live[0] == 0 and not done.done():
                    done.set_result(None)

        t0 = time.monotonic()
        for _ in range(conns):
            await loop.create_connection(Conn, "127.0.0.1", port)
        await asyncio.wait_for(done, seconds + 20)
        result.put((len(lat) / (time.monotonic() - t0), sorted(lat)[:: max(1, len(lat) // 10_000)], codes))

    uvloop.run(main())


def tcp_load(port: int, seconds: int, handles: int, procs: int = 2) -> dict[str, object]:
    """``procs`` client processes on the last core, 2 connections each, IN_FLIGHT in total."""
    q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    conns = 2
    depth = max(1, IN_FLIGHT // (procs * conns))
    ps = [
        mp.Process(target=_tcp_client, args=(port, seconds, conns, depth, handles, i, q))
        for i in range(procs)
    ]
    for p in ps:
        p.start()
        os.sched_setaffinity(p.pid or 0, {NCPU - 1})
    got = [q.get(timeout=seconds + 60) for _ in ps]
    for p in ps:
        p.join(10)
    lat = sorted(x for _, sample, _ in got for x in sample)
    codes: dict[str, int] = {}
    for _, _, c in got:
        for k, v in c.items():
            codes[str(k)] = codes.get(str(k), 0) + v
    return {
        "qps": sum(g[0] for g in got),
        "p50": lat[len(lat) // 2] // 1000 if lat else 0,
        "p99": lat[len(lat) * 99 // 100] // 1000 if lat else 0,
        "codes": codes,
        "timeouts": 0,
    }


def profile_summary(path: Path, top: int = 12) -> list[str]:
    """Top frames of a py-spy raw profile: by self time (the leaf) and inclusive."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for ln in path.read_text().splitlines():
        stack, _, n = ln.rpartition(" ")
        if not n.isdigit():
            continue
        k = int(n)
        total += k
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + k
        for f in set(frames):
            incl[f] = incl.get(f, 0) + k
    out = [f"profile   {total} samples (py-spy, worker 0, UDP run)"]
    for title, d in (("self", own), ("inclusive", incl)):
        for f, k in sorted(d.items(), key=lambda kv: -kv[1])[:top]:
            out.append(f"  {title:<9} {k / max(1, total):6.1%}  {f}")
    return out


def compare(data: Path, before: Path, seconds: int, handles: int, rounds: int) -> None:
    """idr from this checkout ("after") against idr from ``before`` (another checkout's source
    tree, e.g. the revision before a change): both servers warm on core 0, UDP runs alternating
    before, after, before, after…, so both see the same machine; the after/before ratio of each
    round and of the medians is printed."""
    import statistics

    here = Path(__file__).resolve().parents[1] / "src"
    ports = {"before": free_port(), "after": free_port()}
    servers = {
        name: spawn(
            ["--serve", str(data), "--port", str(ports[name]), "--handles", str(handles)],
            0,
            before if name == "before" else here,
        )
        for name in ("before", "after")
    }
    got: dict[str, list[float]] = {"before": [], "after": []}
    try:
        for name, proc in servers.items():
            print(f"server    {name}: {wait_ready(proc, STARTUP_TIMEOUT)}", flush=True)
        for i in range(rounds):
            for name in ("before", "after"):
                r = hdlperf(ports[name], seconds, handles, 1)
                got[name].append(float(r["qps"]))  # type: ignore[arg-type]
                print(line(f"{name} {i + 1}", r), flush=True)
            print(f"round {i + 1}   after / before = {got['after'][-1] / got['before'][-1]:.3f}", flush=True)
    finally:
        for st in stop(list(servers.values())):
            print(f"server    {st}")
    b, a = statistics.median(got["before"]), statistics.median(got["after"])
    print(
        f"ratio     after / before = {a / b:.3f} (medians {a:,.0f} / {b:,.0f} req/s over {rounds} rounds; "
        f"before = {before})",
        flush=True,
    )


def line(name: str, r: dict[str, object]) -> str:
    codes = r["codes"]
    assert isinstance(codes, dict)
    total = sum(codes.values()) or 1
    nf = codes.get("100", 0) / total
    other = {k: v for k, v in codes.items() if k not in ("1", "100")}
    return (
        f"{name:<10} {r['qps']:>9,.0f} req/s  p50 {r['p50']} us  p99 {r['p99']} us  "
        f"not-found {nf:.1%}  timeouts {r['timeouts']}" + (f"  other codes {other}" if other else "")
    )


# ---------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--handles", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--profile", type=Path, help="py-spy worker 0 during the UDP run (raw stacks here)")
    ap.add_argument(
        "--before",
        type=Path,
        help="SRC dir of another checkout: UDP runs alternate between its idr and this one (after/before)",
    )
    ap.add_argument("--rounds", type=int, default=3, help="with --before: before/after pairs")
    ap.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve is not None:
        import uvloop

        uvloop.run(_serve(a.serve, a.port, a.worker, a.workers, 3 * (a.handles + 1000)))
        return 0
    if a.echo:
        import uvloop

        uvloop.run(_echo(a.port))
        return 0

    build_hdlperf()
    data = make_data(a.handles)
    print(
        f"setup     {a.handles} handles, {a.seconds} s per run, {IN_FLIGHT} in flight, "
        f"{MISS_PERCENT}% misses, "
        f"{a.workers} worker(s), {NCPU} cores",
        flush=True,
    )
    if a.before is not None:
        compare(data, a.before.resolve(), a.seconds, a.handles, a.rounds)
        return 0

    def baseline(when: str) -> float:
        """Same hdlperf settings, responder pinned like the server. Run before and after idr:
        on a shared machine the load moves during the minute idr spends warming."""
        port = free_port()
        echo = spawn(["--echo", "--port", str(port)], 0)
        try:
            wait_ready(echo, 30)
            base = hdlperf(port, a.seconds, a.handles, 1)
        finally:
            stop([echo])
        base["codes"] = {"1": 1}
        print(
            line("baseline", base) + f"   (minimal uvloop UDP responder, fixed 233-byte answer; {when})",
            flush=True,
        )
        return float(base["qps"])  # type: ignore[arg-type]

    bases = [baseline("before idr")]

    port = free_port()
    servers = [
        spawn(
            [
                "--serve",
                str(data),
                "--port",
                str(port),
                "--worker",
                str(w),
                "--workers",
                str(a.workers),
                "--handles",
                str(a.handles),
            ],
            w % NCPU,
        )
        for w in range(a.workers)
    ]
    stats: list[str] = []
    prof: subprocess.Popen[bytes] | None = None
    try:
        ready = [wait_ready(s, STARTUP_TIMEOUT) for s in servers]
        for r in ready:
            print(f"server    {r}", flush=True)
        if a.profile is not None:
            pid = re.search(r"pid=(\d+)", ready[0])
            assert pid is not None
            prof = subprocess.Popen(
                [
                    "taskset",
                    "-c",
                    str(NCPU - 1),
                    "py-spy",
                    "record",
                    "-r",
                    "200",
                    "-d",
                    str(a.seconds),
                    "--native",
                    "-f",
                    "raw",
                    "-o",
                    str(a.profile),
                    "--pid",
                    pid.group(1),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        udp = hdlperf(port, a.seconds, a.handles, 1 if a.workers == 1 else 2 * a.workers)
        print(line("idr udp", udp), flush=True)
        if prof is not None:
            prof.wait(60)
            for ln in profile_summary(a.profile):
                print(ln, flush=True)
        tcp = tcp_load(port, a.seconds, a.handles)
        print(line("idr tcp", tcp) + "   (persistent KA connections, Python pipelined client)", flush=True)
    finally:
        if prof is not None and prof.poll() is None:
            prof.kill()
            prof.wait(5)
        stats = stop(servers)
    for st in stats:
        print(f"server    {st}")
    bases.append(baseline("after idr"))
    q = float(udp["qps"])  # type: ignore[arg-type]
    print(
        f"ratio     idr udp / baseline = {q / (sum(bases) / 2):.2f} (mean of both; "
        f"{q / max(bases):.2f}-{q / min(bases):.2f})   idr udp / reference 46,000 = {q / REFERENCE_QPS:.2f}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
