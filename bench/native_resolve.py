"""Native Handle resolution throughput: idr warm and cold against a minimal uvloop responder.

    python bench/native_resolve.py [--handles 1000000] [--seconds 10] [--workers 1] [--cold-only]

Builds ``hdlperf`` from ../shared/tools/hdlperf.c (as it is: its latency-underflow bug is fixed
there) into bench/, creates (once, cached under /tmp/idr-bench-native-N) a node made by
``idr init`` holding N handles ``88.100/bench-i`` with three values each, and drives servers
pinned to core 0 (``taskset``) with hdlperf pinned to the last core: 16 requests in flight, 10%
for missing handles. In one run:

* **baseline** — a minimal uvloop UDP responder: the reference server's 233-byte answer for
  bench-0, or its HANDLE_NOT_FOUND answer when the name is one of hdlperf's misses (so 10% misses
  cost both alike), RequestId patched; measured before and after idr, idr quoted against the mean;
* **idr warm** — a node whose answer cache was warmed (``NativeOptions(warm=True)``) for the one
  request shape hdlperf sends; then the same over TCP (persistent KA connections, a small
  multiprocess uvloop client);
* **idr cold** — ``idr serve --warm`` and plain ``idr serve`` started on the same data: the rate
  of each second over the first ``--cold-seconds`` after its UDP port first answers, then its
  steady rate once its cache stopped growing, next to the warm rate above.

The cold ``idr serve`` starts are configured like the warm server they are compared with, which
writes no access log: the node's ``idr.toml`` turns it off (``[logging] access = ""``);
``--access-log`` keeps ``idr serve``'s default (a JSON line per answer, its CPU measured by
bench/access_log_cost.py), so the cold ratios then include that cost as well.

``--drop-cache`` takes the store file out of the page cache before each cold start
(``POSIX_FADV_DONTNEED``), as a first start after a reboot finds it.

Every figure comes with the server's CPU time per answer (``/proc``), which a noisy neighbour on
the shared machine disturbs far less than requests/s. The last lines are a summary block to
paste into the README. ``--workers N``: N server processes on one port (SO_REUSEPORT), driven by
2N hdlperf sockets. ``--profile PATH``: py-spy samples worker 0 during the warm UDP run (200 Hz,
native frames; from the load core, so that run's figures are depressed), top frames printed.
``--warm-rounds N``: the warm UDP run N times, alternating with baseline runs, medians
quoted (how the warm ratio is measured on a shared machine). ``--before SRC [--rounds N]``:
idr from another checkout's source tree against this one, both
warm, UDP runs alternating, the after/before ratio of rates and of CPU per answer (how a change to
the hot path is measured, e.g. ``--before /work/main/src``); with ``--cold`` also plain ``idr serve``
cold starts of both, alternating: each second's rate against the same source's warm median, and
the CPU per cold answer.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Handle.Net 9.2 on this kind of machine with the fixed hdlperf (100,000 handles, 16 in flight,
# 10% misses, cache warmed 5 s): issue 14. Not measured here (its code is not ours to run).
REFERENCE_QPS = (70_000, 82_000)
# The seeds' 44.9 billion resolutions a year at a 10x peak (issue 14 goal 6), in answers/s.
PEAK_QPS = 44.9e9 / (365 * 86400) * 10
HERE = Path(__file__).resolve().parent
# ../shared/tools/hdlperf.c beside the clone (a worktree one level deeper finds it one level
# further up; elsewhere: IDR_HDLPERF_SRC=path)
_SHARED = [p / "shared" / "tools" for p in HERE.parents[1:3]]
HDLPERF_SRC = Path(
    os.environ.get("IDR_HDLPERF_SRC")
    or next((d / "hdlperf.c" for d in _SHARED if d.is_dir()), _SHARED[0] / "hdlperf.c")
)
HDLPERF = HERE / "hdlperf"
IN_FLIGHT = 16
MISS_PERCENT = 10
NCPU = os.cpu_count() or 1
STARTUP_TIMEOUT = 900.0


# ---------------------------------------------------------------------------- data set


def build_hdlperf() -> None:
    """Build hdlperf from the shared source, unchanged (rebuilt when the source is newer)."""
    if HDLPERF.exists() and HDLPERF.stat().st_mtime >= HDLPERF_SRC.stat().st_mtime:
        return
    subprocess.run(["cc", "-O2", "-o", str(HDLPERF), str(HDLPERF_SRC)], check=True)


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


IDR = [sys.executable, "-c", "from idr.cli import main; main()"]


def make_data(handles: int) -> Path:
    """A node made by ``idr init``, home to 88.100, with ``handles`` bench handles loaded into
    its store offline (reused across runs: rebuilding 1M takes a minute or two)."""
    from idr.store.sqlite import SqliteStore

    d = Path(f"/tmp/idr-bench-native-{handles}")
    if (d / "ready").exists():
        return d
    if d.exists():
        shutil.rmtree(d)
    t0 = time.monotonic()
    secret = "bench-" + secrets.token_urlsafe(16)
    subprocess.run(
        [*IDR, "init", "--data", str(d), "--prefix", "88.100", "--admin-secret", secret, "--https", ""],
        check=True,
        capture_output=True,
    )
    store = SqliteStore(d / "idr.sqlite3")
    try:
        batch = 50_000
        for lo in range(0, handles, batch):
            store.bulk_load([bench_record(i) for i in range(lo, min(handles, lo + batch))])  # type: ignore[misc]
    finally:
        store.close()
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
    # As idr serve: the collector kept off the caches (an idr from before that option: --before).
    gc_option = {"freeze_gc": True} if "freeze_gc" in NativeOptions.__dataclass_fields__ else {}
    # Every answer in the map before the run, as it always was: the warm-up helper would leave
    # them on its shelves until first asked (server/warmhelper.py), which is not "warm".
    if "warm_helper" in NativeOptions.__dataclass_fields__:
        gc_option["warm_helper"] = False
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
        **gc_option,
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
    """The baseline: a minimal uvloop UDP responder answering the reference server's bytes — its
    answer for bench-0, or its HANDLE_NOT_FOUND answer for hdlperf's misses (names ending in
    ``-missing``) — with the RequestId patched."""
    vectors = HERE.parent / "tests" / "vectors" / "handle"
    answer = (vectors / "udp_resolve_bench-0_response.bin").read_bytes()
    missing = (vectors / "udp_resolve_not-found_response.bin").read_bytes()
    assert len(answer) == 233

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.sendto = transport.sendto  # type: ignore[attr-defined]

        def datagram_received(self, data: bytes, addr: object) -> None:
            out = bytearray(missing if data.endswith(b"-missing", 0, -12) else answer)
            out[8:12] = data[8:12]
            self.sendto(out, addr)

    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", port))
    print(f"READY echo pid={os.getpid()}", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pid_of(ready: str) -> int:
    m = re.search(r"pid=(\d+)", ready)
    assert m is not None, ready
    return int(m.group(1))


ACCESS_LOG = False  # --access-log: cold idr serve starts keep the default access log
DROP_CACHE = False  # --drop-cache: each cold start finds its store file out of the page cache


def drop_cache(data: Path) -> None:
    """Take the node's store file out of the page cache (``POSIX_FADV_DONTNEED``; its pages are
    clean once no server runs on it), as after a reboot: a cold start then reads it from disk."""
    for f in (data / "idr.sqlite3", data / "idr.sqlite3-wal"):
        if f.exists():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
                for _ in range(3):  # pages still on their way to the LRU lists need another ask
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def load_cache(data: Path) -> int:
    """Read the node's store files (and an answer snapshot) through once, so a cold start finds
    them in the page cache, as a node that was just written or recently run does: this machine
    pages out file pages nobody touched for ~60 s (DAMON's ``pageout`` on unmapped pages), so a
    store left idle between runs was otherwise half on disk — a different start (``--drop-cache``
    measures that one on purpose). Returns the bytes read."""
    read = 0
    for f in (data / "idr.sqlite3", data / "idr.sqlite3-wal", *data.glob(SNAPSHOTS)):
        if f.exists():
            with f.open("rb", buffering=0) as fh:
                while chunk := fh.read(8 << 20):
                    read += len(chunk)
    return read


def set_access_log(toml: Path, on: bool) -> None:
    """Turn a node's access log on (``idr serve``'s default file) or off in its ``idr.toml``,
    in its ``[logging]`` table if it has one."""
    text = toml.read_text()
    value = 'access = "logs/access.log"' if on else 'access = ""'
    head = text.find("\n[logging]\n")
    if head < 0:
        if not on:
            toml.write_text(text + "\n[logging]\n" + value + "\n")
        return
    end = text.find("\n[", head + 1)
    end = len(text) if end < 0 else end
    table = re.sub(r"(?m)^access = .*$", value, text[head:end], count=1)
    if table == text[head:end] and value not in table:
        table = table.replace("\n[logging]\n", "\n[logging]\n" + value + "\n", 1)
    toml.write_text(text[:head] + table + text[end:])


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


def hdlperf(
    port: int, seconds: int, handles: int, sockets: int, pids: list[int] | None = None
) -> dict[str, Any]:
    """``sockets`` hdlperf processes on the last core sharing IN_FLIGHT; summed rate, worst tail,
    and the CPU time ``pids`` (the servers) spent per answer meanwhile."""
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
    cpu0 = sum(cpu_seconds(p) for p in pids or ())
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(sockets)]
    qps, p50, p99, timeouts, answered = 0.0, 0, 0, 0, 0
    codes: dict[str, int] = {}
    for p in procs:
        out, _ = p.communicate(timeout=seconds + 30)
        m = re.search(
            r"qps=(\d+).*answered=(\d+).*timeouts=(\d+).*rc\{([^}]*)\} p50_us=(\d+) p99_us=(\d+)", out
        )
        if m is None:
            raise RuntimeError(f"hdlperf: {out!r}")
        qps += float(m.group(1))
        answered += int(m.group(2))
        timeouts += int(m.group(3))
        for kv in filter(None, m.group(4).split(",")):
            k, v = kv.split("=")
            codes[k] = codes.get(k, 0) + int(v)
        p50, p99 = max(p50, int(m.group(5))), max(p99, int(m.group(6)))
    cpu = sum(cpu_seconds(p) for p in pids or ()) - cpu0
    return {
        "qps": qps,
        "p50": p50,
        "p99": p99,
        "codes": codes,
        "timeouts": timeouts,
        "cpu_us": cpu / max(1, answered) * 1e6 if pids else float("nan"),
    }


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


def tcp_load(port: int, seconds: int, handles: int, pids: list[int], procs: int = 2) -> dict[str, Any]:
    """``procs`` client processes on the last core, 2 connections each, IN_FLIGHT in total."""
    cpu0 = sum(cpu_seconds(p) for p in pids)
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
    answered = sum(codes.values())
    return {
        "cpu_us": (sum(cpu_seconds(p) for p in pids) - cpu0) / max(1, answered) * 1e6,
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


def compare(data: Path, before: Path, seconds: int, handles: int, rounds: int, cold_seconds: int = 0) -> None:
    """idr from this checkout ("after") against idr from ``before`` (another checkout's source
    tree, e.g. the revision before a change): both servers warm on core 0, UDP runs alternating
    before, after, before, after…, so both see the same machine; the after/before ratio of each
    round and of the medians is printed, for the rate and for the CPU time per answer."""
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
    cpu: dict[str, list[float]] = {"before": [], "after": []}
    try:
        pids = {}
        for name, proc in servers.items():
            ready = wait_ready(proc, STARTUP_TIMEOUT)
            pids[name] = pid_of(ready)
            print(f"server    {name}: {ready}", flush=True)
        for i in range(rounds):
            for name in ("before", "after"):
                r = hdlperf(ports[name], seconds, handles, 1, [pids[name]])
                got[name].append(float(r["qps"]))
                cpu[name].append(float(r["cpu_us"]))
                print(line(f"{name} {i + 1}", r), flush=True)
            print(f"round {i + 1}   after / before = {got['after'][-1] / got['before'][-1]:.3f}", flush=True)
    finally:
        for st in stop(list(servers.values())):
            print(f"server    {st}")
    b, a = statistics.median(got["before"]), statistics.median(got["after"])
    cb, ca = statistics.median(cpu["before"]), statistics.median(cpu["after"])
    print(
        f"ratio     after / before = {a / b:.3f} (medians {a:,.0f} / {b:,.0f} req/s over {rounds} rounds; "
        f"CPU per answer {ca:.1f} / {cb:.1f} us = {ca / cb:.3f}; before = {before})",
        flush=True,
    )
    if cold_seconds <= 0:
        return
    # Cold starts (plain ``idr serve``), before and after alternating: each second's rate as a
    # multiple of the same source's warm median above, and the CPU per answer.
    warm = {"before": b, "after": a}
    firsts: dict[str, list[float]] = {"before": [], "after": []}
    cpus: dict[str, list[float]] = {"before": [], "after": []}
    for i in range(rounds):
        for name in ("before", "after"):
            src = before if name == "before" else here
            c = cold(data, handles, False, cold_seconds, max(2, seconds // 2), src)
            per = c["per_second"]
            firsts[name].append(float(per[0]["qps"]) / warm[name])
            cpus[name] += [float(r["cpu_us"]) for r in per]
            print(
                f"cold {name:<6} {i + 1}: per second x its warm: "
                + " ".join(f"{float(r['qps']) / warm[name]:.2f}" for r in per)
                + "; CPU/answer "
                + " ".join(f"{float(r['cpu_us']):.1f}" for r in per)
                + " us",
                flush=True,
            )
    cb, ca = statistics.median(cpus["before"]), statistics.median(cpus["after"])
    print(
        f"cold      first second x warm: after {statistics.median(firsts['after']):.2f}, before "
        f"{statistics.median(firsts['before']):.2f} (medians of {rounds}); CPU per cold answer "
        f"{ca:.1f} / {cb:.1f} us = {ca / cb:.3f} after/before",
        flush=True,
    )


def line(name: str, r: dict[str, Any]) -> str:
    codes = r["codes"]
    assert isinstance(codes, dict)
    total = sum(codes.values()) or 1
    nf = codes.get("100", 0) / total
    other = {k: v for k, v in codes.items() if k not in ("1", "100")}
    cpu = float(r.get("cpu_us", float("nan")))
    return (
        f"{name:<10} {r['qps']:>9,.0f} req/s  cpu {cpu:5.1f} us/answer  "
        f"p50 {r['p50']} us  p99 {r['p99']} us  "
        f"not-found {nf:.1%}  timeouts {r['timeouts']}" + (f"  other codes {other}" if other else "")
    )


# ---------------------------------------------------------------------------- cold start


def probe(port: int, timeout: float, handle: str = "88.100/bench-0", found: bool = False) -> None:
    """Until the native port answers a resolution of ``handle`` (10 ms between tries); with
    ``found``, until it answers that the handle exists (code 1: e.g. a mirror's copy arrived)."""
    from idr.server.native import WARM_SHAPES, plain_request

    req = plain_request(WARM_SHAPES[1], handle.encode())
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.01)
        while time.monotonic() < deadline:
            s.sendto(req, ("127.0.0.1", port))
            try:
                ans = s.recv(65536)
                if len(ans) >= 48 and (not found or int.from_bytes(ans[24:28], "big") == 1):
                    return
            except TimeoutError:
                pass
            except ConnectionRefusedError:
                time.sleep(0.01)
    raise RuntimeError(f"{handle} not {'found' if found else 'answered'} at port {port} in {timeout} s")


