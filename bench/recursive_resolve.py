"""A recursive node's answers against an authoritative node's, with hdlperf as the load.

    python bench/recursive_resolve.py [--seconds 10] [--window 32] [--cells 40000]

Starts the twin-city federation of ``idr demo`` (``start_federation``) in one process with
``--cells`` extra cells registered at the Yibin enterprise node (``88.168.6/BENCH-i``), and a
recursive node made by ``idr init --role recursive --root <top>`` and run by ``idr serve`` in a
process of its own. Both pinned to core 0, the load (hdlperf, built from ../shared/tools) on the
last core: 16 in flight, ``--hit-set`` names of which 10% are misses (``BENCH-i-missing``).

* **authoritative**: hdlperf against the Yibin node, which holds the cells (warm: each name asked
  twice first);
* **recursive, cached**: the same hdlperf against the recursive node once each name was resolved
  through it twice (the first walks, the second fills the pre-encoded answer cache every native
  front-end has), so every request is answered by the same hot path;
* **recursive, cold**: names never asked before, ``--window`` in flight from a Python client:
  answer-cache misses, each a walk to Yibin (the services of 88.168.6 are cached after the first),
  pipelined through the node's one upstream socket, at most 32 in flight per upstream server.

The cached runs alternate (authoritative, recursive, … ``--rounds`` times, so drift on a
shared machine hits both alike). Prints the rates, the server CPU per answer and the ratio
recursive/authoritative of each round and their median, then a summary block. The recursive
node is configured like the Yibin node it is compared with, which (in the federation's process)
writes no access log: its ``idr.toml`` turns the access log off (``[logging] access = ""``).
``--access-log`` keeps ``idr serve``'s default (a JSON line per answer, ~4.5 µs of CPU each:
bench/access_log_cost.py), so the ratio then includes that cost too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HIT_SET = 1000
REQUEST_TIMEOUT = 3.0


# ---------------------------------------------------------------------------- server process


async def serve(cells: int) -> None:
    from idr.core.service import NodeService
    from idr.demo import start_federation
    from idr.model.value import HandleRecord, HandleValue

    with tempfile.TemporaryDirectory(prefix="idr-bench-rec-") as tmp:
        fed = await start_federation(Path(tmp))
        try:
            yb = fed["ent-yb"].service
            assert isinstance(yb, NodeService)
            for start in range(0, cells, 10_000):
                await yb.import_records(
                    [
                        HandleRecord(
                            f"88.168.6/BENCH-{i}",
                            (HandleValue(1, "URL", f"https://yibin-cells.example/cells/BENCH-{i}".encode()),),
                        )
                        for i in range(start, min(cells, start + 10_000))
                    ],
                    actor="bench",
                )
            ports = {"top": fed["top-cq"].native[1], "yibin": fed["ent-yb"].native[1], "pid": os.getpid()}
            print(json.dumps(ports), flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF
        finally:
            await fed.stop()


# ---------------------------------------------------------------------------- load process


def encoded_requests(handles: list[str]) -> list[bytearray]:
    from idr.codec.bodies import ResolutionRequest
    from idr.codec.envelope import OpCode
    from idr.codec.message import encode_message
    from idr.resolver.client import build_request

    return [
        bytearray(encode_message(build_request(OpCode.RESOLUTION, ResolutionRequest(h, (), ()))))
        for h in handles
    ]


def drive(
    port: int, requests: list[bytearray], seconds: float, window: int, cycle: bool
) -> tuple[int, int, float]:
    """Send ``requests`` (cycling through them if ``cycle``) with ``window`` in flight for
    ``seconds``; returns (answered with SUCCESS, failed or lost, elapsed seconds)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(0.2)
    pending: dict[int, float] = {}
    ok = bad = 0
    nxt = 0
    rid = 1
    t0 = time.monotonic()
    end = t0 + seconds
    try:
        while True:
            now = time.monotonic()
            sending = now < end and (cycle or nxt < len(requests))
            while sending and len(pending) < window and (cycle or nxt < len(requests)):
                buf = requests[nxt % len(requests)]
                nxt += 1
                rid = rid % 0x7FFFFFFF + 1
                struct.pack_into(">I", buf, 8, rid)
                sock.send(buf)
                pending[rid] = now
            if not pending:
                break
            try:
                data = sock.recv(65535)
            except TimeoutError:
                data = b""
            if len(data) >= 28:
                got = struct.unpack_from(">I", data, 8)[0]
                if pending.pop(got, None) is not None:
                    code = struct.unpack_from(">I", data, 24)[0]
                    if code == 1:
                        ok += 1
                    else:
                        bad += 1
            now = time.monotonic()
            for r, sent in list(pending.items()):
                if now - sent > REQUEST_TIMEOUT:
                    del pending[r]
                    bad += 1
            if now > end + REQUEST_TIMEOUT:
                bad += len(pending)
                break
    finally:
        sock.close()
    return ok, bad, time.monotonic() - t0


