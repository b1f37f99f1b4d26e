"""The hdl.handle.net-style proxy: ``GET /{handle}`` redirects, shows values, follows aliases."""

from __future__ import annotations

from typing import Any

from tests.server.conftest import Node, basic


def _put(node: Node, handle: str, values: list[dict[str, Any]]) -> None:
    r = node.s().put(f"{node.https}/api/handles/{handle}", json=values, headers=basic())
    assert r.status_code == 200, r.text


def test_redirects_to_first_url(node: Node) -> None:
    _put(
        node,
        "88.100/car",
        [
            {"index": 2, "type": "URL.alt", "data": "https://alt.example"},
            {"index": 5, "type": "URL", "data": "https://car.example/vin1"},
            {"index": 9, "type": "URL", "data": "https://later.example"},
        ],
    )
    r = node.s().get(f"{node.http}/88.100/CAR", allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"] == "https://car.example/vin1"
    assert r.headers["Content-Type"].startswith("text/html") and "https://car.example/vin1" in r.text
    r = node.s().get(f"{node.http}/88.100/car?urlappend=/x", allow_redirects=False)
    assert r.headers["Location"] == "https://car.example/vin1/x"
    assert node.s().head(f"{node.https}/88.100/car", allow_redirects=False).status_code == 302


def test_url_subtype_when_no_url(node: Node) -> None:
    _put(node, "88.100/sub", [{"index": 3, "type": "URL.doc", "data": "https://doc.example"}])
    r = node.s().get(f"{node.http}/88.100/sub", allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"] == "https://doc.example"


def test_noredirect_and_json(node: Node) -> None:
    _put(node, "88.100/car", [{"index": 1, "type": "URL", "data": "https://x.example/<b>"}])
    r = node.s().get(f"{node.http}/88.100/car?noredirect", allow_redirects=False)
    assert r.status_code == 200 and "text/html" in r.headers["Content-Type"]
    assert "https://x.example/&lt;b&gt;" in r.text and "<b>" not in r.text
    r = node.s().get(f"{node.http}/88.100/Car", headers={"Accept": "application/json"}, allow_redirects=False)
    assert r.status_code == 200 and r.json()["handle"] == "88.100/Car"


def test_no_url_shows_values(node: Node) -> None:
    _put(node, "88.100/plain", [{"index": 1, "type": "DESC", "data": "battery cell"}])
    r = node.s().get(f"{node.http}/88.100/plain", allow_redirects=False)
    assert r.status_code == 200 and "battery cell" in r.text


def test_alias_followed(node: Node) -> None:
    _put(node, "88.100/target", [{"index": 1, "type": "URL", "data": "https://target.example"}])
    _put(node, "88.100/a1", [{"index": 1, "type": "HS_ALIAS", "data": "88.100/target"}])
    _put(node, "88.100/a2", [{"index": 1, "type": "HS_ALIAS", "data": "88.100/a1"}])
    r = node.s().get(f"{node.http}/88.100/a2", allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"] == "https://target.example"


def test_alias_loop_is_bounded(node: Node) -> None:
    _put(node, "88.100/x", [{"index": 1, "type": "HS_ALIAS", "data": "88.100/y"}])
    _put(node, "88.100/y", [{"index": 1, "type": "HS_ALIAS", "data": "88.100/x"}])
    r = node.s().get(f"{node.http}/88.100/x", allow_redirects=False)
    assert r.status_code == 500 and "aliases" in r.text


def test_missing_and_invalid(node: Node) -> None:
    r = node.s().get(f"{node.http}/88.100/missing", allow_redirects=False)
    assert r.status_code == 404 and "not found" in r.text.lower()
    assert node.s().get(f"{node.http}/noslash", allow_redirects=False).status_code == 400
    assert node.s().get(f"{node.http}/", allow_redirects=False).status_code == 200


def test_reserved_roots_are_not_handles(node: Node) -> None:
    for path in ("/metrics", "/static/x.css", "/console/", "/.well-known/x"):
        assert node.s().get(f"{node.http}{path}", allow_redirects=False).status_code == 404
