"""What the access log costs native resolution: the same server with logging off and on, in one run.

    python bench/access_log_cost.py [--handles 100000] [--seconds 10] [--rounds 3] [--before SRC]

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
steadier figure on a shared machine, where other work moves throughput between rounds. The
server is set up as ``idr serve`` sets it (``freeze_gc``: the collector kept off the caches).

``--before SRC`` (e.g. an export of main's ``src`` before a change): a third server per round,
idr from that tree with its log on, so the logging cost per answer (CPU on minus CPU off) of
both trees is measured against the same off rounds, and their ratio printed. The whole cost
is in the server process (its loop and its writer thread): there is no other process.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import resource
import shutil
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
    fields = NativeOptions.__dataclass_fields__  # a --before tree may lack an option
    as_served = {k: v for k, v in (("freeze_gc", True), ("warm_helper", False)) if k in fields}
    opts = NativeOptions(cache_entries=2_000_000, warm=True, warm_shapes=(WARM_SHAPES[1],), access_log=access,
                         **as_served)  # type: ignore[arg-type]  # fmt: skip
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
    ap.add_argument("--src", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--before", type=Path, default=None, help="also this tree's idr, log on (a src dir)")
    a = ap.parse_args()
    if a.serve:
        if a.src is not None:
            sys.path.insert(0, str(a.src))
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
    modes = ["off", "on"] + (["before"] if a.before else [])
    results: dict[str, list[float]] = {m: [] for m in modes}
    cpu_us: dict[str, list[float]] = {m: [] for m in modes}  # server CPU per answer
    mismatches = 0
    here = HERE.parent / "src"
    print(f"setup     {a.handles} handles, {a.seconds} s per run, load {os.getloadavg()[0]:.2f}", flush=True)
    for rnd in range(a.rounds):
        for mode in modes:
            port = nb.free_port()
            log_dir = tempfile.mkdtemp(prefix="idr-bench-accesslog-") if mode != "off" else ""
            src = a.before.resolve() if mode == "before" else here
            cmd = ["taskset", "-c", "0", sys.executable, str(Path(__file__).resolve()), "--serve", str(data),
                   "--port", str(port), "--log-dir", log_dir, "--src", str(src)]  # fmt: skip
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
            if mode != "off":
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
                shutil.rmtree(log_dir, ignore_errors=True)
            results[mode].append(float(r["qps"]))
            line = f"round {rnd + 1} log={mode:6} qps={r['qps']:.0f} p50_us={r['p50']} p99_us={r['p99']}"
            print(line + extra, flush=True)
            time.sleep(1)
    med = {m: statistics.median(results[m]) for m in modes}
    cpu = {m: statistics.median(cpu_us[m]) for m in modes}
    print("median    " + "  ".join(f"log={m} {med[m]:.0f}/s" for m in modes))
    print(f"summary   (medians of {a.rounds} rounds; server pinned to core 0; load {os.getloadavg()[0]:.2f})")
    for m in modes[1:]:
        name = "log on" if m == "on" else f"log on, before ({a.before})"
        print(
            f"  {name}: throughput {med[m] / med['off']:.3f}x off; server CPU per answer "
            f"{cpu[m]:.2f} us against {cpu['off']:.2f} off (+{cpu[m] - cpu['off']:.2f} us per logged answer, "
            f"{cpu[m] / cpu['off']:.3f}x)"
        )
    if a.before:
        # per round: each logged run against the off run of its own round
        after = [on - off for on, off in zip(cpu_us["on"], cpu_us["off"], strict=True)]
        before = [b - off for b, off in zip(cpu_us["before"], cpu_us["off"], strict=True)]
        ratios = ", ".join(f"{x / y:.2f}" for x, y in zip(after, before, strict=True) if y > 0)
        ma, mb = statistics.median(after), statistics.median(before)
        print(
            f"  logging cost per answer, this tree against --before: {ma:.2f} us against {mb:.2f} us "
            f"= {ma / mb:.2f}x (per round: {ratios})"
        )
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