IDR = [sys.executable, "-c", "from idr.cli import main; main()"]
HERE = Path(__file__).resolve().parent
NCPU = os.cpu_count() or 1


def hdlperf(port: int, seconds: int, names: int, pid: int) -> dict[str, Any]:
    """hdlperf (native_resolve's build) on the last core against ``port``: BENCH-0…names-1 of
    88.168.6, 16 in flight, 10% misses; with the server's CPU time per answer."""
    sys.path.insert(0, str(HERE))
    import native_resolve as nr

    nr.build_hdlperf()
    cmd = ["taskset", "-c", str(NCPU - 1), str(nr.HDLPERF), "-p", str(port), "-l", str(seconds)]
    cmd += ["-c", str(nr.IN_FLIGHT), "-n", str(names), "-m", str(nr.MISS_PERCENT), "-P", "88.168.6/BENCH-"]
    cpu0 = nr.cpu_seconds(pid)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    cpu = nr.cpu_seconds(pid) - cpu0
    m = re.search(r"qps=(\d+).*answered=(\d+).*timeouts=(\d+).*rc\{([^}]*)\} p50_us=(\d+) p99_us=(\d+)", out)
    if m is None:
        raise RuntimeError(f"hdlperf: {out!r}")
    return {
        "qps": float(m.group(1)),
        "cpu_us": cpu / max(1, int(m.group(2))) * 1e6,
        "timeouts": int(m.group(3)),
        "codes": m.group(4),
        "p50": int(m.group(5)),
        "p99": int(m.group(6)),
    }


