"""A promoted mirror's first seconds: native UDP resolution right after failover (issue 14 goal 2).

    python bench/promote_resolve.py [--handles 1000000] [--seconds 10] [--mirror-warm]

Two real ``idr serve`` processes on one store of N handles (bench/native_resolve.py's data set,
copied): a primary, and a mirror that received everything through replication (a full copy
at its first connection, as a new backup node gets it). Both pinned to core 0, hdlperf to the
last core (16 in flight, 10% misses), access logs off. In one run:

* **warm** — the primary, its answer map filled for hdlperf's request shape (``--warm`` and its
  shape learned), once the machine is idle (the mirror's copy and its warm-up done), three
  ``--seconds`` runs (median): the rate a node at full speed gives;
* **promoted** — the primary is killed (SIGKILL), the mirror promoted (``idr promote``), and
  hdlperf asks the promoted mirror: the rate of each of its first ``--seconds``
  seconds after the promotion was acknowledged, as a ratio to the warm rate, with the CPU per
  answer; then its rate once it stops growing.

The mirror answers nothing before the failover (clients ask the primary; the bench asks it one
handle, to know its copy arrived). Plain: its answer map is empty at the promotion, and it starts
like a first start on a store in the page cache. ``--mirror-warm``: its ``idr.toml`` says
``[native] warm = true`` and ``warm_shapes = ["rfc3652"]`` (hdlperf's request shape), so it
built every handle's answer for that shape while it was idle — after its copy arrived, off its
serving loop.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from native_resolve import (  # the bench beside this one
    IDR,
    build_hdlperf,
    free_port,
    hdlperf,
    make_data,
    probe,
    set_access_log,
)

SECRET = "bench-promote-admin"
REPL_SECRET = secrets.token_urlsafe(32)  # a generated key, as idr replication setup makes
COPY_TIMEOUT = 900.0


def idr(*args: str) -> str:
    r = subprocess.run([*IDR, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"idr {' '.join(args)} failed: {r.stdout}{r.stderr}")
    return r.stdout


def serve(data: Path, port: int, warm: bool | None, log: Path) -> subprocess.Popen[bytes]:
    """``idr serve`` on core 0; ``warm`` None: as its ``idr.toml`` says."""
    cmd = [*IDR, "serve", "--data", str(data), "--native", f"127.0.0.1:{port}", "--https", "", "--http", ""]
    if warm is not None:
        cmd.append("--warm" if warm else "--no-warm")
    return subprocess.Popen(
        ["taskset", "-c", "0", *cmd], stdout=subprocess.DEVNULL, stderr=log.open("w"), start_new_session=True
    )


def wait_for(log: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{text!r} not in {log} after {timeout} s")
        time.sleep(0.2)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def busy_cores(interval: float = 1.0) -> float:
    """Cores' worth of CPU the whole machine used over ``interval`` (Linux /proc/stat)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    busy0, total0 = sample()
    time.sleep(interval)
    busy1, total1 = sample()
    return (busy1 - busy0) / max(1, total1 - total0) * (os.cpu_count() or 1)


def wait_quiet(timeout: float, below: float = 0.15) -> float:
    """Wait until the machine is idle (both servers and the mirror's warm-up helper done with
    the copy: it took 76-250 s at 1M handles, and a primary measured meanwhile shares its cores
    with it); returns the seconds waited."""
    t0 = time.monotonic()
    while busy_cores() > below and time.monotonic() - t0 < timeout:
        pass
    return time.monotonic() - t0


