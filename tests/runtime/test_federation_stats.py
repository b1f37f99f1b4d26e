"""Federation statistics add up (issue 17): a top, a secondary and an enterprise node, each a
separate ``idr serve`` process with its own ``federation.toml`` (and a recursive node that
reports to the top as its own identity); identifiers registered and resolved in known numbers
through each node (UDP, TCP, HTTP); the top's totals equal the sums exactly once the reports
arrive — and equal what every node's own ``/metrics`` counted (one count, not a second one) —
also after a child restarts, after reports are sent again (re-cut on demand, and the very same
report re-posted), after a child is killed before reporting, and after a child is down for a
while (which the top's monitor shows, with an availability below one)."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from idr.cli.stats import federation_totals
from idr.codec import rest
from idr.core.federation import FederationSettings, loopback_site
from idr.core.prefixes import uscc_check_char
from idr.model.errors import ResponseCode
from tests.procs import ServeProc, idr

TOP_SECRET = "top-secret-123"
SEC_SECRET = "sichuan-secret-123"
ENT_SECRET = "yibin-secret-123"
USCC = "91511500MA62XB4P3" + uscc_check_char("91511500MA62XB4P3")
INTERVAL = 0.5
TOP_AUTH = ("300:0.NA/0.NA", TOP_SECRET)
SEC_AUTH = ("300:0.NA/88.168", SEC_SECRET)
ENT_AUTH = ("300:0.NA/88.168.6", ENT_SECRET)
REC_SECRET = "recursive-secret-123"
REC_AUTH = ("300:0.NA/RECURSIVE-1", REC_SECRET)


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll ``fn`` until it returns something true (bounded); its last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last and not isinstance(last, str):  # a string says why not yet
            return last
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


def site_json(node: ServeProc, index: int, type_: str, name: str) -> dict[str, object]:
    site = loopback_site(name, native=node.native, http=node.http, https=node.https)
    return {"index": index, "type": type_, "data": {"format": "site", "value": rest.site_to_json(site)}}


class Federation:
    def __init__(self, tmp: Path) -> None:
        self.top = ServeProc.init(tmp / "top", "--role", "top", "--admin-secret", TOP_SECRET)
        self.sec = ServeProc.init(
            tmp / "sec", "--role", "secondary", "--prefix", "88.168", "--admin-secret", SEC_SECRET
        )
        self.ent = ServeProc.init(
            tmp / "ent", "--role", "enterprise", "--prefix", "88.168.6", "--admin-secret", ENT_SECRET
        )
        FederationSettings(root=[], report_interval=INTERVAL).save(self.top.data)
        FederationSettings(
            root=[f"127.0.0.1:{self.top.native}"],
            top_url=f"https://127.0.0.1:{self.top.https}",
            top_identity="300:0.NA/88.168",
            top_secret=SEC_SECRET,
            top_cafile=str(self.top.data / "tls" / "cert.pem"),
            report_interval=INTERVAL,
            industry="C",
            region="510000",
        ).save(self.sec.data)
        # The enterprise node reports to the secondary as its admin, whose secret it holds
        # itself: no secret in its federation.toml.
        FederationSettings(
            root=[f"127.0.0.1:{self.top.native}"],
            parent_url=f"https://127.0.0.1:{self.sec.https}",
            parent_cafile=str(self.sec.data / "tls" / "cert.pem"),
            report_interval=INTERVAL,
            industry="C",
            region="511500",
        ).save(self.ent.data)

    def stop(self) -> None:
        for node in (self.ent, self.sec, self.top):
            node.stop()

    def stats(self, node: ServeProc) -> dict[str, Any]:
        status, doc = node.get("/api/federation/stats", secure=False)
        assert status == 200 and doc["responseCode"] == 1, doc
        return dict(doc)

    def node(self, doc: dict[str, Any], key: str) -> dict[str, Any]:
        return next(n for n in doc["nodes"] if n["node"] == key)


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[Federation]:
    f = Federation(tmp_path)
    try:
        f.top.start()
        record = {
            "values": [
                {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
                    "handle": "0.NA/88.168", "index": 300, "permissions": "111111111111"}}},
                {"index": 300, "type": "HS_SECKEY", "data": {"format": "string", "value": SEC_SECRET}},
                site_json(f.sec, 1, "HS_SITE", "Sichuan secondary"),
                site_json(f.sec, 51, "HS_SITE.PREFIX", "Sichuan secondary"),
            ]
        }  # fmt: skip
        status, doc = f.top.call("PUT", "/api/handles/0.NA/88.168", record, auth=TOP_AUTH)
        assert doc["responseCode"] == 1, (status, doc)
        f.sec.start()
        # The enterprise's prefix: applied for, approved (allocated, filed with the top).
        sec_url = f"https://127.0.0.1:{f.sec.https}"
        cert = str(f.sec.data / "tls" / "cert.pem")
        out = idr("prefix", "apply", "--node", sec_url, "--cafile", cert, "--enterprise", "Yibin cells",
                  "--uscc", USCC, "--contact", "q@example.org", "--secret", ENT_SECRET,
                  "--prefix", "88.168.6").stdout  # fmt: skip
        app_id = re.search(r"APP-[0-9A-F]+", out)
        assert app_id, out
        idr("prefix", "approve", app_id.group(0), "--node", sec_url, "--auth", SEC_AUTH[0],
            "--secret", SEC_SECRET, "--cafile", cert)  # fmt: skip
        f.ent.start()
        yield f
    finally:
        f.stop()


URL_VALUE = {"index": 1, "type": "URL", "data": {"format": "string", "value": "https://example.org/"}}


def register(node: ServeProc, handle: str, auth: tuple[str, str]) -> None:
    status, doc = node.call("PUT", f"/api/handles/{handle}", {"values": [URL_VALUE]}, auth=auth)
    assert doc["responseCode"] == 1, (status, doc)


class Traffic:
    """Known numbers: what the test did through each node."""

    def __init__(self) -> None:
        self.registered = 0
        self.deleted = 0
        self.resolutions: dict[str, int] = {}
        self.seq = 0

    def burst(self, node: ServeProc, key: str, prefix: str, auth: tuple[str, str], n: int = 3) -> None:
        """``n`` identifiers registered, each resolved once, over UDP, TCP and HTTP in turn,
        and one name that is not there over UDP."""
        names = []
        for _ in range(n):
            self.seq += 1
            name = f"{prefix}/STAT-{self.seq}"
            register(node, name, auth)
            names.append(name)
        self.registered += n
        for i, name in enumerate(names):
            frontend = ("udp", "tcp", "http")[i % 3]
            if frontend == "http":
                status, doc = node.get(f"/api/handles/{name}", secure=False)
                assert status == 200 and doc["responseCode"] == 1, doc
            else:
                assert node.resolve_native(name, frontend)[0] == 1
        assert node.resolve_native(f"{prefix}/NO-SUCH-{self.seq}", "udp")[0] == 100
        self.resolutions[key] = self.resolutions.get(key, 0) + n + 1

    def delete(self, node: ServeProc, key: str, prefix: str, auth: tuple[str, str]) -> None:
        status, doc = node.call("DELETE", f"/api/handles/{prefix}/STAT-{self.seq}", auth=auth)
        assert doc["responseCode"] == 1, (status, doc)
        self.deleted += 1


def figures(doc: dict[str, Any]) -> tuple[int, int, int]:
    return doc["registered"], doc["deleted"], doc["resolutions"]


def metric(node: ServeProc, name: str) -> float:
    """One unlabelled sample of the node's ``/metrics``."""
    with urllib.request.urlopen(node.url("/metrics", secure=False), timeout=10) as r:
        text = r.read().decode()
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            return float(value)
    raise AssertionError(f"{name} not in /metrics of {node.data.name}")


