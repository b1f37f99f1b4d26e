"""The seeds' scale on one machine: the top node and its mirror, 56 secondary nodes, enterprise
nodes, tens of thousands of enterprise prefixes through their real lifecycle, identifiers under
them, and a Zipf resolution load through one and then two recursive nodes.

    python bench/federation_scale.py                      # 400 → 4,000 → 40,000 prefixes
    python bench/federation_scale.py --small              # what the test suite runs
    python bench/federation_scale.py --sizes 400,4000 --secondaries 56 --ids 100 --seconds 10

Design (stated, as the issue asks):

* Every node is assembled by ``idr.node.Node`` from its own data directory (``init_node`` +
  ``idr.toml`` + ``federation.toml``), as ``idr serve`` does; SQLite stores, fsync on.
* Processes: the Chongqing top (primary) and the Chengdu mirror (sync replication) each in a
  process of their own; the secondary nodes ``--secondary-procs`` to a process (several
  nodes per process, each with its own listeners, store and writer thread: 2 cores cannot
  run 56 interpreters usefully); the enterprise nodes in one process; each recursive node in
  a process of its own; ``--clients`` load processes. The driver (this process) talks to
  each host process over its stdin/stdout (one JSON command per line).
* Prefixes ``88.<100+s>.<n>`` spread round-robin over the secondaries. Each goes through the
  secondary's real HTTPS lifecycle API: ``POST /api/federation/applications`` (enterprise,
  valid unified social credit code, contact, the applicant's admin secret) then
  ``POST /api/federation/applications/<id>/approve`` as the secondary's admin, which
  allocates, homes it at the secondary (托管) and files it with the top over HTTPS
  (``idr.resolver.filing``). The secondaries' gate on applications per source network
  (``[http] applications_per_source``) is lifted: every application comes from the driver's
  one address. One prefix in ``--own-node-every`` is then delegated to an
  enterprise node of its own (``PrefixRegistry.delegate``; the enterprise node homes it).
* ``--ids`` identifiers per prefix, registered where the prefix lives through the bulk write
  path ``idr import`` uses (``NodeService.import_records``: one logged transaction per 10,000)
  — per-request registration of millions on 2 cores would not fit the time bound.
* Resolution: handles drawn Zipf(s = ``--zipf``) over prefixes (ranked in a shuffled order)
  and Zipf over identifiers within a prefix; each load process sends pre-encoded Handle
  resolution requests over UDP, ``--window`` in flight, for ``--seconds``: first all to one
  recursive node, then split over two. The recursive nodes keep their caches from size to size
  (as a running federation would), and before each size's measured phases ``--warmup``
  seconds of the same load go to both, unmeasured: in a 10-second phase most requests
  for a newly grown federation are first requests (about 205 of 1,000 at 40,000 prefixes
  and 3,000/s under Zipf 1.1), which no cache can answer; the warm-up makes the figures
  closer to a running node's. ``--warmup 0`` measures from cold, as runs before it did.

Figures, at each size: filing rate (prefixes through apply → approve → file per second, all
secondaries at once, ``--concurrency`` lifecycles in flight), registration rate (identifiers
per second, all nodes at once), resolutions/s through the recursive nodes, their cache hit
ratio (answers served without a walk), queries answered by the top per 1,000 resolutions,
p50/p99 latency at the clients, and memory per role (RSS of each process; per node where a
process hosts several). Memory figures include each process's Python interpreter and idr's
modules (about 60–80 MiB per process), shared by the nodes of a host process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import contextlib
import json
import os
import random
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

REQUEST_TIMEOUT = 3.0
BATCH = 10_000

# ============================================================================ host processes


class Host:
    """Nodes of one process, started from specs the driver sends, and the commands on them."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.nodes: dict[str, Any] = {}  # key → idr.demo.RunningNode

    async def start(self, spec: dict[str, Any]) -> dict[str, Any]:
        from idr.core.config import ReplicationConfig
        from idr.core.federation import FederationSettings
        from idr.demo import start_node

        fed = FederationSettings(root=spec["root"], root_names=spec.get("root_names", []))
        if spec.get("top_url"):
            fed.top_url = spec["top_url"]
            fed.top_identity = f"300:0.NA/{spec['prefix']}"
            fed.top_secret = spec["secret"]
            fed.top_cafile = spec["top_cafile"]
        repl = ReplicationConfig(**spec["replication"]) if spec.get("replication") else None
        if spec["role"] in ("secondary", "top"):
            # Every application comes from the driver's one address: the gate on anonymous
            # applications per source network ([http] applications_per_source) is lifted, as an
            # operator whose enterprise portal forwards applications from one address would.
            # The 56 secondaries all reach the top from 127.0.0.1, each keeping its HTTPS
            # connections for filings and reports (idr.resolver.filing.ParentLink): the top's
            # connections per address ([http] max_connections_per_source, 64) are raised, as
            # the secondaries' own addresses would differ.
            from idr.cli.node import init_node
            from idr.core.config import NodeConfig

            data = self.base / spec["key"]
            native, http, https = (f"127.0.0.1:{p}" for p in spec["ports"])
            init_node(data, spec["prefix"], secret=spec["secret"], role=spec["role"], https=https, http=http,
                      native=native)  # fmt: skip
            cfg = NodeConfig.load(data)
            if spec["role"] == "secondary":
                cfg.http_limits.applications_per_source = 1_000_000_000
            else:
                cfg.http_limits.max_connections_per_source = 1024
            cfg.save()
        node = await start_node(
            self.base,
            spec["key"],
            spec["name"],
            spec["role"],
            spec["prefix"],
            spec["secret"],
            ports=(spec["ports"][0], spec["ports"][1], spec["ports"][2]),
            replication=repl,
            federation=fed,
        )
        self.nodes[spec["key"]] = node
        return {"site": _site_hex(node.site), "https": node.https[1], "native": node.native[1]}

    async def command(self, cmd: dict[str, Any]) -> Any:
        op = cmd["op"]
        if op == "start":
            return await self.start(cmd["spec"])
        if op == "publish":  # the top: 0.NA/<prefix> of each secondary (what `federation join` writes)
            from idr.demo import publish_prefix

            top = self.nodes[cmd["key"]]
            for prefix, site, secret in cmd["prefixes"]:
                await publish_prefix(top, prefix, [_site(site)], admin_secret=secret, derived=True)
            return len(cmd["prefixes"])
        if op == "publish_sites":
            from idr.demo import publish_service_sites

            await publish_service_sites(self.nodes[cmd["key"]], [_site(s) for s in cmd["sites"]])
            return True
        if op == "delegate":  # the secondary: an enterprise's prefix to its own node
            from idr.core.prefixes import PrefixRegistry

            sec = self.nodes[cmd["key"]]
            reg = PrefixRegistry(sec.federated, sec.prefix)
            await reg.delegate(cmd["prefix"], [_site(cmd["site"])], sec.admin)
            return True
        if op == "home":  # an enterprise node takes a further prefix
            from idr.core.request import Op, Request

            node = self.nodes[cmd["key"]]
            resp = await node.service.submit(Request(Op.HOME_NA, cmd["prefix"], identity=node.admin))
            if not resp.ok:
                raise RuntimeError(f"homing {cmd['prefix']}: {resp.code.name} {resp.message}")
            return True
        if op == "register":
            return await self.register(cmd["work"], cmd["ids"])
        if op == "stats":
            return self.stats()
        if op == "filings":  # the top's register (备案): how many prefixes it holds
            from idr.core.prefixes import FilingRegister

            return len(FilingRegister(self.nodes[cmd["key"]].federated).filings())
        if op == "mirrors":
            rep = self.nodes[cmd["key"]].node.replicator
            return int(rep.status()["mirrors"]) if rep is not None else 0
        if op == "cache_off":  # a recursive node without its answer cache (not used by default)
            return True
        raise ValueError(f"unknown command {op}")

    async def register(self, work: Sequence[tuple[str, str]], ids: int) -> dict[str, Any]:
        """``ids`` identifiers under each (node key, prefix), bulk, one batch at a time."""
        from idr.model.value import HandleRecord, HandleValue

        t0 = time.perf_counter()
        n = 0
        pending: dict[str, list[Any]] = {}
        for key, prefix in work:
            batch = pending.setdefault(key, [])
            for i in range(ids):
                h = f"{prefix}/ID-{i}"
                batch.append(HandleRecord(h, (HandleValue(1, "URL", f"https://ent.example/{h}".encode()),)))
            if len(batch) >= BATCH:
                n += await self.nodes[key].service.import_records(batch, actor="bench")
                pending[key] = []
        for key, batch in pending.items():
            if batch:
                n += await self.nodes[key].service.import_records(batch, actor="bench")
        return {"registered": n, "seconds": time.perf_counter() - t0}

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rss": _rss(os.getpid()), "nodes": {}}
        for key, node in self.nodes.items():
            s: dict[str, Any] = {"answered": node.node.tallies.overall().resolutions}
            resolver = getattr(node.service, "resolver", None)
            if resolver is not None:
                s.update(resolver.counters)
                s["cached_answers"] = len(resolver.answers._data)
                s["cached_services"] = len(resolver.services._data)
            out["nodes"][key] = s
        return out


