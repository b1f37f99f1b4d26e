"""Issue 12, item 10: the proxy never redirects a browser to script, and a hostile ``urlappend``
gets a clear 400 instead of a dropped connection and a traceback."""

from __future__ import annotations

import logging

import pytest

from idr.schemes.gs1_links import LinkError, link_from_json
from tests.security.conftest import Live

SCRIPTS = [
    "javascript:alert(document.cookie)",
    "JaVaScRiPt:alert(1)",
    "  javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
]


@pytest.mark.parametrize("url", SCRIPTS)
async def test_proxy_does_not_redirect_to_script(live: Live, url: str) -> None:
    status, _ = await live.put("88.100/js", [{"index": 1, "type": "URL", "data": url}])
    assert status == 200
    async with live.client.get(f"{live.http}/88.100/js", allow_redirects=False) as r:
        assert r.status != 302 and "Location" not in r.headers
        assert r.status == 200  # the values page, where the URL is shown as (escaped) text
        assert "<script>" not in await r.text()


async def test_proxy_skips_a_script_url_for_the_next_one(live: Live) -> None:
    values = [
        {"index": 1, "type": "URL", "data": "javascript:alert(1)"},
        {"index": 2, "type": "URL", "data": "https://example.org/ok"},
    ]
    status, _ = await live.put("88.100/two", values)
    assert status == 200
    async with live.client.get(f"{live.http}/88.100/two", allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"] == "https://example.org/ok"


async def test_urlappend_with_cr_lf_is_a_clear_400(live: Live, caplog: pytest.LogCaptureFixture) -> None:
    status, _ = await live.put("88.100/u", [{"index": 1, "type": "URL", "data": "https://example.org/"}])
    assert status == 200
    caplog.set_level(logging.ERROR)
    for hostile in ("%0d%0aSet-Cookie:%20a=b", "%0aX:1", "%0d", "%7f"):
        async with live.client.get(f"{live.http}/88.100/u?urlappend={hostile}", allow_redirects=False) as r:
            assert r.status == 400
            assert "Set-Cookie" not in r.headers and "X" not in r.headers
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    async with live.client.get(f"{live.http}/88.100/u?urlappend=/more", allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"] == "https://example.org//more"


def test_gs1_links_to_script_are_not_links() -> None:
    """The GS1 resolver redirects (307) to a link's href; a script href is no link at all."""
    for url in SCRIPTS:
        with pytest.raises(LinkError):
            link_from_json(b'{"linkType":"gs1:pip","href":"' + url.encode() + b'"}')
    assert link_from_json(b'{"linkType":"gs1:pip","href":"https://example.org/"}').href
