"""The top node's dashboard shows the federation's figures as the seeds phrase them (接入二级节点
N 个, 企业节点 N 家, 标识注册量 N, 标识解析总量 N), and they are the sums of what every node did:
the demo federation (nodes built by ``idr.node`` as ``idr serve`` builds them) in a real
browser (Debian's Chromium through Playwright)."""

from __future__ import annotations

import aiohttp
from playwright.async_api import BrowserContext, expect

from idr.core.stats import REGISTERED
from idr.demo import Federation, register
from tests.console.test_browser import TIMEOUT_MS, _shot
from tests.console.test_browser import browser as browser  # the same Chromium fixture
from tests.console.test_browser import federation as federation  # and the same federation

AUTHORITATIVE = ("top-cq", "sec-cq", "sec-sc", "ent-cq", "ent-yb")  # the mirror holds top-cq's copy


async def _api(url: str) -> dict[str, object]:
    async with aiohttp.ClientSession() as http, http.get(url + "/api/federation/stats") as r:
        doc: dict[str, object] = await r.json()
        return doc


async def test_the_tops_dashboard_shows_the_federations_sums(
    federation: Federation, browser: BrowserContext
) -> None:
    yb, top = federation["ent-yb"], federation["top-cq"]
    for i in range(5):
        await register(yb, f"88.168.6/STATS-{i}", [(1, "URL", f"https://yibin-cells.example/{i}")])
    # Resolutions answered by the enterprise node's front-end (what its tallies count).
    async with aiohttp.ClientSession() as http:
        for i in range(3):
            async with http.get(f"{yb.http_url}/api/handles/88.168.6/STATS-{i}") as r:
                assert r.status == 200, await r.text()
    # What every node itself counted (its write path's durable counters), summed.
    expected = sum(federation[k].node.service.durable_counts()[REGISTERED] for k in AUTHORITATIVE)
    assert expected >= 5
    # Report now, bottom up (the schedule would do it within a few seconds).
    for key in ("ent-yb", "ent-cq", "sec-sc", "sec-cq"):
        hub = federation[key].node.stats_hub
        assert hub is not None
        out = await hub.report_now()
        assert out["sent"] is True, out
    api = await _api(top.http_url)
    assert api["registered"] == expected
    assert (api["secondary_nodes"], api["enterprise_nodes"]) == (2, 2)

    page = await browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        await page.goto(f"{top.http_url}/console?lang=zh")
        fed = page.locator("#federation")
        await expect(fed).to_contain_text("接入二级节点")
        await expect(page.locator("#fed-secondary")).to_have_text("2")
        await expect(fed).to_contain_text("个")
        await expect(page.locator("#fed-enterprise")).to_have_text("2")
        await expect(fed).to_contain_text("家")
        await expect(page.locator("#fed-registered")).to_have_text(str(expected))
        await expect(page.locator("#fed-trend rect.bar").first).to_be_attached()
        # every node of the federation, with the status the top sees
        for key in ("sec-cq", "sec-sc", "ent-cq", "ent-yb"):
            row = page.locator(f'#fed-nodes tr[data-node="{federation[key].prefix}"]')
            await expect(row.locator("td.status")).to_have_text("上报正常")
        # the map marks each reporting node
        await expect(page.locator('#fedmap [data-report="88.168"]')).to_contain_text("上报正常")
        # The figures follow: five more identifiers, reported; the page updates itself.
        for i in range(5, 10):
            await register(yb, f"88.168.6/STATS-{i}", [(1, "URL", f"https://yibin-cells.example/{i}")])
        for key in ("ent-yb", "sec-sc"):
            hub = federation[key].node.stats_hub
            assert hub is not None
            await hub.report_now()
        await expect(page.locator("#fed-registered")).to_have_text(str(expected + 5))
        resolutions = (await _api(top.http_url))["resolutions"]
        assert isinstance(resolutions, int) and resolutions >= 3
        await expect(page.locator("#fed-resolutions")).to_have_text(str(resolutions))
        await page.goto(f"{top.http_url}/console?lang=en")
        await expect(page.locator("#federation")).to_contain_text("Secondary nodes connected")
    except Exception as e:
        shot = await _shot(page, "federation-stats")
        raise AssertionError(f"{e} (screenshot: {shot})") from e
