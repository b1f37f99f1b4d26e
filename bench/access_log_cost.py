"""What the access log costs native resolution: the same server with logging off and on, in one run.

    python bench/access_log_cost.py [--handles 100000] [--seconds 10] [--rounds 3]

The data set and load are ``bench/native_resolve.py``'s (``88.100/bench-i`` with three
values, hdlperf built from ../shared/tools/hdlperf.c, 16 requests in flight, 10% misses; the
server pinned to core 0, hdlperf to the last core). The server is started ``--rounds`` times
with the access log off and as many times on, alternating (off, on, off, on, …) so drift on
this shared machine hits both alike; each start waits for its answer cache to be warm. With
logging on, records go through ``idr.server.accesslog`` and ``idr.operations.logs`` exactly
as ``idr serve`` writes them (a QueueListener thread, RotatingFileHandler) into a file under
/tmp, which is checked afterwards: one JSON line per answer the server counted (a round
without that says MISMATCH and the exit status is 1).
Prints each round, the medians, and two ratios on/off: throughput, and the server process's
CPU time (loop and log-writer thread, from READY to exit) per answer — the second is the
steadier figure on a shared machine, where other work moves throughput between rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))


def _native_bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("native_resolve", HERE / "native_resolve.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


async def _serve(data: Path, port: int, log_dir: str) -> None:
    from idr.core.config import LoggingConfig
    from idr.core.service import NodeService
    from idr.operations.logs import LogSetup
    from idr.server.native import WARM_SHAPES, NativeOptions, start_server
    from idr.store.sqlite import SqliteStore

    logs = None
    access = None
    if log_dir:
        logs = LogSetup(Path(log_dir))
        logs.apply(LoggingConfig(access="access.log", file="idr.log"))
        access = logs.access
        assert access is not None
        access.start()
    svc = NodeService(SqliteStore(data / "idr.sqlite3"), admins=["300:0.NA/88.100"])
    opts = NativeOptions(cache_entries=2_000_000, warm=True, warm_shapes=(WARM_SHAPES[1],), access_log=access)
    srv = await start_server(svc, "127.0.0.1", port, opts)
    assert srv.warm_task is not None
    await srv.warm_task
    if access is not None:
        access.pending.clear()  # the warm-up's own requests are not the measured load
    cpu0 = _cpu()
    print(f"READY pid={os.getpid()}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    answered = srv.udp.hits + srv.udp.slow  # hits: cached answers and not-found templates alike
    await srv.close()
    svc.close()
    written = 0
    if logs is not None and access is not None:
        logs.close()
        written = access.written
    cpu = _cpu() - cpu0  # the whole process: the loop and the log's writer thread
    print(f"STATS answered={answered} logged={written} cpu_s={cpu:.3f}", flush=True)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--handles", type=int, default=100_000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hdlperf-src", type=Path, default=None, help="hdlperf.c (default: ../shared/tools)")
    ap.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--log-dir", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        import uvloop

        uvloop.run(_serve(a.serve, a.port, a.log_dir))
        return 0

    nb = _native_bench()
    if a.hdlperf_src is not None:
        nb.HDLPERF_SRC = a.hdlperf_src
    if not nb.HDLPERF.exists():
        if not nb.HDLPERF_SRC.exists():
            print(f"hdlperf source not found at {nb.HDLPERF_SRC}: give --hdlperf-src", file=sys.stderr)
            return 2
        nb.build_hdlperf()
    data = nb.make_data(a.handles)
    results: dict[str, list[float]] = {"off": [], "on": []}
    cpu_us: dict[str, list[float]] = {"off": [], "on": []}  # server CPU per answer
    mismatches = 0
    for rnd in range(a.rounds):
        for mode in ("off", "on"):
            port = nb.free_port()
            log_dir = tempfile.mkdtemp(prefix="idr-bench-accesslog-") if mode == "on" else ""
            cmd = ["taskset", "-c", "0", sys.executable, str(Path(__file__).resolve()), "--serve", str(data),
                   "--port", str(port), "--log-dir", log_dir]  # fmt: skip
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
            try:
                nb.wait_ready(proc, nb.STARTUP_TIMEOUT)
                r = nb.hdlperf(port, a.seconds, a.handles, 1)
            finally:
                stats = nb.stop([proc])  # the server's STATS line: answers counted, lines logged
            counted = dict(kv.split("=", 1) for kv in " ".join(stats).split() if "=" in kv)
            per = 1e6 * float(counted.get("cpu_s", "nan")) / max(1, int(counted.get("answered", "0")))
            cpu_us[mode].append(per)
            extra = f" cpu_us/answer={per:.2f}"
            if mode == "on":
                lines = 0
                for f in Path(log_dir).glob("access.log*"):
                    with f.open() as fh:
                        for ln in fh:
                            json.loads(ln)  # every line is one JSON object
                            lines += 1
                extra += f" log_lines={lines} {' '.join(stats)}"
                if {counted.get("answered"), counted.get("logged")} != {str(lines)}:
                    extra += " MISMATCH: not one line per answer"
                    mismatches += 1
            results[mode].append(float(r["qps"]))
            line = f"round {rnd + 1} log={mode:3} qps={r['qps']:.0f} p50_us={r['p50']} p99_us={r['p99']}"
            print(line + extra, flush=True)
            time.sleep(1)
    off, on = statistics.median(results["off"]), statistics.median(results["on"])
    print(f"median    log=off {off:.0f}/s  log=on {on:.0f}/s")
    cost = 100 * (1 - on / off)
    print(f"ratio     on/off = {on / off:.3f} (logging costs {cost:.1f}% of native UDP throughput)")
    c_off, c_on = statistics.median(cpu_us["off"]), statistics.median(cpu_us["on"])
    print(
        f"cpu       server CPU per answer: off {c_off:.2f} us, on {c_on:.2f} us, "
        f"on/off = {c_on / c_off:.3f} (+{c_on - c_off:.2f} us per logged answer)"
    )
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