def _site_hex(site: Any) -> str:
    from idr.codec.site import encode_site

    return encode_site(site).hex()


def _site(text: str) -> Any:
    from idr.codec.site import decode_site

    return decode_site(bytes.fromhex(text))


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def host_main(base: Path) -> None:
    """A host process: one JSON command per stdin line, one JSON answer per stdout line."""
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    host = Host(base)
    loop = asyncio.get_running_loop()
    out = sys.stdout
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            cmd = json.loads(line)
            try:
                result = {"ok": await host.command(cmd)}
            except Exception as e:  # reported to the driver, which stops the run
                result = {"error": f"{type(e).__name__}: {e}"}
            out.write(json.dumps(result) + "\n")
            out.flush()
    finally:
        for n in reversed(list(host.nodes.values())):
            with contextlib.suppress(Exception):
                await n.node.stop()
            with contextlib.suppress(Exception):
                n.node.close()


class HostProc:
    """The driver's handle on a host process."""

    def __init__(self, name: str, base: Path) -> None:
        self.name = name
        log = (base / f"{name}.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--host", str(base)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
        )
        self.lock = asyncio.Lock()

    async def call(self, op: str, **kw: Any) -> Any:
        async with self.lock:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write((json.dumps({"op": op, **kw}) + "\n").encode())
            self.proc.stdin.flush()
            line = await asyncio.get_running_loop().run_in_executor(None, self.proc.stdout.readline)
        if not line:
            raise RuntimeError(f"host {self.name} exited (see its log)")
        doc = json.loads(line)
        if "error" in doc:
            raise RuntimeError(f"host {self.name}: {op}: {doc['error']}")
        return doc["ok"]

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


