"""The console's resolve box takes what a scanner sends and refuses what GS1's rules refuse."""

from __future__ import annotations

from idr.demo import RunningNode
from idr.model.errors import ResponseCode
from tests.console.conftest import client

GTIN = "09506000134352"


async def test_resolve_box_reads_scanner_data(node: RunningNode) -> None:
    async with client(node) as http:
        for scan in (
            f"]d201{GTIN}10ABC\x1d17290101",
            f"^01{GTIN}10ABC",
            "https://id.gs1.org/CwnYUc1gmo1XgkY",
        ):
            async with http.get(f"{node.http_url}/console/api/resolve", params={"id": scan}) as r:
                doc = await r.json()
            assert doc["scheme"] == "gs1", doc
            want = "/01/05412345000013/10/ABC123" if "gs1.org" in scan else f"/01/{GTIN}/10/ABC"
            assert doc["handle"].endswith(want) and doc["handle"].startswith("GS1")


async def test_resolve_box_refuses_with_the_gs1_rule(node: RunningNode) -> None:
    async with (
        client(node) as http,
        http.get(
            f"{node.http_url}/console/api/resolve", params={"id": f"/01/{GTIN}?17=200904&17=901007"}
        ) as r,
    ):
        doc = await r.json()
    assert doc["responseCode"] == ResponseCode.INVALID_HANDLE
    assert "AI 17" in doc["message"] and "twice" in doc["message"]
    assert doc["trace"] == []  # nothing was looked up
