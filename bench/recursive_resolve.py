"""Resolutions per second through the demo's recursive node: cache hits and cold three-level walks.

    python bench/recursive_resolve.py [--seconds 10] [--window 32] [--cells 40000]

Starts the twin-city federation of ``idr demo`` (``start_federation``) in a server process,
with ``--cells`` extra cells registered at the Yibin enterprise node (``88.168.6/BENCH-i``)
and the recursive node's *service* cache turned off, so every uncached lookup walks the
whole hierarchy: top (0.NA/88.168.6 → 303) → Sichuan secondary (0.NA/88.168.6) → Yibin
(the handle). This process is the load: one UDP socket, ``--window`` requests in flight,
pre-encoded Handle-protocol resolution requests (request id patched), answers matched by id.

* hit: a set of 1,000 cells resolved once, then resolved again and again (answer cache);
* cold: every request a cell never asked before (answer cache miss, three levels).

Prints one line per figure and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HIT_SET = 1000
REQUEST_TIMEOUT = 3.0


# ---------------------------------------------------------------------------- server process


async def serve(cells: int) -> None:
    from idr.demo import start_federation
    from idr.model.value import HandleRecord, HandleValue
    from idr.resolver.recursive import RecursiveService, TtlCache

    with tempfile.TemporaryDirectory(prefix="idr-bench-rec-") as tmp:
        fed = await start_federation(Path(tmp))
        try:
            yb = fed["ent-yb"].service
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
            rec = fed["recursive"].service
            assert isinstance(rec, RecursiveService)
            # No service cache: every answer-cache miss walks top → secondary → enterprise.
            rec.resolver.services = TtlCache(0, rec.resolver.clock)
            print(json.dumps({"native": fed["recursive"].native[1]}), flush=True)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--cells", type=int, default=40_000)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve(args.cells))
        return
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--cells", str(args.cells)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdin is not None
        line = server.stdout.readline()
        if not line:
            sys.exit("the federation did not start")
        port = int(json.loads(line)["native"])
        print(f"federation up; recursive node native UDP 127.0.0.1:{port}; {args.cells} extra cells at Yibin")
        hot = encoded_requests([f"88.168.6/BENCH-{i}" for i in range(HIT_SET)])
        ok, bad, _ = drive(port, hot, 60.0, args.window, cycle=False)  # warm the answer cache
        assert ok == HIT_SET, f"warm-up: {ok} of {HIT_SET} resolved ({bad} failed)"
        ok, bad, took = drive(port, hot, args.seconds, args.window, cycle=True)
        hit = ok / took
        print(f"cache hit: {hit:,.0f} resolutions/s ({ok} in {took:.1f} s, {bad} failed)")
        cold_set = encoded_requests([f"88.168.6/BENCH-{i}" for i in range(HIT_SET, args.cells)])
        ok, bad, took = drive(port, cold_set, args.seconds, args.window, cycle=False)
        cold = ok / took
        print(
            f"cold, three levels (top → Sichuan secondary → Yibin): {cold:,.0f} resolutions/s "
            f"({ok} in {took:.1f} s, {bad} failed)"
        )
        print(f"ratio hit/cold: {hit / cold:.1f}x" if cold else "ratio: no cold resolutions")
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
