"""The twin-city federation as ``idr demo`` starts it: one top with a replicated backup, and the
Yibin cell reachable by its handle, its GS1 key and its Ecode through the recursive node."""

from __future__ import annotations

import asyncio
import os
import sys

import aiohttp
import pytest

from idr.demo import (
    CELL,
    CELL2,
    CELL_DL_PATH,
    CELL_ECODE,
    CELL_ELEMENT_STRING,
    CELL_GS1_HANDLE,
    TOP_SECRET,
    YIBIN_ECODE_PREFIX,
    YIBIN_GS1_PREFIX,
    Federation,
)
from idr.model.errors import ResponseCode
from idr.model.handle import normalize_key
from idr.model.value import HandleValue, ValueReference
from idr.replication import MIRROR
from idr.resolver.client import HandleClient, ResponseError, SecretKeyAuth
from idr.resolver.recursive import RecursiveService

FORMS = {
    "handle": CELL,
    "gs1 path": CELL_DL_PATH,
    "gs1 uri": f"https://id.example.cn{CELL_DL_PATH}",
    "gs1 element string": CELL_ELEMENT_STRING,
    "ecode": CELL_ECODE,
}


def recursive(fed: Federation) -> RecursiveService:
    service = fed["recursive"].service
    assert isinstance(service, RecursiveService)
    return service


def clear_recursive_cache(fed: Federation) -> None:
    resolver = recursive(fed).resolver
    resolver.answers.clear()
    resolver.services.clear()


async def cli(*args: str, timeout: float = 60.0) -> tuple[int, str]:
    """Run ``idr ARGS`` in a separate process while this loop keeps serving the federation."""
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from idr.cli import main; main()",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return int(proc.returncode or 0), out.decode()


async def test_the_mirror_is_fed_by_log_shipping_and_the_top_lists_both_sites(fed: Federation) -> None:
    top, mirror = fed["top-cq"], fed["top-cd"]
    assert mirror.node.replicator is not None and mirror.node.replicator.state.role == MIRROR
    # Delegations were written once, at Chongqing; Chengdu holds them entry for entry.
    assert mirror.service.store.last_seq() == top.service.store.last_seq()
    for prefix in ("88.118", "88.168", YIBIN_GS1_PREFIX, YIBIN_ECODE_PREFIX):
        key = normalize_key(f"0.NA/{prefix}")
        assert mirror.service.store.get(key) == top.service.store.get(key), prefix
    root = top.service.store.get(normalize_key("0.NA/0.NA"))
    assert root is not None
    sites = [v for v in root.values if v.type == "HS_SITE"]
    assert len(sites) == 2


async def test_resolution_goes_on_from_chengdu_when_chongqing_stops(fed: Federation) -> None:
    rec = fed["recursive"]
    await fed["top-cq"].node.stop()
    clear_recursive_cache(fed)
    async with HandleClient("127.0.0.1", rec.native[1], timeout=15) as c:
        msg = await c.resolve(CELL2)  # cold: the walk must start at the top, now Chengdu
        assert msg.response_code == ResponseCode.SUCCESS
        # And a scheme form, located through the mirror too.
        gs1 = await c.resolve("GS1" + CELL_DL_PATH)
        assert gs1.response_code == ResponseCode.SUCCESS
    clear_recursive_cache(fed)
    res = await recursive(fed).trace(CELL)
    assert res.response.ok
    nodes = [h.node.split()[0] for h in res.hops]
    assert nodes[-3:] == ["Chengdu", "Sichuan", "Yibin"], res.hops


async def test_a_write_at_the_mirror_is_refused_naming_the_primary(fed: Federation) -> None:
    top, mirror = fed["top-cq"], fed["top-cd"]
    auth = SecretKeyAuth(ValueReference("0.NA/0.NA", 300), TOP_SECRET.encode())
    value = HandleValue(1, "URL", b"https://example.org/")
    async with HandleClient("127.0.0.1", mirror.native[1], auth=auth, timeout=10) as c:
        with pytest.raises(ResponseError) as err:
            await c.create("0.NA/77.1", [value])
    assert err.value.code == ResponseCode.SERVER_READ_ONLY
    assert f"native 127.0.0.1:{top.native[1]}" in err.value.message
    # The primary takes the same write; sync mode acknowledges it once Chengdu holds it.
    async with HandleClient("127.0.0.1", top.native[1], auth=auth, timeout=10) as c:
        await c.create("0.NA/77.1", [value])
    assert mirror.service.store.get(normalize_key("0.NA/77.1")) is not None


@pytest.mark.parametrize("form", sorted(FORMS))
async def test_every_form_resolves_to_the_cell_through_the_recursive_node(fed: Federation, form: str) -> None:
    rec = fed["recursive"]
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{rec.http_url}/api/resolve", params={"id": FORMS[form]}) as r,
    ):
        doc = await r.json()
    assert r.status == 200, doc
    assert doc["handle"] == CELL
    assert doc["scheme"] == form.split()[0]
    types = {v["type"] for v in doc["values"]}
    assert {"GS1_DIGITAL_LINK", "ECODE", "chemistry"} <= types


async def test_the_gs1_resolver_of_the_recursive_node_redirects(fed: Federation) -> None:
    rec = fed["recursive"]
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{rec.http_url}{CELL_DL_PATH}", allow_redirects=False) as r:
            assert r.status == 307
            assert r.headers["Location"] == "https://yibin-cells.example/cells/CELL-2024-YB-0001523"
            assert 'rel="linkset"' in r.headers["Link"]
        bad = CELL_DL_PATH.replace("1525", "1526")  # wrong check digit
        async with http.get(f"{rec.http_url}{bad}", allow_redirects=False) as r:
            assert r.status == 400


async def test_idr_resolve_takes_every_form_and_traces_the_hops(fed: Federation) -> None:
    server = f"127.0.0.1:{fed['recursive'].native[1]}"
    for text in FORMS.values():
        code, out = await cli("resolve", text, "--server", server, "--json")
        assert code == 0, out
        assert CELL in out and "LFP-280Ah-prismatic" in out, out
    clear_recursive_cache(fed)
    code, out = await cli("resolve", CELL_ELEMENT_STRING, "--server", server, "--trace")
    assert code == 0, out
    assert "recognised as gs1" in out
    assert f"0.NA/{YIBIN_GS1_PREFIX}" in out and "locate" in out  # the prefix was located
    assert CELL_GS1_HANDLE in out and f"is an alias of {CELL}" in out
    for node in ("Chongqing top", "Sichuan", "Yibin"):
        assert node in out, out
    assert " ms" in out


async def test_idr_resolve_trace_shows_cache_hits(fed: Federation) -> None:
    server = f"127.0.0.1:{fed['recursive'].native[1]}"
    code, first = await cli("resolve", CELL, "--server", server, "--trace")
    assert code == 0 and "Sichuan" in first, first
    code, again = await cli("resolve", CELL, "--server", server, "--trace")
    assert code == 0 and "(cache)" in again, again