def run(handles: int, seconds: int, mirror_warm: bool) -> dict[str, Any]:
    src = make_data(handles)
    root = Path(f"/tmp/idr-bench-promote-{handles}")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    primary, mirror = root / "primary", root / "mirror"
    t0 = time.monotonic()
    shutil.copytree(src, primary, ignore=shutil.ignore_patterns("*.snap", "logs", "bench-*"))
    idr("init", "--data", str(mirror), "--prefix", "88.100", "--admin-secret", SECRET, "--https", "")
    ports = {p: free_port() for p in ("p_native", "m_native")}
    repl = {p: free_port() for p in ("p_repl", "m_repl")}
    for data, listen, peer, role in (
        (primary, repl["p_repl"], repl["m_repl"], "primary"),
        (mirror, repl["m_repl"], repl["p_repl"], "mirror"),
    ):
        idr("replication", "setup", "--data", str(data), "--listen", f"127.0.0.1:{listen}",
            "--peer", f"127.0.0.1:{peer}", "--secret", REPL_SECRET, "--role", role,
            "--mode", "async")  # fmt: skip
        set_access_log(data / "idr.toml", False)
    if mirror_warm:
        toml = mirror / "idr.toml"
        text = toml.read_text()
        plain = "\nwarm = false\nwarm_shapes = []\n"
        assert plain in text, "idr init's [native] settings changed"
        toml.write_text(text.replace(plain, '\nwarm = true\nwarm_shapes = ["rfc3652"]\n'))
    print(f"setup     primary and mirror in {time.monotonic() - t0:.1f} s ({root})", flush=True)
    plog, mlog = root / "primary.log", root / "mirror.log"
    p = serve(primary, ports["p_native"], True, plog)
    m = serve(mirror, ports["m_native"], None if mirror_warm else False, mlog)
    try:
        t0 = time.monotonic()
        last = f"88.100/bench-{handles - 1}"
        probe(ports["m_native"], COPY_TIMEOUT, last, found=True)  # the primary's copy arrived
        copied_s = time.monotonic() - t0
        print(
            f"mirror    holds the primary's {handles} handles {copied_s:.1f} s after both started", flush=True
        )
        probe(ports["p_native"], 60, found=True)
        wait_for(plog, "learned shape", 600)  # the primary's map holds hdlperf's shape
        if mirror_warm:  # its pass for the named shape, after the copy: every handle's answer
            deadline = time.monotonic() + 600
            filled = r"answer cache warm: (\d+) answers"
            while not any(int(n) >= handles for n in re.findall(filled, mlog.read_text())):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the mirror's answer map was not filled in 600 s: {mlog}")
                time.sleep(0.5)
        quiet_s = wait_quiet(300)
        print(f"quiet     the machine idle {quiet_s:.1f} s later", flush=True)
        runs = [hdlperf(ports["p_native"], seconds, handles - 1 - i, 1, [p.pid]) for i in range(3)]
        warm = statistics.median(float(r["qps"]) for r in runs)
        warm_cpu = statistics.median(float(r["cpu_us"]) for r in runs)
        print(f"warm      primary {warm:,.0f}/s, {warm_cpu:.1f} us CPU per answer (median of 3)", flush=True)
        p.kill()  # the failover: the primary is gone at once
        p.wait()
        t1 = time.monotonic()
        out = idr("promote", "--data", str(mirror))
        promote_s = time.monotonic() - t1
        print(f"promote   {out.strip()} in {promote_s:.2f} s", flush=True)
        per_second = [hdlperf(ports["m_native"], 1, handles - 1 - i, 1, [m.pid]) for i in range(seconds)]
        ratios = [float(r["qps"]) / warm for r in per_second]
        steady, best = per_second[-1], 0.0
        for i in range(30):
            r = hdlperf(ports["m_native"], 5, handles - 11 - i, 1, [m.pid])
            if float(r["qps"]) < best * 1.05 and i >= 1:
                break
            steady, best = r, max(best, float(r["qps"]))
        rss = 0
        for ln in Path(f"/proc/{m.pid}/status").read_text().splitlines():
            if ln.startswith("VmRSS:"):
                rss = int(ln.split()[1]) // 1024
        return {
            "handles": handles,
            "mirror_warm": mirror_warm,
            "copied_s": copied_s,
            "warm_qps": warm,
            "warm_cpu_us": warm_cpu,
            "promote_s": promote_s,
            "per_second": ratios,
            "per_second_cpu_us": [float(r["cpu_us"]) for r in per_second],
            "steady": float(steady["qps"]) / warm,
            "mirror_rss_mib": rss,
        }
    finally:
        stop(p)
        stop(m)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--handles", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--mirror-warm", action="store_true")
    a = ap.parse_args()
    build_hdlperf()
    r = run(a.handles, a.seconds, a.mirror_warm)
    per = ", ".join(f"{x:.2f}" for x in r["per_second"])
    cpu = ", ".join(f"{x:.1f}" for x in r["per_second_cpu_us"])
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print("summary")
    print(f"  handles {r['handles']:,}, mirror {'--warm' if r['mirror_warm'] else 'plain'}, load {load}")
    print(f"  warm primary: {r['warm_qps']:,.0f}/s, {r['warm_cpu_us']:.1f} us CPU per answer")
    print(f"  promoted mirror, s1..s{len(r['per_second'])} x warm: {per}")
    print(f"  its CPU per answer (us): {cpu}")
    print(f"  then {r['steady']:.2f}x warm; promotion took {r['promote_s']:.2f} s")
    print(f"  mirror RSS {r['mirror_rss_mib']} MiB; it held the copy {r['copied_s']:.1f} s after the start")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
