"""The consoles of the demo federation resolve its headline identifiers, every form of them.

The top node's console (the URL ``idr demo`` prints) and the recursive node's resolve the
Yibin cell by handle, GS1 element string, Digital Link URI and Ecode — the scheme names are
aliases, followed to the one record — and show the vehicle's supply chain across three
nodes; the trace names each node the walk went through.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest

from idr.demo import CELL, CELL_DL_PATH, CELL_ECODE, CELL_ELEMENT_STRING, PACK, VEHICLE, Federation

FORMS = (CELL, CELL_ELEMENT_STRING, f"https://id.example.cn{CELL_DL_PATH}", CELL_DL_PATH, CELL_ECODE)
YIBIN = "Yibin battery cell plant enterprise node"


async def _json(http: aiohttp.ClientSession, url: str, **params: str) -> Any:
    async with http.get(url, params=params) as r:
        assert r.status == 200, await r.text()
        return await r.json()


@pytest.mark.parametrize("console", ["top-cq", "top-cd", "recursive", "sec-cq"])
async def test_console_resolves_every_form_of_the_cell(fed: Federation, console: str) -> None:
    base = fed[console].http_url
    async with aiohttp.ClientSession(trust_env=False) as http:
        for form in FORMS:
            doc = await _json(http, f"{base}/console/api/resolve", id=form)
            assert doc["responseCode"] == 1, (form, doc["message"], doc["trace"])
            assert doc["handle"] == CELL, form
            values = {v["type"]: v["text"] for v in doc["values"]}
            assert values["model"] == "LFP-280Ah-prismatic" and values["chemistry"] == "LFP"
            assert "HS_ALIAS" not in values  # the alias record was followed, not shown
            if form != CELL:
                assert doc["scheme"] in ("gs1", "ecode")
                assert doc["aliases"] and doc["aliases"][-1]["target"] == CELL
            if console != "recursive":  # the recursive node may answer from its cache
                assert any(h["node"] == YIBIN for h in doc["trace"]), doc["trace"]


async def test_top_console_pages_show_the_cell_and_the_supply_chain(fed: Federation) -> None:
    top = fed["top-cq"]
    async with aiohttp.ClientSession(trust_env=False) as http:
        for form in (CELL, CELL_ELEMENT_STRING, CELL_ECODE):
            async with http.get(f"{top.http_url}/console/resolve", params={"id": form, "lang": "en"}) as r:
                body = await r.text()
            assert r.status == 200
            assert "LFP-280Ah-prismatic" in body and 'id="result-error"' not in body
            assert "{&#39;" not in body and "{'" not in body  # no raw Python dict in the details
            hops = re.findall(r"<tr><td>\d+</td><td><strong>([^<]+)</strong>", body)
            assert hops[0] == top.name and hops[-1] == YIBIN, hops
        async with http.get(f"{top.http_url}/console/chain", params={"id": VEHICLE, "lang": "en"}) as r:
            body = await r.text()
        assert r.status == 200
        assert "4 identifiers" in body and body.count('class="cnode ok"') == 4, body
        for h in (VEHICLE, PACK, CELL):
            assert f"<code>{h}</code>" in body
        assert "Chongqing vehicle maker enterprise node" in body and YIBIN in body


async def test_an_unknown_identifier_is_a_clear_not_found_on_the_top_console(fed: Federation) -> None:
    top = fed["top-cq"]
    async with aiohttp.ClientSession(trust_env=False) as http:
        doc = await _json(http, f"{top.http_url}/console/api/resolve", id="88.168.6/NO-SUCH-CELL")
        assert doc["responseCode"] == 100 and doc["trace"][-1]["node"] == YIBIN
        doc = await _json(http, f"{top.http_url}/console/api/resolve", id="99.999/nobody")
        assert doc["responseCode"] == 100 and "not known" in doc["message"]


async def test_templates_are_listed_by_authoritative_nodes_only(fed: Federation) -> None:
    async with aiohttp.ClientSession(trust_env=False) as http:
        doc = await _json(http, f"{fed['sec-sc'].http_url}/api/federation/templates")
        assert {t["ref"] for t in doc["templates"]} >= {"battery-cell@1", "battery-pack@1", "vehicle@1"}
        async with http.get(f"{fed['recursive'].http_url}/api/federation/templates") as r:
            assert r.status == 501 and "no templates" in (await r.json())["message"]
