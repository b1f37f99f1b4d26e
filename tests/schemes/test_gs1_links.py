"""Links in handle values, negotiation steps, linkset shape and the Link header."""

from __future__ import annotations

from typing import Any

from idr.model.value import HandleValue
from idr.schemes import gs1_links as gl

PIP = gl.GS1_VOC + "pip"
EN = gl.Link(PIP, "https://e/en", "Page", ("en",), "text/html")
ZH = gl.Link(PIP, "https://e/zh", "页面", ("zh",), "text/html")
PDF = gl.Link(PIP, "https://e/pdf", "PDF", ("en",), "application/pdf", ("eu",))


def test_link_type_forms() -> None:
    for t in (
        "pip",
        "gs1:pip",
        "https://gs1.org/voc/pip",
        "https://ref.gs1.org/voc/pip",
        "http://gs1.org/voc/pip",
    ):
        assert gl.expand_link_type(t) == PIP
    assert gl.expand_link_type("schema:offers") == "http://schema.org/offers"
    assert gl.curie(PIP) == "gs1:pip"


def test_values_roundtrip_and_url_fallback() -> None:
    vals = [gl.link_value(2, EN), gl.default_type_value(1, "pip"), HandleValue(3, "URL", b"https://u")]
    links, declared = gl.links_from_values(vals)
    assert links == [EN] and declared == PIP
    links, declared = gl.links_from_values([HandleValue(1, "URL", b"https://u")])
    assert links == [gl.Link(gl.DEFAULT_LINK, "https://u")] and declared is None
    bad = HandleValue(4, "GS1_LINK", b"{not json")
    assert gl.links_from_values([bad, gl.link_value(5, ZH)])[0] == [ZH]


def test_selection_steps() -> None:
    links = [EN, ZH, PDF]
    assert gl.select(links, ["zh-cn", "en"], None, []) == [ZH]
    assert gl.select(links, ["en"], "eu", ["application/pdf"]) == [PDF]
    assert gl.select(links, ["en"], None, ["text/html"]) == [EN]
    assert gl.select(links, ["fr"], None, []) == links  # nothing matches: all of them
    assert gl.select(links, [], "eu", []) == [PDF]


def test_accept_language_order() -> None:
    assert gl.parse_accept_language("en;q=0.5, zh-CN, *;q=0.1, fr;q=0") == ["zh-cn", "en"]


def test_linkset_shape_rfc9264() -> None:
    doc: Any = gl.linkset("https://r/01/09506000134352", [EN, ZH], PIP)
    (entry,) = doc["linkset"]
    assert entry["anchor"] == "https://r/01/09506000134352"
    for rel in (PIP, gl.DEFAULT_LINK):
        for target in entry[rel]:
            assert isinstance(target["href"], str) and isinstance(target["title"], str)
            assert all(isinstance(h, str) for h in target["hreflang"])


def test_link_header_is_ascii_and_lists_links() -> None:
    h = gl.link_header("https://r/01/x", [EN, ZH, gl.Link(PIP, "https://e/\r\n", "a\r\nb")])
    h.encode("ascii")
    assert "\r" not in h and "\n" not in h
    assert '<https://r/01/x?linkType=linkset>; rel="linkset"' in h
    assert gl.LINKSET_CONTEXT in h and "title*=UTF-8''" in h


def test_templates_and_query_carry_over() -> None:
    assert gl.fill_templates("https://t/{01}/{21}", {"01": "0950", "21": "a/b"}) == "https://t/0950/a%2Fb"
    assert gl.with_query("https://t/x?a=1", "17=290101") == "https://t/x?a=1&17=290101"
    assert gl.with_query("https://t/x", "") == "https://t/x"