SNAPSHOTS = "native-answers*.snap"  # idr.server.snapshot's files in a node's data directory


def cold(
    data: Path,
    handles: int,
    warm: bool,
    seconds: int,
    steady_s: int,
    src: Path | None = None,
    restart: bool = False,
) -> dict[str, Any]:
    """``idr serve [--warm]`` pinned to core 0: seconds from spawn to the first answer, the rate
    of each of the first ``seconds`` seconds (a fresh hdlperf each second, each on a different
    random sequence: ``-n`` differs), then runs of ``steady_s`` until the rate stops growing.
    ``src``: idr from that source tree (PYTHONPATH). Without ``restart`` the node starts with no
    answer snapshot (any left by an earlier start is removed first); with it, on the snapshot
    the previous start wrote when it was stopped (``idr.server.snapshot``). With ``warm`` the
    node is stopped only once its warm-up pass is done, so its snapshot holds every answer."""
    port = free_port()
    set_access_log(data / "idr.toml", ACCESS_LOG)
    if not restart:
        for f in data.glob(SNAPSHOTS):
            f.unlink()
    if DROP_CACHE:
        drop_cache(data)
    else:
        load_cache(data)
    snap = data / "native-answers.snap"
    snap_bytes = snap.stat().st_size if restart and snap.exists() else 0
    errlog = data / "bench-serve.log"
    cmd = [*IDR, "serve", "--data", str(data), "--native", f"127.0.0.1:{port}", "--https", "", "--http", ""]
    if warm:
        cmd.append("--warm")
    elif src is None:  # the default is a warm-up now; a source from before it has no --no-warm
        cmd.append("--no-warm")
    t0 = time.monotonic()
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    err = errlog.open("w")
    proc = subprocess.Popen(
        ["taskset", "-c", "0", *cmd],
        stdout=subprocess.DEVNULL,
        stderr=err,
        start_new_session=True,
        env=env,
    )
    saved = ""
    try:
        probe(port, STARTUP_TIMEOUT)
        ready_s = time.monotonic() - t0
        per_second = [hdlperf(port, 1, handles - 1 - i, 1, [proc.pid]) for i in range(seconds)]
        steady: dict[str, Any] = {}
        best = 0.0
        t1 = time.monotonic()
        for i in range(60):
            r = hdlperf(port, steady_s, handles - 1 - seconds - i, 1, [proc.pid])
            q = float(r["qps"])
            if q > best:
                steady = r
            if q < best * 1.05 and i >= 1:
                break
            best = max(best, q)
        steady["after_s"] = time.monotonic() - t1 + seconds
        rss = 0
        for ln in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if ln.startswith("VmRSS:"):
                rss = int(ln.split()[1]) // 1024
        if warm:  # a warm server: every answer built before it is stopped (bounded wait): the
            # pass for hdlperf's request shape, learned on its first request, is done
            deadline = time.monotonic() + 600
            while "learned shape" not in errlog.read_text() and time.monotonic() < deadline:
                time.sleep(0.5)
        loaded = re.search(r"answer snapshot loaded: (\d+) answers .* in ([\d.]+) s", errlog.read_text())
        return {
            "ready_s": ready_s,
            "per_second": per_second,
            "steady": steady,
            "rss_mib": rss,
            "snapshot": (int(loaded.group(1)), snap_bytes, float(loaded.group(2))) if loaded else None,
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        err.close()
        m = re.search(r"answer snapshot: (\d+) answers .*\(([\d.]+) s\)", errlog.read_text())
        if m:
            saved = f"{m.group(1)} answers in {m.group(2)} s"
            print(f"          stopped: snapshot of {saved}", flush=True)


# ---------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--handles", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--cold-seconds", type=int, default=10, help="per-second rates after idr serve starts")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--cold-only", action="store_true", help="skip the TCP run and the plain idr serve")
    ap.add_argument("--profile", type=Path, help="py-spy worker 0 during the UDP run (raw stacks here)")
    ap.add_argument(
        "--before",
        type=Path,
        help="SRC dir of another checkout: UDP runs alternate between its idr and this one (after/before)",
    )
    ap.add_argument("--rounds", type=int, default=3, help="with --before: before/after pairs")
    ap.add_argument("--cold", action="store_true", help="with --before: also plain idr serve cold starts")
    ap.add_argument("--access-log", action="store_true", help="cold idr serve starts keep their access log")
    ap.add_argument(
        "--drop-cache", action="store_true", help="cold starts find the store file out of the page cache"
    )
    ap.add_argument(
        "--warm-rounds", type=int, default=1, help="warm UDP runs of idr, each after a baseline run (medians)"
    )
    ap.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    global ACCESS_LOG, DROP_CACHE
    ACCESS_LOG = a.access_log
    DROP_CACHE = a.drop_cache
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
    load = os.getloadavg()[0]
    print(
        f"setup     {a.handles} handles, {a.seconds} s per run, {IN_FLIGHT} in flight, "
        f"{MISS_PERCENT}% misses, {a.workers} worker(s), {NCPU} cores, load {load:.1f}",
        flush=True,
    )
    if a.before is not None:
        compare(data, a.before.resolve(), a.seconds, a.handles, a.rounds, a.cold_seconds if a.cold else 0)
        return 0

    def baseline(when: str) -> dict[str, Any]:
        """Same hdlperf settings, responder pinned like the server. Run before and after idr:
        on a shared machine the load moves during the minute idr spends warming."""
        port = free_port()
        echo = spawn(["--echo", "--port", str(port)], 0)
        try:
            base = hdlperf(port, a.seconds, a.handles, 1, [pid_of(wait_ready(echo, 30))])
        finally:
            stop([echo])
        print(
            line("baseline", base) + f"   (minimal uvloop UDP responder with negative answers; {when})",
            flush=True,
        )
        return base

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
    tcp: dict[str, Any] | None = None
    try:
        ready = [wait_ready(s, STARTUP_TIMEOUT) for s in servers]
        for r in ready:
            print(f"server    {r}", flush=True)
        pids = [pid_of(r) for r in ready]
        if a.profile is not None:
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
                    str(pids[0]),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        udps: list[dict[str, Any]] = []
        for i in range(a.warm_rounds):  # alternating with the baseline (more than one round)
            if i:
                bases.append(baseline(f"between idr runs {i} and {i + 1}"))
            udps.append(hdlperf(port, a.seconds, a.handles, 1 if a.workers == 1 else 2 * a.workers, pids))
            print(line("idr udp" + (f" {i + 1}" if a.warm_rounds > 1 else ""), udps[-1]), flush=True)
        udp = sorted(udps, key=lambda r: float(r["qps"]))[len(udps) // 2]  # the median run
        if prof is not None:
            prof.wait(60)
            for ln in profile_summary(a.profile):
                print(ln, flush=True)
        if not a.cold_only:
            tcp = tcp_load(port, a.seconds, a.handles, pids)
            print(
                line("idr tcp", tcp) + "   (persistent KA connections, Python pipelined client)", flush=True
            )
    finally:
        if prof is not None and prof.poll() is None:
            prof.kill()
            prof.wait(5)
        stats = stop(servers)
    for st in stats:
        print(f"server    {st}")
    bases.append(baseline("after idr"))
    base_qps = [float(b["qps"]) for b in bases]
    base_mid = statistics.median(base_qps)  # with one idr run: the mean of the two baselines
    base_cpu = statistics.median(float(b["cpu_us"]) for b in bases)
    q = float(udp["qps"])
    warm_ratio = q / base_mid
    cpu_ratio = base_cpu / statistics.median(float(r["cpu_us"]) for r in udps)
    print(
        f"ratio     idr udp / baseline = {warm_ratio:.2f} (medians of {len(udps)} idr and {len(bases)} "
        f"baseline runs; {q / max(base_qps):.2f}-{q / min(base_qps):.2f}); CPU per answer baseline/idr "
        f"= {cpu_ratio:.2f}",
        flush=True,
    )

    colds = []
    # A first start has no snapshot (plain idr serve, then --warm: each with any earlier
    # snapshot removed); the restart is plain idr serve on the snapshot the --warm server (every
    # answer built) wrote when it was stopped.
    starts = [("idr serve --warm", True, False), ("restart", False, True)]
    if not a.cold_only:
        starts.insert(0, ("idr serve", False, False))
    for name, warm, restart in starts:
        c = cold(data, a.handles, warm, a.cold_seconds, max(2, a.seconds // 2), restart=restart)
        colds.append((name, c))
        snap = c["snapshot"]
        print(
            f"cold      {name}: first answer {c['ready_s']:.1f} s after spawn; "
            f"RSS at the end {c['rss_mib']} MiB; access log "
            + ("on" if ACCESS_LOG else "off, as the warm server's")
            + (
                f"; snapshot {snap[0]:,} answers, {snap[1] / 1e6:.0f} MB "
                f"({snap[1] / max(1, snap[0]):.0f} bytes each), loaded in {snap[2]:.2f} s"
                if snap
                else "; no snapshot"
            )
        )
        for i, r in enumerate(c["per_second"]):
            print(line(f"  s{i + 1}", r) + f"   = {float(r['qps']) / q:.2f} x warm", flush=True)
        st = c["steady"]
        assert isinstance(st, dict)
        print(line("  steady", st) + f"   = {float(st['qps']) / q:.2f} x warm (after {st['after_s']:.0f} s)")

    # ---- summary block (paste into the README)
    load_end = os.getloadavg()[0]
    print(
        f"\nsummary   native_resolve.py --handles {a.handles} --workers {a.workers}, "
        f"load {load:.1f}-{load_end:.1f}"
    )
    print(
        f"  warm UDP      idr {q:,.0f}/s vs baseline {base_mid:,.0f}/s: {warm_ratio:.2f}x "
        f"(CPU/answer {base_cpu / cpu_ratio:.1f} vs {base_cpu:.1f} us: {cpu_ratio:.2f}x); "
        f"vs the reference server's 70,000-82,000/s (a quiet machine, issue 14; not this run): "
        f"{q / REFERENCE_QPS[1]:.2f}-{q / REFERENCE_QPS[0]:.2f}x"
    )
    if tcp is not None:
        print(f"  warm TCP      idr {float(tcp['qps']):,.0f}/s  (CPU/answer {float(tcp['cpu_us']):.1f} us)")
    for name, c in colds:
        rates = [float(r["qps"]) / q for r in c["per_second"]]
        st = c["steady"]
        assert isinstance(st, dict)
        snap = c["snapshot"]
        print(
            f"  cold {name:<17} first answer {c['ready_s']:.1f} s; per second x warm: "
            + " ".join(f"{x:.2f}" for x in rates)
            + f"; steady {float(st['qps']) / q:.2f}x; RSS {c['rss_mib']} MiB"
            + ("; access log on" if ACCESS_LOG else "")
            + (
                f"; snapshot {snap[0]:,} answers, {snap[1] / 1e6:.0f} MB, loaded in {snap[2]:.2f} s"
                if snap
                else ""
            )
        )
    # Goal 6: CPU per answer (summed over every worker) -> cores for the seeds' peak.
    cold_cpu = [float(r["cpu_us"]) for n, c in colds if n == "idr serve" for r in c["per_second"] if r["qps"]]
    print(
        f"  cores         {a.workers} worker(s): {float(udp['cpu_us']):.1f} us CPU per warm UDP answer; "
        f"the seeds' 44.9 billion/year at a 10x peak ({PEAK_QPS:,.0f}/s) = "
        f"{PEAK_QPS * float(udp['cpu_us']) / 1e6:.2f} core warm"
        + (f", {PEAK_QPS * statistics.median(cold_cpu) / 1e6:.2f} core cold (idr serve)" if cold_cpu else "")
        + (f", {PEAK_QPS * float(tcp['cpu_us']) / 1e6:.2f} core over TCP" if tcp is not None else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