# ============================================================================ load processes


def zipf_cum(n: int, s: float) -> list[float]:
    total = 0.0
    out = []
    for k in range(1, n + 1):
        total += 1.0 / k**s
        out.append(total)
    return out


def load_main(args: argparse.Namespace) -> None:
    """One client process: Zipf-drawn resolutions over UDP to its recursive nodes."""
    from idr.codec.bodies import ResolutionRequest
    from idr.codec.envelope import OpCode
    from idr.codec.message import encode_message
    from idr.resolver.client import build_request

    spec = json.loads(sys.stdin.readline())
    prefixes: list[str] = spec["prefixes"]
    rng = random.Random(spec["seed"])
    order = list(range(len(prefixes)))
    random.Random(7).shuffle(order)  # popularity not tied to the secondary or the number
    pcum = zipf_cum(len(prefixes), spec["zipf"])
    icum = zipf_cum(spec["ids"], spec["zipf"])
    draws = 50_000
    handles = []
    for _ in range(draws):
        p = prefixes[order[bisect.bisect_left(pcum, rng.random() * pcum[-1])]]
        i = bisect.bisect_left(icum, rng.random() * icum[-1])
        handles.append(f"{p}/ID-{i}")
    reqs = [
        bytearray(encode_message(build_request(OpCode.RESOLUTION, ResolutionRequest(h, (), ()))))
        for h in handles
    ]
    socks = []
    for port in spec["targets"]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        socks.append(sock)
    window, seconds = spec["window"], spec["seconds"]
    sent: dict[int, float] = {}
    lat: list[float] = []
    ok = bad = lost = 0
    rid = 1
    k = 0
    import selectors

    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    start = time.perf_counter()
    end = start + seconds
    while True:
        now = time.perf_counter()
        if now >= end and not sent:
            break
        while now < end and len(sent) < window:
            req = reqs[k % draws]
            k += 1
            rid = rid % 0x7FFFFFFF + 1
            struct.pack_into(">I", req, 8, rid)  # the envelope's request id
            socks[k % len(socks)].send(req)
            sent[rid] = now
        for ready, _ in sel.select(timeout=0.05):
            rsock = ready.fileobj
            assert isinstance(rsock, socket.socket)
            while True:
                try:
                    data = rsock.recv(65536)
                except BlockingIOError:
                    break
                if len(data) < 24:
                    continue
                (got,) = struct.unpack_from(">I", data, 8)
                t = sent.pop(got, None)
                if t is None:
                    continue
                lat.append(time.perf_counter() - t)
                (code,) = struct.unpack_from(">I", data, 24)
                if code == 1:
                    ok += 1
                else:
                    bad += 1
        now = time.perf_counter()
        for r, t in list(sent.items()):
            if now - t > REQUEST_TIMEOUT:
                del sent[r]
                lost += 1
        if now > end + REQUEST_TIMEOUT + 1:
            lost += len(sent)
            break
    elapsed = min(time.perf_counter(), end) - start
    lat.sort()
    sys.stdout.write(
        json.dumps(
            {"ok": ok, "bad": bad, "lost": lost, "seconds": elapsed, "lat": lat[:: max(1, len(lat) // 20000)]}
        )
        + "\n"
    )


# ============================================================================ the driver


def uscc(n: int) -> str:
    from idr.core.prefixes import uscc_check_char

    first = f"91510100{n:09d}"
    return first + uscc_check_char(first)


def free_ports(k: int, taken: set[int], udp: bool = False) -> list[int]:
    from idr.demo import pick_port

    return [pick_port(0, udp_too=udp, taken=taken) for _ in range(k)]


class Federation:
    def __init__(self, args: argparse.Namespace, base: Path) -> None:
        self.args = args
        self.base = base
        self.hosts: dict[str, HostProc] = {}
        self.taken: set[int] = set()
        self.secondaries: list[dict[str, Any]] = []  # key, prefix, secret, https, host, next n
        self.enterprises: list[dict[str, Any]] = []
        self.recursive: list[int] = []  # native ports
        self.filed: list[str] = []  # prefixes through the lifecycle
        self.where: dict[str, tuple[str, str]] = {}  # prefix → (host, node key) holding its ids
        self.ssl = ssl.create_default_context()
        self.ssl.check_hostname = False
        self.ssl.verify_mode = ssl.CERT_NONE

    def ports(self) -> list[int]:
        return [free_ports(1, self.taken, udp=True)[0], *free_ports(2, self.taken)]

    def host(self, name: str) -> HostProc:
        if name not in self.hosts:
            self.hosts[name] = HostProc(name, self.base)
        return self.hosts[name]

    async def start(self) -> None:
        a = self.args
        from idr.core.secret_policy import generate_link_secret

        top_ports, mirror_ports = self.ports(), self.ports()
        repl = [f"127.0.0.1:{p}" for p in free_ports(2, self.taken)]
        root = [f"127.0.0.1:{top_ports[0]}", f"127.0.0.1:{mirror_ports[0]}"]
        names = ["Chongqing top-level node (primary)", "Chengdu top-level node (mirror)"]
        key = generate_link_secret()
        self.root = root
        sites = []
        for i, (hk, ports) in enumerate((("top-cq", top_ports), ("top-cd", mirror_ports))):
            spec: dict[str, Any] = {
                "key": hk, "name": names[i], "role": "top", "prefix": "0.NA", "secret": "top-bench-secret",
                "ports": ports, "root": root, "root_names": names,
                "replication": {
                    "listen": repl[i], "peers": [repl[1 - i]], "secret": key, "mode": "sync",
                    "role": "primary" if i == 0 else "mirror",
                },
            }  # fmt: skip
            sites.append((await self.host(hk).call("start", spec=spec))["site"])
        await self.wait_mirror()
        await self.host("top-cq").call("publish_sites", key="top-cq", sites=sites)
        top_https = f"https://127.0.0.1:{top_ports[2]}"
        cafile = str(self.base / "top-cq" / "tls" / "cert.pem")
        # Secondary nodes, several per host process, started host by host in parallel.
        per = a.secondary_procs
        specs: list[tuple[str, dict[str, Any]]] = []
        for s in range(a.secondaries):
            prefix = f"88.{100 + s}"
            sspec = {
                "key": f"sec-{s}", "name": f"secondary node {prefix}", "role": "secondary", "prefix": prefix,
                "secret": f"sec-bench-secret-{s}", "ports": self.ports(), "root": root, "root_names": names,
                "top_url": top_https, "top_cafile": cafile,
            }  # fmt: skip
            specs.append((f"secondaries-{s // per}", sspec))
        started = await asyncio.gather(*(self._start_group(specs, h) for h in {h for h, _ in specs}))
        by_key = {k: v for group in started for k, v in group.items()}
        publish = []
        for hname, spec in specs:
            info = by_key[spec["key"]]
            self.secondaries.append(
                {"key": spec["key"], "prefix": spec["prefix"], "secret": spec["secret"],
                 "https": info["https"], "host": hname, "next": 1}
            )  # fmt: skip
            publish.append((spec["prefix"], info["site"], spec["secret"]))
        await self.host("top-cq").call("publish", key="top-cq", prefixes=publish)
        # Enterprise nodes of their own (one host process); each homes the prefixes given it.
        for e in range(a.enterprises):
            spec = {
                "key": f"ent-{e}", "name": f"enterprise node {e}", "role": "enterprise",
                "prefix": f"88.99.{e + 1}", "secret": f"ent-bench-secret-{e}", "ports": self.ports(),
                "root": root, "root_names": names,
            }  # fmt: skip
            info = await self.host("enterprises").call("start", spec=spec)
            self.enterprises.append({"key": spec["key"], "site": info["site"]})
        # Recursive nodes, a process each.
        for r in range(2):
            spec = {
                "key": f"rec-{r}", "name": f"public recursive node {r}", "role": "recursive", "prefix": "",
                "secret": "", "ports": self.ports(), "root": root, "root_names": names,
            }  # fmt: skip
            self.recursive.append((await self.host(f"recursive-{r}").call("start", spec=spec))["native"])

    async def _start_group(self, specs: list[tuple[str, dict[str, Any]]], hname: str) -> dict[str, Any]:
        out = {}
        for h, spec in specs:
            if h == hname:
                out[spec["key"]] = await self.host(hname).call("start", spec=spec)
        return out

    async def wait_mirror(self) -> None:
        """Sync mode acknowledges a write only once the mirror holds it: wait for its link."""
        deadline = time.monotonic() + 60
        while await self.host("top-cq").call("mirrors", key="top-cq") < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the Chengdu mirror did not connect to Chongqing")
            await asyncio.sleep(0.1)

    # ---------------------------------------------------------------- growth

    async def grow(self, total: int) -> dict[str, float]:
        """Prefixes up to ``total`` through the lifecycle, then identifiers under the new ones."""
        import aiohttp

        a = self.args
        new: list[tuple[dict[str, Any], int]] = []  # (secondary, global number)
        g = len(self.filed)
        while g < total:
            new.append((self.secondaries[g % len(self.secondaries)], g))
            g += 1
        sem = asyncio.Semaphore(a.concurrency)
        filed: list[tuple[str, int]] = []
        failures: list[str] = []

        async def lifecycle(session: aiohttp.ClientSession, sec: dict[str, Any], gno: int) -> None:
            async with sem:
                n = sec["next"]
                sec["next"] += 1
                prefix = f"{sec['prefix']}.{n}"
                base = f"https://127.0.0.1:{sec['https']}/api/federation/applications"
                body = {
                    "enterprise": f"Enterprise {gno}", "uscc": uscc(gno), "contact": f"ops@e{gno}.example",
                    "secret": f"ent-admin-secret-{gno}-x", "prefix": prefix,
                }  # fmt: skip
                async with session.post(base, json=body, ssl=self.ssl) as r:
                    doc = await r.json()
                if r.status != 201:
                    failures.append(f"apply {prefix}: {doc}")
                    return
                app_id = doc["application"]["id"]
                auth = {"Authorization": _basic(f"300:0.NA/{sec['prefix']}", sec["secret"])}
                async with session.post(f"{base}/{app_id}/approve", json={}, headers=auth, ssl=self.ssl) as r:
                    doc = await r.json()
                app = doc.get("application", {})
                if r.status != 200 or not app.get("filed"):
                    failures.append(f"approve/file {prefix}: {doc}")
                    return
                filed.append((prefix, gno))

        t0 = time.perf_counter()
        conn = aiohttp.TCPConnector(limit=a.concurrency * 2)
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=120)) as session:
            await asyncio.gather(*(lifecycle(session, sec, gno) for sec, gno in new))
        filing_s = time.perf_counter() - t0
        if failures:
            raise RuntimeError(f"{len(failures)} lifecycles failed, first: {failures[0]}")
        # One in --own-node-every gets an enterprise node of its own (delegated there).
        sec_of = {s["prefix"]: s for s in self.secondaries}
        for prefix, gno in sorted(filed, key=lambda x: x[1]):
            self.filed.append(prefix)
            sec = sec_of[prefix.rsplit(".", 1)[0]]
            if self.enterprises and gno % a.own_node_every == a.own_node_every - 1:
                ent = self.enterprises[(gno // a.own_node_every) % len(self.enterprises)]
                await self.host("enterprises").call("home", key=ent["key"], prefix=prefix)
                await self.host(sec["host"]).call("delegate", key=sec["key"], prefix=prefix, site=ent["site"])
                self.where[prefix] = ("enterprises", ent["key"])
            else:
                self.where[prefix] = (sec["host"], sec["key"])
        # Identifiers: every host registers under its new prefixes at once.
        work: dict[str, list[tuple[str, str]]] = {}
        for prefix, _ in filed:
            hname, key = self.where[prefix]
            work.setdefault(hname, []).append((key, prefix))
        t0 = time.perf_counter()
        done = await asyncio.gather(
            *(self.host(h).call("register", work=w, ids=a.ids) for h, w in work.items())
        )
        reg_s = time.perf_counter() - t0
        registered = sum(d["registered"] for d in done)
        on_file = await self.host("top-cq").call("filings", key="top-cq")
        if on_file != len(self.filed):
            raise RuntimeError(f"the top's register holds {on_file} filings, not {len(self.filed)}")
        return {
            "new_prefixes": len(filed),
            "filing_rate": len(filed) / filing_s if filing_s else 0.0,
            "filing_s": filing_s,
            "registered": registered,
            "registration_rate": registered / reg_s if reg_s else 0.0,
        }

    # ---------------------------------------------------------------- resolution

    async def resolve(self, targets: Sequence[int], seconds: float | None = None) -> dict[str, float]:
        a = self.args
        before = await self.stats()
        procs = []
        for c in range(a.clients):
            p = subprocess.Popen(
                [sys.executable, __file__, "--load"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
            spec = {
                "prefixes": self.filed, "ids": a.ids, "zipf": a.zipf, "seed": 1000 + c + len(self.filed),
                "targets": [targets[(c + i) % len(targets)] for i in range(len(targets))],
                "window": a.window, "seconds": a.seconds if seconds is None else seconds,
            }  # fmt: skip
            procs.append((p, (json.dumps(spec) + "\n").encode()))
        loop = asyncio.get_running_loop()
        outs = await asyncio.gather(*(loop.run_in_executor(None, p.communicate, inp) for p, inp in procs))
        results = [json.loads(out) for out, _ in outs]
        after = await self.stats()
        ok = sum(r["ok"] for r in results)
        lat = sorted(x for r in results for x in r["lat"])
        seconds = max(r["seconds"] for r in results)

        def delta(key: str, field: str) -> int:
            return int(after[key].get(field, 0)) - int(before[key].get(field, 0))

        recs = [f"rec-{i}" for i in range(len(targets))]
        answered = sum(delta(r, "answered") for r in recs)
        walks = sum(delta(r, "resolutions") - delta(r, "cache_hits") for r in recs)
        top = delta("top-cq", "answered") + delta("top-cd", "answered")
        return {
            "resolutions_s": ok / seconds if seconds else 0.0,
            "ok": ok,
            "failed": sum(r["bad"] + r["lost"] for r in results),
            "bad": sum(r["bad"] for r in results),  # answered, but not with the values
            "lost": sum(r["lost"] for r in results),  # no answer within REQUEST_TIMEOUT (UDP)
            "hit_ratio": 1 - walks / answered if answered else 0.0,
            "top_per_1000": 1000 * top / answered if answered else 0.0,
            "p50_ms": 1000 * lat[len(lat) // 2] if lat else 0.0,
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0.0,
        }

    async def stats(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for h in self.hosts.values():
            st = await h.call("stats")
            for key, s in st["nodes"].items():
                out[key] = s
            out[f"proc:{h.name}"] = {"rss": st["rss"], "nodes": len(st["nodes"])}
        return out

    async def memory(self) -> dict[str, float]:
        st = await self.stats()
        mib = 1 << 20

        def per(prefix: str) -> tuple[float, int]:
            procs = [v for k, v in st.items() if k.startswith(f"proc:{prefix}")]
            return sum(p["rss"] for p in procs) / mib, sum(p["nodes"] for p in procs)

        out: dict[str, float] = {}
        for role, name in (("top", "top-cq"), ("mirror", "top-cd"), ("recursive", "recursive-0")):
            out[f"{role}_mib"] = per(name)[0]
        rss, n = per("secondaries")
        out["secondary_mib_per_node"] = rss / n if n else 0.0
        out["secondary_procs_mib"] = rss
        rss, n = per("enterprises")
        out["enterprise_mib_per_node"] = rss / n if n else 0.0
        out["recursive_cached_answers"] = float(st["rec-0"].get("cached_answers", 0))
        out["recursive_cached_services"] = float(st["rec-0"].get("cached_services", 0))
        return out

    def stop(self) -> None:
        for h in reversed(list(self.hosts.values())):
            h.stop()


def _basic(identity: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{quote(identity, safe='')}:{secret}".encode()).decode()


def print_row(size: int, fig: dict[str, float]) -> None:
    print(
        f"{size:>7,} prefixes | filing {fig['filing_rate']:7.1f}/s"
        f" | registration {fig['registration_rate']:9,.0f} ids/s"
        f" | 1 recursive {fig['r1_resolutions_s']:8,.0f}/s hit {fig['r1_hit_ratio']:.3f} top/1000 "
        f"{fig['r1_top_per_1000']:6.1f} p50 {fig['r1_p50_ms']:.2f} ms p99 {fig['r1_p99_ms']:.2f} ms"
        f" | 2 recursive {fig['r2_resolutions_s']:8,.0f}/s hit {fig['r2_hit_ratio']:.3f} top/1000 "
        f"{fig['r2_top_per_1000']:6.1f} p50 {fig['r2_p50_ms']:.2f} ms p99 {fig['r2_p99_ms']:.2f} ms",
        flush=True,
    )
    print(
        f"{'':>16} memory: top {fig['top_mib']:.0f} MiB, mirror {fig['mirror_mib']:.0f} MiB, "
        f"secondary {fig['secondary_mib_per_node']:.1f} MiB/node "
        f"({fig['secondary_procs_mib']:.0f} MiB in all), "
        f"enterprise {fig['enterprise_mib_per_node']:.1f} MiB/node, recursive {fig['recursive_mib']:.0f} MiB "
        f"({fig['recursive_cached_answers']:,.0f} answers, "
        f"{fig['recursive_cached_services']:,.0f} services cached)",
        flush=True,
    )


async def drive(args: argparse.Namespace) -> list[tuple[int, dict[str, float]]]:
    sizes = [int(s) for s in args.sizes.split(",")]
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="idr-fedscale-") as tmp:
        fed = Federation(args, Path(tmp))
        rows: list[tuple[int, dict[str, float]]] = []
        try:
            await fed.start()
            procs = len([h for h in fed.hosts if h.startswith("secondaries")])
            print(
                f"federation up in {time.perf_counter() - t_start:.1f} s: top + mirror, "
                f"{args.secondaries} secondary nodes in {procs} processes, "
                f"{args.enterprises} enterprise nodes, 2 recursive nodes; {args.clients} load processes",
                flush=True,
            )
            for size in sizes:
                fig = await fed.grow(size)
                if args.warmup > 0:  # not measured: the caches see the new prefixes first
                    await fed.resolve(fed.recursive[:2], seconds=args.warmup)
                for tag, targets in (("r1", fed.recursive[:1]), ("r2", fed.recursive[:2])):
                    for k, v in (await fed.resolve(targets)).items():
                        fig[f"{tag}_{k}"] = v
                fig.update(await fed.memory())
                rows.append((size, fig))
                print_row(size, fig)
                if fig["r1_failed"] or fig["r2_failed"]:
                    print(f"{'':>16} failed or lost answers: {fig['r1_failed']:.0f} / {fig['r2_failed']:.0f}")
        finally:
            fed.stop()
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        print(f"from {first[0]:,} to {last[0]:,} prefixes (last / first):")
        for k in ("filing_rate", "registration_rate", "r1_resolutions_s", "r2_resolutions_s", "r1_p99_ms",
                  "recursive_mib", "top_mib", "secondary_mib_per_node"):  # fmt: skip
            if first[1][k]:
                print(f"  {k}: {first[1][k]:,.2f} → {last[1][k]:,.2f} ({last[1][k] / first[1][k]:.2f}×)")
    print(f"total {time.perf_counter() - t_start:.0f} s")
    if args.json:
        print(json.dumps([{"prefixes": size, **fig} for size, fig in rows]))
    return rows


def main(argv: Sequence[str] | None = None) -> list[tuple[int, dict[str, float]]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="400,4000,40000", help="prefix counts, growing")
    p.add_argument("--secondaries", type=int, default=56)
    p.add_argument("--secondary-procs", type=int, default=14, help="secondary nodes per host process")
    p.add_argument("--enterprises", type=int, default=8, help="enterprise nodes (one process)")
    p.add_argument("--own-node-every", type=int, default=100, help="1 prefix in N on an enterprise node")
    p.add_argument("--ids", type=int, default=100, help="identifiers per prefix")
    p.add_argument("--concurrency", type=int, default=16, help="lifecycles in flight")
    p.add_argument("--clients", type=int, default=2, help="load processes")
    p.add_argument("--window", type=int, default=64, help="requests in flight per load process")
    p.add_argument("--seconds", type=float, default=10.0, help="per resolution phase")
    p.add_argument("--zipf", type=float, default=1.1)
    p.add_argument("--warmup", type=float, default=10.0, help="unmeasured load (s) before each size's phases")
    p.add_argument("--small", action="store_true", help="the test suite's size")
    p.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    p.add_argument("--host", help=argparse.SUPPRESS)
    p.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.host:
        asyncio.run(host_main(Path(args.host)))
        return []
    if args.load:
        load_main(args)
        return []
    if args.small:
        args.sizes, args.secondaries, args.secondary_procs, args.enterprises = "20,40", 4, 2, 2
        args.own_node_every, args.ids, args.seconds, args.clients, args.window = 10, 10, 1.5, 1, 16
        args.warmup = 0.0  # from cold: the test sees walks reach the top
    return asyncio.run(drive(args))


if __name__ == "__main__":
    main()
