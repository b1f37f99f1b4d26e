"""Kill the primary of a two-site service again and again; count what was lost.

Starts a primary and a mirror as real ``idr serve`` processes (sync replication) on
127.0.0.1, drives writes (HTTPS API) and resolutions (HTTP API) from this script with
client failover (``idr.resolver.failover``), and for each cycle: SIGKILLs the current primary
at a random moment, promotes the mirror (``idr promote`` over the replication port), and
restarts the killed site, which rejoins as mirror (roles alternate). Then the mirror is
SIGKILLed and restarted under load, and the link is cut (mirror SIGSTOPped) and healed.
Finally every acknowledged write is looked up in the surviving site's store. Prints:

    acknowledged writes, found on the surviving site, lost (must be 0 in sync mode),
    resolutions attempted and failed, the longest gap in successful resolutions.

    python bench/failover.py [--cycles 20] [--seed 1] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from idr.model.handle import normalize_key
from idr.replication import admin
from idr.resolver.failover import Failover, SiteUnavailable
from idr.store.sqlite import SqliteStore

SECRET = secrets.token_urlsafe(32)  # a generated 256-bit replication key, as idr replication setup makes
ADMIN_AUTH = {"Authorization": aiohttp.encode_basic_auth("300%3A0.NA%2F88.100", "bench-s3cret")}
IDR = [sys.executable, "-c", "from idr.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SiteProc:
    name: str
    dir: Path
    https: int = field(default_factory=free_port)
    http: int = field(default_factory=free_port)
    repl: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def repl_addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.repl)

    def start(self) -> None:
        self.starts += 1
        log = (self.dir.parent / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen([*IDR, "serve", "--data", str(self.dir)], stdout=log, stderr=log)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                self.proc.wait(10)

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)


def setup(root: Path, name: str) -> SiteProc:
    site = SiteProc(name, root / name)
    site.dir.mkdir()
    subprocess.run(
        [*IDR, "init", "--data", str(site.dir), "--prefix", "88.100", "--admin-secret", "bench-s3cret",
         "--https", f"127.0.0.1:{site.https}", "--http", f"127.0.0.1:{site.http}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return site


def configure(site: SiteProc, peer: SiteProc, role: str, ack_timeout: float) -> None:
    subprocess.run(
        [*IDR, "replication", "setup", "--data", str(site.dir), "--listen", f"127.0.0.1:{site.repl}",
         "--peer", f"127.0.0.1:{peer.repl}", "--secret", SECRET, "--role", role, "--mode", "sync",
         "--ack-timeout", str(ack_timeout)],
        check=True, capture_output=True,
    )  # fmt: skip


async def status(site: SiteProc) -> dict[str, Any] | None:
    try:
        return await admin.node_status(site.repl_addr, SECRET, timeout=1.0)
    except (OSError, TimeoutError, Exception):
        return None


async def wait_for(cond: Any, timeout: float, what: str) -> float:
    """Poll the async predicate ``cond`` (bounded); returns seconds taken."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if await cond():
            return time.monotonic() - t0
        await asyncio.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


def in_step(primary: SiteProc, mirror: SiteProc) -> Any:
    async def cond() -> bool:
        p, m = await status(primary), await status(mirror)
        return bool(
            p and m and p["writable"] and p["mirrors"] >= 1 and m["role"] == "mirror"
            and m["last_seq"] == p["last_seq"]
        )  # fmt: skip

    return cond


@dataclass
class Load:
    acked: list[str] = field(default_factory=list)
    write_attempts: int = 0
    resolutions: int = 0
    failed: int = 0
    last_ok: float = 0.0
    longest_gap: float = 0.0
    stop: bool = False


async def writer(n: int, sites: list[SiteProc], load: Load, session: aiohttp.ClientSession) -> None:
    fo: Failover[SiteProc] = Failover(sites, retry_preferred=1.0)
    i = 0
    while not load.stop:
        i += 1
        handle = f"88.100/w{n}-{i}"

        async def put(site: SiteProc, handle: str = handle) -> bool:
            url = f"https://127.0.0.1:{site.https}/api/handles/{handle}"
            body = {"values": [{"index": 1, "type": "URL", "data": {"format": "string", "value": handle}}]}
            async with session.put(url, json=body, headers=ADMIN_AUTH, ssl=False,
                                   timeout=aiohttp.ClientTimeout(total=5)) as r:  # fmt: skip
                doc = await r.json(content_type=None)
            if doc.get("responseCode") == 7:  # a mirror: the write belongs elsewhere
                raise SiteUnavailable("read-only mirror")
            return bool(doc.get("responseCode") == 1)

        load.write_attempts += 1
        try:
            if await fo.call(put, write=True):
                load.acked.append(handle)
        except (SiteUnavailable, aiohttp.ClientError, TimeoutError):
            await asyncio.sleep(0.05)