def probe(port: int, timeout: float = 60.0) -> None:
    req = encoded_requests(["88.168.6/BENCH-0"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            ok, _, _ = drive(port, req, 0.5, 1, cycle=False)
            if ok:
                return
        time.sleep(0.1)
    raise RuntimeError("the recursive node did not answer")


def line(name: str, r: dict[str, Any]) -> str:
    return (
        f"{name:<26} {r['qps']:>9,.0f}/s  cpu {r['cpu_us']:5.1f} us/answer  p50 {r['p50']} us  "
        f"p99 {r['p99']} us  timeouts {r['timeouts']}  codes {{{r['codes']}}}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--cells", type=int, default=40_000)
    ap.add_argument("--hit-set", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3, help="authoritative/recursive alternations")
    ap.add_argument("--access-log", action="store_true", help="keep idr serve's access log on")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve(args.cells))
        return
    load0 = os.getloadavg()[0]
    server = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, __file__, "--serve", "--cells", str(args.cells)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    rec: subprocess.Popen[bytes] | None = None
    tmp = tempfile.TemporaryDirectory(prefix="idr-bench-recnode-")
    try:
        assert server.stdout is not None and server.stdin is not None
        line_ = server.stdout.readline()
        if not line_:
            sys.exit("the federation did not start")
        ports = json.loads(line_)
        data = Path(tmp.name) / "rec"
        subprocess.run(
            [*IDR, "init", "--data", str(data), "--role", "recursive", "--root", f"127.0.0.1:{ports['top']}",
             "--https", ""],
            check=True,
            capture_output=True,
        )  # fmt: skip
        if not args.access_log:  # like for like: the authoritative node logs nothing either
            sys.path.insert(0, str(HERE))
            import native_resolve as nr

            nr.set_access_log(data / "idr.toml", False)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            rport = s.getsockname()[1]
        rec = subprocess.Popen(
            ["taskset", "-c", "0", *IDR, "serve", "--data", str(data), "--native", f"127.0.0.1:{rport}",
             "--https", "", "--http", ""],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        probe(rport)
        print(
            f"federation up (Yibin native :{ports['yibin']}, {args.cells} extra cells); "
            f"recursive node in its own process :{rport}; load {load0:.1f}"
        )
        n = args.hit_set
        names = [f"88.168.6/BENCH-{i}" for i in range(n)] + [f"88.168.6/BENCH-{i}-missing" for i in range(n)]
        warm_set = encoded_requests(names)
        for port in (ports["yibin"], rport, rport):  # the recursive node: walk, then fill its hot cache
            ok, bad, _ = drive(port, warm_set, 120.0, args.window, cycle=False)
            assert ok + bad == len(warm_set), f"warm-up: {ok + bad} of {len(warm_set)} answered"
        # alternating rounds (authoritative, recursive, authoritative, …): drift on the shared
        # machine hits both alike; the medians and the median of the per-round ratios are quoted
        auths: list[dict[str, Any]] = []
        hits: list[dict[str, Any]] = []
        for i in range(args.rounds):
            auths.append(hdlperf(ports["yibin"], args.seconds, n, ports["pid"]))
            print(line(f"authoritative (Yibin) {i + 1}", auths[-1]))
            hits.append(hdlperf(rport, args.seconds, n, rec.pid))
            print(line(f"recursive, cached {i + 1}", hits[-1]))
            print(f"round {i + 1}: recursive / authoritative = {hits[-1]['qps'] / auths[-1]['qps']:.2f}")
        per_round = [h["qps"] / a["qps"] for h, a in zip(hits, auths, strict=True)]
        auth = {k: statistics.median(r[k] for r in auths) for k in ("qps", "cpu_us")}
        hit = {k: statistics.median(r[k] for r in hits) for k in ("qps", "cpu_us")}
        cold_set = encoded_requests([f"88.168.6/BENCH-{i}" for i in range(n, args.cells)])
        ok, bad, took = drive(rport, cold_set, args.seconds, args.window, cycle=False)
        cold = ok / took
        print(
            f"{'recursive, cold walks':<26} {cold:>9,.0f}/s  ({ok} in {took:.1f} s, {bad} failed, "
            f"{args.window} in flight)"
        )
        ratio = statistics.median(per_round)
        logged = "on" if args.access_log else "off, as the authoritative node's"
        cpu_ratio = auth["cpu_us"] / hit["cpu_us"]
        print(
            f"ratio recursive cached / authoritative = {ratio:.2f} (median of {args.rounds} rounds: "
            + ", ".join(f"{r:.2f}" for r in per_round)
            + f"); CPU per answer auth/rec = {cpu_ratio:.2f}"
        )
        print(
            f"\nsummary   recursive_resolve.py --cells {args.cells} --rounds {args.rounds}, "
            f"load {load0:.1f}-{os.getloadavg()[0]:.1f}"
        )
        print(
            f"  recursive cached {hit['qps']:,.0f}/s vs authoritative {auth['qps']:,.0f}/s (medians): "
            f"{ratio:.2f}x, rounds {min(per_round):.2f}-{max(per_round):.2f} "
            f"(CPU/answer {hit['cpu_us']:.1f} vs {auth['cpu_us']:.1f} us: {cpu_ratio:.2f}x; the recursive "
            f"node is idr serve, access log {logged}); cold walks {cold:,.0f}/s "
            f"({args.window} in flight)"
        )
    finally:
        if rec is not None:
            rec.terminate()
            try:
                rec.wait(30)
            except subprocess.TimeoutExpired:
                rec.kill()
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        tmp.cleanup()


if __name__ == "__main__":
    main()