def start_recursive(fed: Federation, tmp: Path) -> ServeProc:
    """A recursive node rooted at the top, reporting the resolutions it serves to the top as
    its own identity (``0.NA/RECURSIVE-1``, whose key the top's admin gave it)."""
    record = {
        "values": [
            {"index": 300, "type": "HS_SECKEY", "data": {"format": "string", "value": REC_SECRET}},
            {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
                "handle": "0.NA/RECURSIVE-1", "index": 300, "permissions": "111111111111"}}},
        ]
    }  # fmt: skip
    status, doc = fed.top.call("PUT", "/api/handles/0.NA/RECURSIVE-1", record, auth=TOP_AUTH)
    assert doc["responseCode"] == 1, (status, doc)
    rec = ServeProc.init(tmp / "rec", "--role", "recursive", "--root", f"127.0.0.1:{fed.top.native}")
    FederationSettings(
        root=[f"127.0.0.1:{fed.top.native}"],
        parent_url=f"https://127.0.0.1:{fed.top.https}",
        parent_identity=REC_AUTH[0],
        parent_secret=REC_SECRET,
        parent_cafile=str(fed.top.data / "tls" / "cert.pem"),
        report_interval=INTERVAL,
    ).save(rec.data)
    return rec.start()


def test_the_tops_totals_are_the_sums_of_what_every_node_did(fed: Federation, tmp_path: Path) -> None:
    t = Traffic()
    t.burst(fed.ent, "88.168.6", "88.168.6", ENT_AUTH, n=4)
    t.burst(fed.sec, "88.168", "88.168", SEC_AUTH, n=3)
    t.delete(fed.sec, "88.168", "88.168", SEC_AUTH)
    # the top registers no identifiers (it holds prefix handles); it answers for them
    assert fed.top.resolve_native("0.NA/88.168", "udp")[0] == 1
    assert fed.top.resolve_native("0.NA/0.NA", "tcp")[0] == 1
    assert fed.top.get("/api/handles/0.NA/0.NA", secure=False)[0] == 200
    t.resolutions["0.NA"] = 3

    def arrived() -> dict[str, Any] | str:
        doc = fed.stats(fed.top)
        per = {n["node"]: n["resolutions"] for n in doc["nodes"]}
        want = (t.registered, t.deleted, sum(t.resolutions.values()))
        if figures(doc) == want and per == t.resolutions:
            return doc
        return f"{figures(doc)} {per}, want {want} {t.resolutions}; reporting {doc['reporting']}"

    doc = wait_for("the top's totals", arrived)
    assert doc["secondary_nodes"] == 1 and doc["enterprise_nodes"] == 1
    assert doc["prefixes_allocated"] == 1 and doc["prefixes_filed"] == 1
    assert doc["by_secondary"]["88.168"]["registered"] == 4 + 3
    assert doc["by_region"]["511500"]["registered"] == 4
    assert doc["by_industry"]["C"]["resolutions"] == t.resolutions["88.168.6"] + t.resolutions["88.168"]
    assert sum(doc["resolutions_by_frontend"].values()) == sum(t.resolutions.values())
    today = doc["days"][-1]
    assert (today["registered"], today["deleted"], today["resolutions"]) == figures(doc)
    assert doc["months"][-1]["registered"] == t.registered
    assert fed.node(doc, "88.168")["status"] == "ok" and fed.node(doc, "88.168.6")["via"] == "88.168"
    shown = idr("stats", "show", "--node", f"127.0.0.1:{fed.top.http}").stdout
    assert "接入二级节点 1 个 · 企业节点 1 家" in shown
    assert f"标识注册量 {t.registered} · 标识解析总量 {doc['resolutions']}" in shown
    assert federation_totals(f"127.0.0.1:{fed.top.http}")["registered"] == t.registered
    # the secondary's own statistics: its subtree
    sub = fed.stats(fed.sec)
    assert figures(sub) == (7, 1, t.resolutions["88.168.6"] + t.resolutions["88.168"])
    # One count: what each node reported is what its own /metrics counted (its answer tallies).
    nodes = {"0.NA": fed.top, "88.168": fed.sec, "88.168.6": fed.ent}
    for key, node in nodes.items():
        assert metric(node, "idr_resolutions_total") == t.resolutions[key], key

    # A recursive node serves resolutions and reports them to the top as its own identity;
    # its walks are resolutions the top, the secondary and the enterprise node answered.
    rec = start_recursive(fed, tmp_path)
    try:
        for name, frontend in (("88.168/STAT-5", "udp"), ("88.168/STAT-6", "tcp")):
            assert rec.resolve_native(name, frontend)[0] == 1
        assert rec.resolve_native("88.168/STAT-7", "udp")[0] == 100  # deleted above
        assert rec.get("/api/handles/88.168/STAT-6", secure=False)[0] == 200
        t.resolutions["0.NA/RECURSIVE-1"] = 4
        nodes["0.NA/RECURSIVE-1"] = rec
        assert metric(rec, "idr_resolutions_total") == 4
        for key, node in nodes.items():  # what each node answered, the walks' queries included
            t.resolutions[key] = int(metric(node, "idr_resolutions_total"))
        assert t.resolutions["88.168"] > 4 and t.resolutions["0.NA"] > 3  # the walks reached them
        doc = wait_for("the top's totals with the recursive node's", arrived)
        assert doc["recursive_nodes"] == 1 and fed.node(doc, "0.NA/RECURSIVE-1")["via"] == "0.NA/RECURSIVE-1"
    finally:
        rec.stop()

    # Reports sent again (on demand, several times): nothing counted twice.
    for node, auth in ((fed.ent, ENT_AUTH), (fed.sec, SEC_AUTH), (fed.sec, SEC_AUTH)):
        out = json.loads(
            idr(
                "stats",
                "report",
                "--node",
                f"127.0.0.1:{node.https}",
                "--auth",
                auth[0],
                "--secret",
                auth[1],
                "--cafile",
                str(node.data / "tls" / "cert.pem"),
                "--json",
            ).stdout
        )
        assert out["sent"] is True and out["ack"]["duplicates"] >= 0, out
    # The very same report posted again, and an older one arriving late: counted once.
    own = out["entry"]  # the secondary's own entry, as it just reported it
    stale = {**own, "seq": 1, "counters": {}, "resolutions": {}}
    for entry in (own, stale):
        body = {"report": 1, "node": "88.168", "entries": [entry]}
        status, ack = fed.top.call("POST", "/api/federation/stats/report", body, auth=SEC_AUTH)
        assert status == 200 and (ack["applied"], ack["duplicates"]) == (0, 1), ack
    # and a report the secondary may not make: for a node not under its prefix
    forged = {"report": 1, "node": "88.168", "entries": [own, {**own, "node": "88.118", "seq": 99}]}
    status, ack = fed.top.call("POST", "/api/federation/stats/report", forged, auth=SEC_AUTH)
    assert status == 403 and ack["responseCode"] == ResponseCode.INSUFFICIENT_PERMISSIONS, (status, ack)
    time.sleep(4 * INTERVAL)
    assert figures(fed.stats(fed.top)) == figures(doc)

    # The enterprise node restarts (SIGTERM: its last cut keeps this run's resolutions).
    fed.ent.stop()
    fed.ent.start()
    t.burst(fed.ent, "88.168.6", "88.168.6", ENT_AUTH, n=2)
    doc = wait_for("totals after a restart", arrived)
    assert fed.node(doc, "0.NA/RECURSIVE-1")["resolutions"] == 4  # stopped: its last figures stay

    # Killed before it could report: what it registered is durable and reported after.
    t.seq += 1
    register(fed.ent, f"88.168.6/STAT-{t.seq}", ENT_AUTH)
    t.registered += 1
    assert fed.ent.proc is not None
    fed.ent.proc.kill()
    fed.ent.proc.wait(10)
    fed.ent.start()
    doc = wait_for("totals after kill -9", lambda: figures(fed.stats(fed.top))[0] == t.registered)


