"""The console in a real browser: Debian's Chromium driven by Playwright against the demo federation.

A newcomer's path after ``idr demo``: log in to the Sichuan secondary node, register a cell
from its template (first with a mistake, seeing the field's error), resolve an identifier
and read its trace across nodes, approve a prefix application, open the supply chain. On
failure the test saves a screenshot and names its path in the failure message.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Page, async_playwright, expect

from idr.demo import (
    CELL,
    CELL_ECODE,
    CELL_ELEMENT_STRING,
    PACK,
    PACK_USCC,
    VEHICLE,
    Federation,
)

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000


@pytest.fixture
def federation(fed: Federation) -> Federation:
    """The demo federation (tests/conftest.py: free ports, a start retried if one is taken)."""
    return fed


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    profile = tmp_path / "chromium-profile"
    async with async_playwright() as pw:
        # A persistent context is how a fresh user-data dir is given to Chromium.
        ctx = await pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            args=ARGS,
            headless=True,
            ignore_https_errors=True,  # the demo nodes' self-signed certificates
            viewport={"width": 1366, "height": 900},
        )
        try:
            yield ctx
        finally:
            await ctx.close()


async def _shot(page: Page, name: str) -> Path:
    out = Path(tempfile.mkdtemp(prefix="idr-console-shots-")) / f"{name}.png"
    await page.screenshot(path=str(out), full_page=True)
    return out


async def test_newcomer_walkthrough(federation: Federation, browser: BrowserContext) -> None:
    sec = federation["sec-sc"]
    top = federation["top-cq"]
    page = await browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    step = "start"
    try:
        step = "dashboard of the top node shows the federation map"
        await page.goto(f"{top.http_url}/console?lang=en")
        await expect(page.locator("#fedmap")).to_contain_text("Sichuan battery & electronics secondary node")
        await expect(page.locator("#fedmap")).to_contain_text("Yibin battery cell plant enterprise node")
        await expect(page.locator("#chart rect.bar").first).to_be_attached()

        step = "log in over HTTPS"
        await page.goto(f"{sec.https_url}/console/login?lang=en")
        await page.get_by_label("Admin identity (index:handle)").fill(str(sec.admin))
        await page.get_by_label("Secret key").fill("wrong-secret")
        await page.get_by_role("button", name="Log in").click()
        await expect(page.locator("#login-error")).to_be_visible()
        await page.get_by_label("Secret key").fill(sec.secret)
        await page.get_by_role("button", name="Log in").click()
        await expect(page.locator("#signed-in")).to_contain_text(str(sec.admin))

        step = "register from a template, see the validation error, fix it"
        await page.get_by_role("link", name="Register").click()
        await page.get_by_label("Data template").select_option("battery-cell@1")
        await page.get_by_role("button", name="Choose a template").click()
        await page.get_by_label("Prefix").select_option(sec.prefix)
        await page.get_by_label("Suffix").fill("CELL-BROWSER-1")
        await page.locator("#f-manufacturer").fill("Yibin Cells")
        await page.locator("#f-model").fill("LFP-280")
        await page.locator("#f-chemistry").select_option("LFP")
        await page.locator("#f-capacity_ah").fill("-5")
        await page.locator("#f-production_date").fill("2024-07-01")
        await page.locator("#f-batch").fill("B-1")
        await page.get_by_role("button", name="Register").click()
        await expect(page.locator("#capacity_ah-error")).to_contain_text("below the minimum")
        await expect(page.locator("#f-capacity_ah")).to_have_attribute("aria-invalid", "true")
        await page.locator("#f-capacity_ah").fill("280")
        await page.get_by_role("button", name="Register").click()
        await expect(page.locator("#result-handle")).to_have_text(f"{sec.prefix}/CELL-BROWSER-1")
        await expect(page.locator("table.values")).to_contain_text("LFP-280")

        step = "resolve a cell held by another node and read the trace"
        await page.get_by_role("link", name="Resolve").click()
        await page.get_by_label("Identifier (Handle, GS1, OID or Ecode)").fill(CELL)
        await page.keyboard.press("Enter")
        await expect(page.locator("table.values")).to_contain_text("battery-cell@1")
        await expect(page.locator("#trace tbody tr")).to_have_count(2)
        await expect(page.locator("#trace")).to_contain_text("Yibin battery cell plant enterprise node")

        step = "apply for a prefix and approve it"
        await page.get_by_role("link", name="Prefix applications").click()
        await page.get_by_label("Organisation name").fill("Browser Test Co")
        await page.get_by_label("Unified social credit code").fill(PACK_USCC)
        await page.get_by_label("Contact email").fill("test@example.org")
        await page.locator("#p-secret").fill("browser-secret-1")
        await page.get_by_role("button", name="Submit application").click()
        row = page.locator("#queue tbody tr", has_text="Browser Test Co")
        await expect(row).to_contain_text("pending review")
        await row.get_by_role("button", name="Approve").click()
        row = page.locator("#queue tbody tr", has_text="Browser Test Co")
        await expect(row).to_contain_text("approved")
        await expect(row).to_contain_text("filed")

        step = "open the supply chain of the vehicle"
        await page.get_by_role("link", name="Supply chain").click()
        await page.get_by_label("Identifier of a vehicle, pack or part").fill(VEHICLE)
        await page.get_by_role("button", name="Show").click()
        await expect(page.locator("#chain-tree .cnode.ok")).to_have_count(4)
        await page.locator("#chain-tree a", has_text=CELL).click()
        await expect(page.locator("#result-handle")).to_have_text(CELL)

        step = "the language switch works on every page"
        await page.get_by_role("link", name="Language: 中文").click()
        await expect(page.get_by_role("link", name="供应链", exact=True)).to_be_visible()
    except Exception as e:
        shot = await _shot(page, "failure")
        raise AssertionError(f"browser step {step!r} failed; screenshot: {shot}") from e


async def test_keyboard_only_resolution(federation: Federation, browser: BrowserContext) -> None:
    """Skip link, visible focus and form submission with the keyboard alone."""
    rec = federation["recursive"]
    page = await browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        await page.goto(f"{rec.http_url}/console/resolve?lang=en")
        await page.keyboard.press("Tab")
        skip = page.get_by_role("link", name="Skip to content")
        await expect(skip).to_be_focused()
        await page.get_by_label("Identifier (Handle, GS1, OID or Ecode)").focus()
        await page.keyboard.type(VEHICLE)
        await page.keyboard.press("Enter")
        await expect(page.locator("#result-handle")).to_have_text(VEHICLE)
        outline = await page.locator("#id").evaluate(
            "e => { e.focus(); return getComputedStyle(e).outlineStyle }"
        )
        assert outline != "none"
    except Exception as e:
        shot = await _shot(page, "keyboard-failure")
        raise AssertionError(f"keyboard walkthrough failed; screenshot: {shot}") from e


async def test_top_console_resolves_the_demo_headlines(
    federation: Federation, browser: BrowserContext
) -> None:
    """The console URL ``idr demo`` prints (the top node): the Yibin cell by handle, GS1 element
    string and Ecode, each walked to the Yibin node, and the vehicle's supply chain."""
    top = federation["top-cq"]
    page = await browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    step = "start"
    try:
        for form in (CELL, CELL_ELEMENT_STRING, CELL_ECODE):
            step = f"resolve {form} at the top node's console"
            await page.goto(f"{top.http_url}/console/resolve?lang=en")
            await page.get_by_label("Identifier (Handle, GS1, OID or Ecode)").fill(form)
            await page.keyboard.press("Enter")
            await expect(page.locator("#result-handle")).to_have_text(CELL)
            await expect(page.locator("table.values")).to_contain_text("LFP-280Ah-prismatic")
            await expect(page.locator("table.values")).not_to_contain_text("HS_ALIAS")
            await expect(page.locator("#trace tbody tr").first).to_contain_text(top.name)
            await expect(page.locator("#trace tbody tr").last).to_contain_text(
                "Yibin battery cell plant enterprise node"
            )
            if form != CELL:
                await expect(page.locator("p.alias")).to_contain_text(CELL)
                await expect(page.locator("#result")).not_to_contain_text("{'")

        step = "the supply chain of the vehicle from the top node's console"
        await page.get_by_role("link", name="Follow its supply chain").click()
        await page.get_by_label("Identifier of a vehicle, pack or part").fill(VEHICLE)
        await page.get_by_role("button", name="Show").click()
        await expect(page.locator("#chain-tree .cnode.ok")).to_have_count(4)
        await expect(page.locator("#chain-tree")).to_contain_text(PACK)
        await expect(page.locator("#chain-tree")).not_to_contain_text("no site of the referral answered")
    except Exception as e:
        shot = await _shot(page, "top-console-failure")
        raise AssertionError(f"browser step {step!r} failed; screenshot: {shot}") from e