async def resolver(sites: list[SiteProc], load: Load, session: aiohttp.ClientSession) -> None:
    fo: Failover[SiteProc] = Failover(sites, retry_preferred=1.0)
    rng = random.Random(7)
    while not load.stop:
        handle = rng.choice(load.acked[-500:]) if load.acked else "0.NA/88.100"

        async def get(site: SiteProc, handle: str = handle) -> bool:
            url = f"http://127.0.0.1:{site.http}/api/handles/{handle}"
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=0.5)) as r:
                doc = await r.json(content_type=None)
            return bool(doc.get("responseCode") == 1)

        load.resolutions += 1
        try:
            ok = await fo.call(get)
        except (SiteUnavailable, aiohttp.ClientError, TimeoutError):
            ok = False
        now = time.monotonic()
        if ok:
            if load.last_ok:
                load.longest_gap = max(load.longest_gap, now - load.last_ok)
            load.last_ok = now
        else:
            load.failed += 1
        await asyncio.sleep(0.005)


async def run(cycles: int, seed: int, root: Path) -> dict[str, Any]:
    rng = random.Random(seed)
    a = setup(root, "chongqing")
    b = setup(root, "chengdu")
    configure(a, b, "primary", 3.0)
    configure(b, a, "mirror", 3.0)
    sites = [a, b]
    out: dict[str, Any] = {"cycles": cycles}
    try:
        a.start()
        b.start()
        await wait_for(in_step(a, b), 30, "the mirror to copy the primary")
        load = Load()
        connector = aiohttp.TCPConnector(limit=64, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            tasks = [asyncio.ensure_future(writer(n, sites, load, session)) for n in range(4)]
            tasks += [asyncio.ensure_future(resolver(sites, load, session)) for _ in range(4)]
            primary, mirror = a, b
            try:
                await asyncio.sleep(1.0)
                for c in range(cycles):
                    await asyncio.sleep(rng.uniform(0.3, 2.0))
                    primary.kill(signal.SIGKILL)
                    reply = await admin.promote_node(mirror.repl_addr, SECRET, timeout=5.0)
                    primary.start()  # rejoins as mirror of the new primary
                    primary, mirror = mirror, primary
                    await wait_for(in_step(primary, mirror), 30, f"cycle {c}: the old primary to rejoin")
                    note = f"{mirror.name} killed, {primary.name} primary (epoch {reply['epoch']})"
                    print(f"cycle {c + 1}: {note}, {len(load.acked)} acked so far", file=sys.stderr)
                # The mirror killed and restarted under load catches up.
                mirror.kill(signal.SIGKILL)
                await asyncio.sleep(1.0)
                mirror.start()
                out["mirror_restart_catch_up_s"] = await wait_for(in_step(primary, mirror), 30, "catch-up")
                # The link cut (the mirror frozen) and healed.
                mirror.signal(signal.SIGSTOP)
                await asyncio.sleep(3.0)
                mirror.signal(signal.SIGCONT)
                out["link_heal_catch_up_s"] = await wait_for(in_step(primary, mirror), 30, "heal")
                await asyncio.sleep(0.5)
            finally:
                load.stop = True
                await asyncio.gather(*tasks, return_exceptions=True)
        for s in sites:
            s.kill(signal.SIGKILL)
        found = 0
        found_mirror = 0
        with SqliteStore(primary.dir / "idr.sqlite3") as ps, SqliteStore(mirror.dir / "idr.sqlite3") as ms:
            for h in load.acked:
                found += ps.get(normalize_key(h)) is not None
                found_mirror += ms.get(normalize_key(h)) is not None
        out.update(
            acknowledged_writes=len(load.acked),
            write_attempts=load.write_attempts,
            found_on_surviving_site=found,
            found_on_mirror=found_mirror,
            lost=len(load.acked) - found,
            resolutions=load.resolutions,
            resolutions_failed=load.failed,
            longest_resolution_gap_s=round(load.longest_gap, 3),
        )
        return out
    finally:
        for s in sites:
            s.signal(signal.SIGCONT)
            s.kill(signal.SIGKILL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="idr-failover-") as tmp:
        try:
            res = asyncio.run(run(args.cycles, args.seed, Path(tmp)))
        except RuntimeError as e:
            for log in sorted(Path(tmp).glob("*.log")):
                sys.stderr.write(f"--- {log.name} (tail)\n{log.read_text(errors='replace')[-3000:]}\n")
            sys.exit(f"failover bench failed: {e}")
    if args.json:
        print(json.dumps(res))
        return
    print(f"kill cycles (SIGKILL primary, promote mirror, restart as mirror): {res['cycles']}")
    print(f"acknowledged writes: {res['acknowledged_writes']} (of {res['write_attempts']} attempted)")
    print(f"acknowledged writes found on the surviving site: {res['found_on_surviving_site']}"
          f"  lost: {res['lost']}  (also on its mirror: {res['found_on_mirror']})")  # fmt: skip
    print(f"resolutions attempted: {res['resolutions']}  failed: {res['resolutions_failed']}")
    print(f"longest gap in successful resolutions: {res['longest_resolution_gap_s']:.3f} s (target < 2 s)")
    print(f"mirror SIGKILLed and restarted under load: caught up in {res['mirror_restart_catch_up_s']:.2f} s")
    print(f"link cut 3 s (mirror stopped) and healed: caught up in {res['link_heal_catch_up_s']:.2f} s")
    sys.exit(0 if res["lost"] == 0 else 1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
