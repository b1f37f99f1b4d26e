"""``/metrics`` counts every answer — the native hot path's pre-encoded answers included — per
front-end, operation and response code, with latency histograms; a recursive node exports its
caches; the dashboard reads the same counters; the federation map shows each node once."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

import aiohttp

from idr.codec.bodies import ResolutionRequest
from idr.codec.envelope import OpCode
from idr.codec.message import encode_message
from idr.core.request import Op, Request
from idr.demo import CELL, CELL_ELEMENT_STRING, Federation, RunningNode, start_node
from idr.model.value import HandleValue
from idr.resolver.client import HandleClient, build_request

UDP_TIMES = 70


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample (labels matched exactly as given, in any order); 0 if absent."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        got = dict(re.findall(r'(\w+)="([^"]*)"', head))
        if head.split("{")[0] == name and got == labels:
            return float(value)
    return 0.0


async def scrape(http: aiohttp.ClientSession, base: str) -> str:
    async with http.get(f"{base}/metrics") as r:
        assert r.status == 200
        return await r.text()


def udp_resolve(port: int, handle: str, times: int) -> int:
    """Send ``times`` plain resolutions (one at a time); how many answers came back."""
    answered = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2.0)
        for i in range(times):
            data = bytearray(encode_message(build_request(OpCode.RESOLUTION, ResolutionRequest(handle))))
            data[8:12] = (i + 1).to_bytes(4, "big")
            s.sendto(bytes(data), ("127.0.0.1", port))
            try:
                s.recv(65536)
                answered += 1
            except TimeoutError:
                pass
    return answered


async def _node(tmp_path: Path) -> RunningNode:
    n = await start_node(tmp_path, "n", "Metrics node", "secondary", "88.100", "metrics-secret")
    resp = await n.service.submit(
        Request(
            Op.CREATE_HANDLE,
            "88.100/m1",
            values=(HandleValue(1, "URL", b"https://example.org/m1"),),
            identity=n.admin,
        )
    )
    assert resp.ok
    return n


async def test_every_native_answer_is_counted_hot_path_included(tmp_path: Path) -> None:
    n = await _node(tmp_path)
    try:
        port = n.native[1]
        got = await asyncio.to_thread(udp_resolve, port, "88.100/m1", UDP_TIMES)
        missing = await asyncio.to_thread(udp_resolve, port, "88.100/none", 5)
        async with HandleClient("127.0.0.1", port) as c:
            for _ in range(3):
                assert (await c.resolve("88.100/m1", transport="tcp")).response_code == 1
        async with aiohttp.ClientSession(trust_env=False) as http:
            for _ in range(4):
                async with http.get(f"{n.http_url}/api/handles/88.100/m1") as r:
                    assert r.status == 200
            async with http.get(f"{n.http_url}/api/handles/88.100/none") as r:
                assert r.status == 404
            for noise in ("/favicon.ico", "/robots.txt"):  # a browser's, a crawler's: not resolutions
                async with http.get(f"{n.http_url}{noise}") as r:
                    assert r.status == 400  # not a handle
            text = await scrape(http, n.http_url)
        assert got == UDP_TIMES and missing == 5
        udp_ok = metric(text, "idr_answers_total", frontend="udp", op="resolution", code="SUCCESS")
        assert udp_ok == UDP_TIMES  # before: answers from the caches were not counted (2 of 70)
        assert (
            metric(text, "idr_answers_total", frontend="udp", op="resolution", code="HANDLE_NOT_FOUND") == 5
        )
        assert metric(text, "idr_answers_total", frontend="tcp", op="resolution", code="SUCCESS") == 3
        assert metric(text, "idr_answers_total", frontend="http", op="resolution", code="SUCCESS") == 4
        assert (
            metric(text, "idr_answers_total", frontend="http", op="resolution", code="HANDLE_NOT_FOUND") == 1
        )
        assert metric(text, "idr_resolutions_total") == UDP_TIMES + 5 + 3 + 5
        # Not found is an answer, not a failure; the noise's two 400s are (bad requests).
        assert metric(text, "idr_errors_total") == 2
        # Latency histograms: every slow-path answer timed, hot-path answers sampled.
        udp_timed = metric(text, "idr_answer_seconds_count", frontend="udp")
        assert 1 <= udp_timed <= UDP_TIMES + 5
        assert metric(text, "idr_answer_seconds_count", frontend="http") == 7  # the noise is timed too
        assert metric(text, "idr_answer_seconds_bucket", frontend="http", le="+Inf") == 7
        assert metric(text, "idr_answer_seconds_sum", frontend="http") > 0
        # The hot path's latency is sampled: after a sampler tick the next datagram is timed.
        await asyncio.sleep(0.2)
        assert await asyncio.to_thread(udp_resolve, port, "88.100/m1", 1) == 1
        async with aiohttp.ClientSession(trust_env=False) as http:
            later = await scrape(http, n.http_url)
        assert metric(later, "idr_answer_seconds_count", frontend="udp") == udp_timed + 1
        assert metric(later, "idr_answer_seconds_bucket", frontend="udp", le="0.001") >= 1
    finally:
        await n.node.stop()
        n.node.close()


async def test_failures_are_counted_as_errors(tmp_path: Path) -> None:
    n = await _node(tmp_path)
    try:
        async with HandleClient("127.0.0.1", n.native[1]) as c:
            bad = await c.resolve("88..100/x", transport="tcp")  # an empty prefix segment
            assert bad.response_code != 1
        async with aiohttp.ClientSession(trust_env=False) as http:
            text = await scrape(http, n.http_url)
        assert metric(text, "idr_errors_total") == 1
        assert sum(
            metric(text, "idr_answers_total", frontend="tcp", op="resolution", code=code)
            for code in ("INVALID_HANDLE", "PROTOCOL_ERROR")
        )
    finally:
        await n.node.stop()
        n.node.close()


async def test_recursive_cache_hits_and_the_dashboard(fed: Federation) -> None:
    rec, top = fed["recursive"], fed["top-cq"]
    async with aiohttp.ClientSession(trust_env=False) as http:
        for _ in range(3):
            async with http.get(f"{rec.http_url}/api/handles/{CELL}") as r:
                assert r.status == 200
        async with http.get(f"{rec.http_url}/api/resolve", params={"id": CELL_ELEMENT_STRING}) as r:
            assert r.status == 200
        text = await scrape(http, rec.http_url)
        # The HTTP front-end answers repeats from its own encoded cache; the engine's answer
        # cache served the alias target of the GS1 key, which the first GET had fetched.
        assert metric(text, "idr_answers_total", frontend="http", op="resolution", code="SUCCESS") == 4
        assert metric(text, "idr_recursive_cache_hits_total", cache="answers") >= 1
        assert metric(text, "idr_recursive_cache_misses_total", cache="answers") >= 1
        assert metric(text, "idr_recursive_queries_total") >= 3
        # The top answered the recursive node's locate probes for the GS1 key: "not found"
        # for the prefixes that do not exist is an answer, not an error.
        top_text = await scrape(http, top.http_url)
        assert metric(top_text, "idr_errors_total") == 0
        probes = metric(
            top_text, "idr_answers_total", frontend="udp", op="resolution", code="HANDLE_NOT_FOUND"
        )
        assert probes >= 1
        async with http.get(f"{top.http_url}/console/api/stats") as r:
            stats = await r.json()
        assert stats["errors"] == 0
        assert stats["resolutions_total"] >= metric(top_text, "idr_resolutions_total") >= probes
        # The map is built by the dashboard; then the counts are the demo's: 2 and 2.
        async with http.get(f"{top.http_url}/console/api/federation") as r:
            fmap = await r.json()
        async with http.get(f"{top.http_url}/console/api/stats") as r:
            stats = await r.json()
    assert (stats["secondary"], stats["enterprise"]) == (2, 2)
    names: list[str] = []

    def walk(n: dict[str, object]) -> None:
        names.append(str(n["name"]))
        for c in n["children"]:  # type: ignore[attr-defined]
            walk(c)

    walk(fmap)
    assert len(names) == len(set(names)) == 5, names  # top + 2 secondaries + 2 enterprises, once each
    yibin = fmap["children"][1]["children"][0] if "Sichuan" in fmap["children"][1]["name"] else None
    yibin = yibin or next(c for s in fmap["children"] for c in s["children"] if "Yibin" in c["name"])
    assert {"88.168.6", "GS1.6975310", "ECODE.1.3206"} <= set(yibin["prefixes"])