def test_a_child_that_is_down_is_marked_and_its_availability_falls(fed: Federation) -> None:
    t = Traffic()
    t.burst(fed.ent, "88.168.6", "88.168.6", ENT_AUTH, n=1)
    wait_for("the secondary is heard", lambda: fed.node(fed.stats(fed.top), "88.168")["status"] == "ok")
    fed.sec.stop()  # the secondary is down for a while; the enterprise goes on registering
    wait_for("the secondary marked down", lambda: fed.node(fed.stats(fed.top), "88.168")["status"] == "down")
    t.burst(fed.ent, "88.168.6", "88.168.6", ENT_AUTH, n=2)
    fed.sec.start()

    def caught_up() -> dict[str, Any] | str:
        d = fed.stats(fed.top)
        per = {n["node"]: n["resolutions"] for n in d["nodes"] if n["resolutions"]}
        want = (t.registered, 0, sum(t.resolutions.values()))
        if fed.node(d, "88.168")["status"] == "ok" and figures(d) == want and per == t.resolutions:
            return d
        return f"{fed.node(d, '88.168')['status']} {figures(d)} {per}, want {want} {t.resolutions}"

    # exactly what the enterprise node did, also while its secondary was down
    doc = wait_for("back and caught up", caught_up)
    availability = fed.node(doc, "88.168")["availability"]
    assert availability is not None and 0 < availability < 1, availability
    # the enterprise node as its secondary sees it, forwarded to the top
    assert fed.node(doc, "88.168.6")["status"] == "ok"
    with urllib.request.urlopen(fed.top.url("/metrics", secure=False), timeout=10) as r:
        text = r.read().decode()
    assert f"idr_federation_registered {float(t.registered)}" in text, text
    assert "idr_federation_secondary_nodes 1.0" in text and "idr_federation_enterprise_nodes 1.0" in text


