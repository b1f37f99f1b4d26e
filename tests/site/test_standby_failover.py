"""A site server on a PostgreSQL primary with a synchronous streaming standby loses its
primary (``kill -9`` of the postmaster) and carries on against the promoted standby, with no
idr failover code: ``idr.toml`` holds a libpq multi-host DSN (``host=a,b port=p,q
target_session_attrs=read-write``) and the store's pool reconnects (``idr.store.postgres``).

The site has two servers: server 0 on the primary/standby pair, server 1 on SQLite (it holds
the admin identity, ``0.NA/88.100`` hashes to it). The HA manager that would promote the
standby (Debian's pg_auto_failover) is stood in for by ``pg_ctl promote`` after an outage
longer than the store's connection timeout (10 s), so that requests waiting for a connection
run out during it. What the test proves, in docs/postgres.md ("Failover to a streaming
standby") with the figures it prints:

- every write acknowledged before, during and after the failover is on the promoted server
  and served by idr (synchronous_standby_names: acknowledged means on both);
- during the outage, a write gets 503 / SERVER_TOO_BUSY within the connection timeout (plus
  0.5 s per write queued ahead of it), never a 500, a traceback or a hang; cached reads of
  server 0's share and server 1's whole share (writes too) are answered;
- writes resume within ``RESUME_BOUND_S`` of the promotion.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from idr.core.secret_policy import generate_link_secret
from idr.core.site import ServerSpec
from idr.model.errors import ResponseCode
from idr.model.site import SiteInfo
from idr.resolver.client import HandleClient
from idr.server.server_key import SERVER_KEY_NAME
from tests.procs import ServeProc, free_port, idr
from tests.store.pgcluster import PgCluster, start_cluster

PREFIX = "88.100"
ADMIN = "300:0.NA/88.100"
SECRET = "site-admin-secret-1"
STORE_TIMEOUT_S = 10.0  # PostgresStore's default: how long a request waits for a connection
DOWN_WAIT_S = 0.5  # … and once the store is known to be down
OUTAGE_S = STORE_TIMEOUT_S + 2.0  # the HA manager's detection time, stood in for
RESUME_BOUND_S = 5.0  # promotion → first acknowledged write started after it
WRITERS = 3  # clients writing at once: their writes wait in the node's write queue together


@dataclass
class Attempt:
    handle: str
    start: float
    end: float
    status: int
    code: int


def _put(node: ServeProc, handle: str) -> tuple[int, int]:
    body = {"values": [{"index": 1, "type": "URL", "data": {"format": "string", "value": f"u:{handle}"}}]}
    status, doc = node.call("PUT", f"/api/handles/{handle}", body, auth=(ADMIN, SECRET), timeout=30.0)
    assert isinstance(doc, dict), (status, doc)  # a JSON answer, whatever happened
    return status, int(doc.get("responseCode", 0))


def _kill_postmaster(cluster: PgCluster) -> None:
    """The primary's machine dies: SIGKILL to the postmaster (its backends exit on its death)."""
    pid = int((cluster.data / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    cluster.running = False


def _wait_sync(primary: PgCluster, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(primary.dsn(), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
        conn.execute("SELECT pg_reload_conf()")
        while time.monotonic() < deadline:
            rows = conn.execute("SELECT sync_state FROM pg_stat_replication").fetchall()
            if rows == [("sync",)]:
                return
            time.sleep(0.05)
    raise AssertionError(f"the standby did not become synchronous in {timeout} s")


@pytest.fixture
def pg_pair() -> Iterator[tuple[PgCluster, PgCluster]]:
    """A primary and its streaming standby (``pg_basebackup -R``), commits synchronous."""
    primary = start_cluster(shared_buffers="32MB", max_connections="50")
    standby: PgCluster | None = None
    try:
        standby = primary.standby()
        # Once promoted and alone, the standby must not wait for a standby of its own: the
        # HA manager's job (pg_auto_failover clears synchronous_standby_names when a pair is
        # down to one node); here it is configured so from the start.
        standby.stop()
        with (standby.data / "postgresql.conf").open("a", encoding="utf-8") as f:
            f.write("synchronous_standby_names = ''\n")
        standby.start()
        _wait_sync(primary)
        yield primary, standby
    finally:
        if standby is not None:
            standby.destroy()
        primary.destroy()


def test_site_server_survives_losing_its_primary(
    tmp_path: Path, pg_pair: tuple[PgCluster, PgCluster]
) -> None:
    primary, standby = pg_pair
    dsn = (
        f"host=127.0.0.1,127.0.0.1 port={primary.port},{standby.port} user=postgres dbname=postgres "
        "target_session_attrs=read-write connect_timeout=2"
    )
    specs = [
        ServerSpec("127.0.0.1", free_port(udp_too=True), free_port(), free_port(), free_port()) for _ in "01"
    ]
    site_args = [a for s in specs for a in ("--site-server", str(s))]
    link_key = generate_link_secret()
    nodes: list[ServeProc] = []
    try:
        for i, (spec, store) in enumerate(
            zip(specs, (["--store", "postgres", "--dsn", dsn], []), strict=True)
        ):
            data = tmp_path / f"s{i}"
            shared_key = ["--server-key", str(nodes[0].data / SERVER_KEY_NAME)] if nodes else []
            idr(
                "init", "--data", str(data), "--prefix", PREFIX, "--admin-secret", SECRET, *store,
                "--site-servers", "2", "--site-index", str(i), *site_args, "--site-secret", link_key,
                *shared_key,
            )  # fmt: skip
            nodes.append(ServeProc(data, https=spec.https, http=spec.http, native=spec.native))
        for n in nodes:
            n.start()
        _failover(nodes, primary, standby)
    finally:
        for n in nodes:
            n.stop()


def _failover(nodes: list[ServeProc], primary: PgCluster, standby: PgCluster) -> None:
    async def site_info() -> SiteInfo:
        async with HandleClient("127.0.0.1", nodes[0].native, timeout=5.0) as c:
            return await c.site_info()

    info = asyncio.run(site_info())

    def owner(handle: str) -> int:
        return info.servers.index(info.server_for(handle))

    assert owner("0.NA/88.100") == 1  # the admin identity stays reachable during the outage
    names = (f"{PREFIX}/w-{i}" for i in range(100_000))
    ours = (h for h in names if owner(h) == 0)
    taking = threading.Lock()  # the writers share ``ours``
    theirs = [h for h in (f"{PREFIX}/o-{i}" for i in range(40)) if owner(h) == 1][:2]

    cached = next(ours)
    assert _put(nodes[0], cached) == (200, 1)
    assert nodes[0].resolve_native(cached, "udp")[0] == ResponseCode.SUCCESS  # now in its caches

    attempts: list[Attempt] = []
    stop = threading.Event()

    def writer() -> None:  # a client writing server 0's share, one write at a time
        while not stop.is_set():
            with taking:
                h = next(ours)
            t0 = time.monotonic()
            status, code = _put(nodes[0], h)
            attempts.append(Attempt(h, t0, time.monotonic(), status, code))

    threads = [threading.Thread(target=writer, daemon=True) for _ in range(WRITERS)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 30
        while sum(a.status == 200 for a in attempts) < 30:
            assert time.monotonic() < deadline and all(t.is_alive() for t in threads), attempts[-3:]
            time.sleep(0.02)

        t_kill = time.monotonic()
        _kill_postmaster(primary)
        # The outage: server 0's cached answers and server 1's share (reads and writes) go on.
        time.sleep(1.0)
        code, values = nodes[0].resolve_native(cached, "udp")
        assert code == ResponseCode.SUCCESS and values[0][2] == f"u:{cached}".encode()
        assert _put(nodes[1], theirs[0]) == (200, 1)
        assert nodes[1].resolve_native(theirs[0], "tcp")[0] == ResponseCode.SUCCESS
        time.sleep(max(0.0, t_kill + OUTAGE_S - time.monotonic()))

        t_promote = time.monotonic()
        standby._run("pg_ctl", "-D", str(standby.data), "-w", "-t", "30", "promote")
        deadline = t_promote + 30
        while not any(a.start > t_promote and a.status == 200 for a in attempts):
            assert time.monotonic() < deadline and all(t.is_alive() for t in threads), attempts[-3:]
            time.sleep(0.02)
        time.sleep(0.5)  # a few more writes on the promoted server
    finally:
        stop.set()
        for t in threads:
            t.join(40)
    assert not any(t.is_alive() for t in threads)

    acked = [a.handle for a in attempts if a.status == 200] + [cached]
    failed = [a for a in attempts if a.status != 200]
    # Failed writes are 503 SERVER_TOO_BUSY, each within the connection timeout (+ margin: the
    # writes queued behind the first wait 0.5 s each once the store is known to be down).
    assert failed, "no write was refused during an outage longer than the store's timeout"
    assert {(a.status, a.code) for a in failed} == {(503, ResponseCode.SERVER_TOO_BUSY)}, failed
    assert max(a.end - a.start for a in failed) < STORE_TIMEOUT_S + WRITERS * DOWN_WAIT_S + 2.0, failed
    assert all(t_kill - 1 < a.start < t_promote + 1 for a in failed), (failed, t_kill, t_promote)
    resumed = min(a.end for a in attempts if a.start > t_promote and a.status == 200) - t_promote
    first_ack = min(a.end for a in attempts if a.end > t_promote and a.status == 200) - t_promote
    assert resumed < RESUME_BOUND_S, resumed

    # Every acknowledged write is on the promoted server and served by idr.
    with psycopg.connect(standby.dsn()) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        stored = {str(r[0]) for r in conn.execute("SELECT handle FROM handles").fetchall()}
    lost = [h for h in acked if h not in stored]
    assert lost == []
    for h in acked[-5:] + acked[:5]:
        status, doc = nodes[1].get(f"/api/handles/{h}")  # relayed to server 0
        assert status == 200 and doc["values"][0]["data"]["value"] == f"u:{h}", doc
    assert _put(nodes[1], theirs[1]) == (200, 1)
    for n in nodes:
        assert "Traceback" not in (n.data.parent / f"{n.data.name}.log").read_text(errors="replace")
    print(
        f"\nfailover: {len(acked)} writes acknowledged, lost 0; {len(failed)} refused with 503 "
        f"during the {OUTAGE_S:.0f} s outage (longest wait {max(a.end - a.start for a in failed):.1f} s); "
        f"first acknowledgement {first_ack:.2f} s after the promotion, a write started after it "
        f"acknowledged in {resumed:.2f} s"
    )
