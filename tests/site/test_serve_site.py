"""A site of four ``idr serve`` processes, each on its own PostgreSQL server, set up the way an
operator does it: ``idr init --site-servers 4 --site-index I --site-server …`` (the first
server's key pair given to the others), then ``idr serve``. Every server holds the handles
the protocol's hash gives it; idr's CLI client, told 301 by the wrong server, asks the one
the hash names; HTTP clients (pyhandle's way) reach the owner through any server; ``idr
import`` of one file on every server loads each handle once, where the hash puts it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from idr.core.secret_policy import generate_link_secret
from idr.core.site import ServerSpec
from idr.model.errors import ResponseCode
from idr.model.site import SiteInfo, TransportProtocol
from idr.resolver.client import HandleClient
from idr.server.server_key import SERVER_KEY_NAME
from tests.procs import ServeProc, free_port, idr
from tests.store.pgcluster import PgCluster, start_cluster

PREFIX = "88.100"
ADMIN = "300:0.NA/88.100"
SECRET = "site-admin-secret-1"
SERVERS = 4


@pytest.fixture
def pg_servers() -> Iterator[list[PgCluster]]:
    clusters: list[PgCluster] = []
    try:
        for _ in range(SERVERS):
            clusters.append(start_cluster(shared_buffers="32MB", max_connections="50"))
        yield clusters
    finally:
        for c in clusters:
            c.destroy()


def _handles_in(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT handle FROM handles").fetchall()
    return {str(r[0]) for r in rows}


@pytest.fixture
def site(tmp_path: Path, pg_servers: list[PgCluster]) -> Iterator[tuple[list[ServeProc], SiteInfo]]:
    specs = [
        ServerSpec("127.0.0.1", free_port(udp_too=True), free_port(), free_port(), free_port())
        for _ in range(SERVERS)
    ]
    link_key = generate_link_secret()
    procs: list[ServeProc] = []
    try:
        for i, spec in enumerate(specs):
            data = tmp_path / f"s{i}"
            shared_key = ["--server-key", str(procs[0].data / SERVER_KEY_NAME)] if procs else []
            site_args = [a for s in specs for a in ("--site-server", str(s))]
            idr(
                "init", "--data", str(data), "--prefix", PREFIX, "--admin-secret", SECRET,
                "--store", "postgres", "--dsn", pg_servers[i].dsn(),
                "--site-servers", str(SERVERS), "--site-index", str(i), *site_args,
                "--site-secret", link_key, *shared_key,
            )  # fmt: skip
            procs.append(ServeProc(data, https=spec.https, http=spec.http, native=spec.native))
        for p in procs:
            p.start()

        async def site_info() -> SiteInfo:
            async with HandleClient("127.0.0.1", specs[0].native, timeout=5.0) as c:
                return await c.site_info()

        yield procs, asyncio.run(site_info())
    finally:
        for p in procs:
            p.stop()


def owner(info: SiteInfo, handle: str) -> int:
    return info.servers.index(info.server_for(handle))


def test_four_servers_on_postgres_each_hold_their_share(
    site: tuple[list[ServeProc], SiteInfo], pg_servers: list[PgCluster], tmp_path: Path
) -> None:
    procs, info = site
    published = [(s.host, s.port_for(TransportProtocol.TCP)) for s in info.servers]
    assert published == [("127.0.0.1", p.native) for p in procs]
    # What `idr federation site --data` prints (and `federation join` writes at the parent):
    # the whole site, as every server publishes it.
    configured = json.loads(idr("federation", "site", "--data", str(procs[1].data), "--json").stdout)
    ports = [[i["port"] for i in s["interfaces"] if i["protocol"] == "TCP"] for s in configured["servers"]]
    assert ports == [[p.native] for p in procs]
    # The prefix handle (the admin's identity) lives on one server only.
    ph = owner(info, "0.NA/88.100")
    assert [("0.NA/88.100" in _handles_in(c.dsn())) for c in pg_servers] == [i == ph for i in range(SERVERS)]

    # idr's CLI, pointed at one server for every handle: a 301 from the wrong one sends it to
    # the server the hash names (writes authenticate an identity another server holds).
    handles = [f"88.100/cli-{i}" for i in range(8)]
    assert len({owner(info, h) for h in handles}) > 1
    for h in handles:
        idr(
            "create", h, "--value", f"1:URL:https://example.org/{h}", "--auth", ADMIN, "--secret", SECRET,
            "--server", f"127.0.0.1:{procs[0].native}",
        )  # fmt: skip
        out = idr("resolve", h, "--json", "--server", f"127.0.0.1:{procs[2].native}").stdout
        assert json.loads(out)["values"][0]["data"]["value"] == f"https://example.org/{h}", out
    for h in handles:
        o = owner(info, h)
        assert [(h in _handles_in(c.dsn())) for c in pg_servers] == [i == o for i in range(SERVERS)]
        # The Handle protocol's answer from a server the hash does not name, over UDP and TCP.
        wrong = procs[(o + 1) % SERVERS]
        for transport in ("udp", "tcp"):
            code, values = wrong.resolve_native(h, transport)
            assert (code, values) == (ResponseCode.SERVER_NOT_RESPONSIBLE, [])
        code, values = procs[o].resolve_native(h, "udp")
        assert code == ResponseCode.SUCCESS and values[0][2] == f"https://example.org/{h}".encode()

    # HTTP clients do not hash: any server's REST API reaches the owner (writes and reads).
    rest = [f"88.100/rest-{i}" for i in range(8)]
    for n, h in enumerate(rest):
        body = {"values": [{"index": 1, "type": "URL", "data": {"format": "string", "value": f"u:{h}"}}]}
        status, doc = procs[n % SERVERS].call("PUT", f"/api/handles/{h}", body, auth=(ADMIN, SECRET))
        assert status in (200, 201) and doc["responseCode"] == 1, doc
        status, doc = procs[(n + 1) % SERVERS].get(f"/api/handles/{h}")
        assert status == 200 and doc["values"][0]["data"]["value"] == f"u:{h}", doc
        assert procs[owner(info, h)].resolve_native(h, "tcp")[0] == ResponseCode.SUCCESS
    status, doc = procs[3].call("GET", "/api/handles?prefix=88.100", auth=(ADMIN, SECRET), timeout=20.0)
    assert status == 200 and sorted(doc["handles"]) == sorted(handles + rest), doc

    # One file imported on every server: each loads the handles the hash gives it.
    def url(i: int) -> dict[str, object]:
        return {"index": 1, "type": "URL", "data": {"format": "string", "value": f"b{i}"}}

    lines = [json.dumps({"handle": f"88.100/bulk-{i}", "values": [url(i)]}) for i in range(40)]
    dump = tmp_path / "bulk.jsonl"
    dump.write_text("\n".join(lines) + "\n")
    for p in procs:
        idr("import", "--data", str(p.data), str(dump))
    held = [_handles_in(c.dsn()) for c in pg_servers]
    for i in range(40):
        h = f"88.100/bulk-{i}"
        assert [(h in held[s]) for s in range(SERVERS)] == [s == owner(info, h) for s in range(SERVERS)]
        assert procs[(i + 1) % SERVERS].get(f"/api/handles/{h}")[0] == 200