def test_resolutions_answered_by_extra_workers_are_all_reported(tmp_path: Path) -> None:
    """``idr serve --workers 2``: the extra worker's answers reach worker 0's tallies every
    second, and its last ones as it stops, before the node's last cut — so a node stopped
    right after a burst reports every resolution it answered, none lost in the last second."""
    top = ServeProc.init(tmp_path / "top", "--role", "top", "--admin-secret", TOP_SECRET)
    FederationSettings(root=[], report_interval=60.0).save(top.data)
    try:
        top.start("--workers", "2", ready_path="/api/federation/stats")  # the workers up
        n = 40  # each from a new client port: SO_REUSEPORT spreads them over both workers
        for i in range(n):
            assert top.resolve_native("0.NA/0.NA" if i % 2 else "0.NA/NO-SUCH", "udp")[0] in (1, 100)
        top.stop()  # at once: the extra worker's last tally is at most a second old
        top.start()
        node = next(x for x in fed_stats(top)["nodes"] if x["node"] == "0.NA")
        assert node["resolutions"] == n, node
    finally:
        top.stop()


def fed_stats(node: ServeProc) -> dict[str, Any]:
    status, doc = node.get("/api/federation/stats", secure=False)
    assert status == 200 and doc["responseCode"] == 1, doc
    return dict(doc)
