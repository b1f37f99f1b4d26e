"""The REST API's exact statuses and JSON against a real node (HTTPS and plain HTTP).

After every refused write the store's log position and handle list are compared with
what they were before: a refusal that still wrote something would fail here.
"""

from __future__ import annotations

import http.client
import json
import re
import ssl
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from idr.codec.values import decode_admin
from tests.server.conftest import ADMIN, Node, basic

H = "88.100/Item-1"


def put(node: Node, handle: str, body: Any, query: str = "", **kw: Any) -> requests.Response:
    headers = kw.pop("headers", basic())
    return node.s().put(f"{node.https}/api/handles/{handle}{query}", json=body, headers=headers, **kw)


def create(node: Node, handle: str = H, url: str = "https://example.org/1") -> None:
    r = put(node, handle, [{"index": 1, "type": "URL", "data": url}])
    assert r.status_code == 200, r.text


def raw_request(
    base: str, method: str, target: str, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """Send ``target`` byte-for-byte (requests and aiohttp normalise ``..`` away)."""
    u = urlsplit(base)
    assert u.hostname is not None and u.port is not None
    if u.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            u.hostname, u.port, context=ssl._create_unverified_context(), timeout=10
        )
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, (json.loads(body) if body[:1] == b"{" else body)
    finally:
        conn.close()


# ----------------------------------------------------------------------------- reads


def test_resolve_exact_shape(node: Node) -> None:
    r = put(
        node,
        H,
        {
            "values": [
                {
                    "index": 1,
                    "type": "URL",
                    "data": {"format": "string", "value": "x"},
                    "ttl": 60,
                    "permissions": "1110",
                }
            ]
        },
    )
    assert r.status_code == 200 and r.json() == {"responseCode": 1, "handle": H}
    got = node.s().get(f"{node.https}/api/handles/{H}?index=1").json()
    assert got["responseCode"] == 1 and got["handle"] == H
    (v,) = got["values"]
    assert set(v) == {"index", "type", "data", "ttl", "timestamp"}
    assert (v["index"], v["type"], v["data"], v["ttl"]) == (1, "URL", {"format": "string", "value": "x"}, 60)
    assert v["timestamp"].endswith("Z")


def test_case_insensitive_lookup_echoes_request(node: Node) -> None:
    create(node, "88.100/MiXeD")
    for asked in ("88.100/mixed", "88.100/MIXED", "88.100/MiXeD"):
        r = node.s().get(f"{node.http}/api/handles/{asked}")
        assert r.status_code == 200 and r.json()["handle"] == asked


def test_not_found(node: Node) -> None:
    r = node.s().get(f"{node.https}/api/handles/88.100/none")
    assert r.status_code == 404
    assert r.json() == {"responseCode": 100, "handle": "88.100/none", "message": "handle not found"}


def test_values_not_found_on_get_is_200(node: Node) -> None:
    create(node)
    r = node.s().get(f"{node.https}/api/handles/{H}?index=77")
    assert r.status_code == 200 and r.json()["responseCode"] == 200 and r.json()["values"] == []


def test_type_filter_and_secret_hidden(node: Node) -> None:
    create(node)
    r = node.s().get(f"{node.https}/api/handles/{H}?type=URL&type=EMAIL")
    assert [v["type"] for v in r.json()["values"]] == ["URL"]
    # HS_SECKEY (1100) is hidden from the public, shown to an authenticated admin
    pub = node.s().get(f"{node.https}/api/handles/0.NA/88.100").json()["values"]
    assert "HS_SECKEY" not in [v["type"] for v in pub]
    auth = node.s().get(f"{node.https}/api/handles/0.NA/88.100?publicOnly=false", headers=basic()).json()
    (sec,) = [v for v in auth["values"] if v["type"] == "HS_SECKEY"]
    assert sec["permissions"] == "1100" and sec["data"] == {"format": "string", "value": "secret-key"}


def test_percent_encoded_handle_decoded_once(node: Node) -> None:
    create(node, "88.100/a b")
    r = node.s().get(f"{node.https}/api/handles/88.100%2Fa%20b")
    assert r.status_code == 200 and r.json()["handle"] == "88.100/a b"
    # %2541 is "%41" after one decoding, not "A"
    assert node.s().get(f"{node.https}/api/handles/88.100/%2541").status_code == 404


def test_head_like_get(node: Node) -> None:
    create(node)
    r = node.s().head(f"{node.https}/api/handles/{H}")
    assert r.status_code == 200 and r.content == b""
    assert node.s().head(f"{node.https}/api/handles/88.100/none").status_code == 404


def test_post_is_get_with_params_in_body(node: Node) -> None:
    create(node)
    r = node.s().post(f"{node.https}/api/handles/{H}", json={"index": [1]})
    assert r.status_code == 200 and [v["index"] for v in r.json()["values"]] == [1]
    assert node.record(H) is not None


def test_pretty_and_jsonp(node: Node) -> None:
    create(node)
    r = node.s().get(f"{node.https}/api/handles/{H}?pretty")
    assert r.text.startswith("{\n") and r.json()["handle"] == H
    r = node.s().get(f"{node.https}/api/handles/{H}?callback=cb_1")
    assert r.headers["Content-Type"].startswith("application/javascript")
    assert r.text.startswith("/**/cb_1({") and r.text.endswith("});")
    r = node.s().get(f"{node.https}/api/handles/{H}?callback=alert(1)")
    assert r.status_code == 400 and r.json()["responseCode"] == 4


@pytest.mark.parametrize(
    "target",
    [
        "/api/handles/88.100/../0.NA/88.100",
        "/api/handles/88.100/%2E%2E/x",
        "/api/handles/88.100/a%00b",
        "/api/handles/88.100/a%0Ab",
        "/api/handles/88.100/%FF",
    ],
)
def test_bad_paths_are_invalid_handle(node: Node, target: str) -> None:
    status, body = raw_request(node.https, "GET", target)
    assert status == 400 and body["responseCode"] == 102


def test_bad_handle_syntax(node: Node) -> None:
    r = node.s().get(f"{node.https}/api/handles/no-slash")
    assert r.status_code == 400 and r.json()["responseCode"] == 102
    r = node.s().get(f"{node.https}/api/handles/")
    assert r.status_code == 400 and r.json() == {"responseCode": 102, "message": "Empty handle invalid"}


def test_not_responsible(node: Node) -> None:
    r = node.s().get(f"{node.https}/api/handles/99.999/x")
    assert r.status_code == 400 and r.json()["responseCode"] == 301


def test_unknown_endpoint_and_method(node: Node) -> None:
    r = node.s().get(f"{node.https}/api/nothing/here")
    assert r.status_code == 404
    assert r.json() == {"responseCode": 4, "message": "Unknown HTTP API endpoint GET /api/nothing/here"}
    r = node.s().patch(f"{node.https}/api/handles/{H}", headers=basic(), json=[])
    assert r.status_code == 405 and r.json()["responseCode"] == 4


# ----------------------------------------------------------------------------- writes


def test_create_overwrite_false_201_then_409(node: Node) -> None:
    body = [{"index": 1, "type": "URL", "data": "https://a"}]
    r = put(node, H, body, "?overwrite=false")
    assert r.status_code == 201 and r.json() == {"responseCode": 1, "handle": H}
    before = node.snapshot()
    r = put(node, H, [{"index": 1, "type": "URL", "data": "https://b"}], "?overwrite=false")
    assert r.status_code == 409 and r.json()["responseCode"] == 101
    assert node.snapshot() == before
    rec = node.record(H)
    assert rec is not None and rec.values[0].data == b"https://a"


def test_put_replaces_whole_record_by_default(node: Node) -> None:
    put(node, H, [{"index": 1, "type": "URL", "data": "a"}, {"index": 2, "type": "DESC", "data": "d"}])
    r = put(node, H, [{"index": 5, "type": "EMAIL", "data": "e@x"}])
    assert r.status_code == 200
    rec = node.record(H)
    assert rec is not None and {v.index for v in rec.values} == {5, 100}  # default admin added


def test_put_with_index_adds_and_replaces(node: Node) -> None:
    create(node)
    r = put(
        node,
        H,
        [{"index": 1, "type": "URL", "data": "https://new"}, {"index": 7, "type": "DESC", "data": "seven"}],
        "?index=1&index=7",
    )
    assert r.status_code == 200
    rec = node.record(H)
    assert rec is not None and rec.value(1).data == b"https://new" and rec.value(7).data == b"seven"  # type: ignore[union-attr]
    # overwrite=false on an existing index: 409/201, nothing changes
    before = node.snapshot()
    r = put(node, H, {"index": 1, "type": "URL", "data": "zzz"}, "?index=1&overwrite=false")
    assert r.status_code == 409 and r.json()["responseCode"] == 201
    assert node.snapshot() == before
    # index=various takes whatever the body has; a new value with overwrite=false → 201
    r = put(node, H, [{"index": 9, "type": "DESC", "data": "nine"}], "?index=various&overwrite=false")
    assert r.status_code == 201


def test_put_index_mismatch(node: Node) -> None:
    create(node)
    before = node.snapshot()
    r = put(node, H, [{"index": 2, "type": "DESC", "data": "x"}], "?index=3")
    assert r.status_code == 400 and r.json()["responseCode"] == 4
    assert node.snapshot() == before


def test_mismatched_handle_in_body(node: Node) -> None:
    before = node.snapshot()
    r = put(node, H, {"handle": "88.100/other", "values": [{"index": 1, "type": "URL", "data": "x"}]})
    assert r.status_code == 400 and r.json()["message"] == "Mismatched handle in PUT request"
    assert node.snapshot() == before
    r = put(node, H, {"handle": H.upper(), "values": [{"index": 1, "type": "URL", "data": "x"}]})
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([{"index": 1, "type": "URL", "data": "a"}, {"index": 1, "type": "DESC", "data": "b"}], "twice"),
        ([{"index": 1, "type": "HS_BOGUS", "data": "a"}], "HS_BOGUS"),
        (
            [{"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {"index": 200}}}],
            "values[0].data.value.handle",
        ),
        ([{"index": 100, "type": "HS_ADMIN", "data": "not admin bytes"}], "HS_ADMIN"),
        ([{"index": "x", "type": "URL", "data": "a"}], "values[0].index"),
        ([{"index": 1, "type": "URL"}], "values[0].data"),
        ([{"index": 1, "type": "URL", "data": {"format": "base64", "value": "!!"}}], "base64"),
        ([{"index": 1, "type": "URL", "data": "a", "ttl": "yesterday"}], "values[0].ttl"),
        ([{"index": 1, "type": "URL", "data": "a", "permissions": "2"}], "values[0].permissions"),
        ([{"index": 0, "type": "URL", "data": "a"}], "index 0"),
    ],
)
def test_invalid_values_are_202(node: Node, body: Any, field: str) -> None:
    before = node.snapshot()
    r = put(node, H, body)
    assert r.status_code == 400 and r.json()["responseCode"] == 202, r.text
    assert field in r.json()["message"]
    assert node.snapshot() == before and node.record(H) is None


def test_malformed_json(node: Node) -> None:
    before = node.snapshot()
    r = node.s().put(
        f"{node.https}/api/handles/{H}",
        data=b'[{"index":1,',
        headers={**basic(), "Content-Type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["responseCode"] == 4
    assert r.json()["message"].startswith("malformed JSON")
    r = put(node, H, "just a string")
    assert r.status_code == 400 and r.json()["responseCode"] == 4
    assert node.snapshot() == before


def test_wrong_content_type(node: Node) -> None:
    before = node.snapshot()
    r = node.s().put(
        f"{node.https}/api/handles/{H}", data=b"[]", headers={**basic(), "Content-Type": "text/plain"}
    )
    assert r.status_code == 400
    assert r.json() == {"responseCode": 4, "message": "Unsupported media type text/plain"}
    assert node.snapshot() == before


def test_oversized_body(node: Node) -> None:
    before = node.snapshot()
    big = [{"index": i, "type": "DESC", "data": "x" * 1000} for i in range(1, 100)]  # > 64 KiB limit
    r = put(node, H, big)
    assert r.status_code == 413 and r.json()["responseCode"] == 4
    assert node.snapshot() == before


def test_unauthenticated_write_401(node: Node) -> None:
    before = node.snapshot()
    r = put(node, H, [{"index": 1, "type": "URL", "data": "x"}], headers={})
    assert r.status_code == 401 and r.json()["responseCode"] == 402
    # both of Handle.Net's challenges: Basic, and Handle with a fresh session and nonce
    basic_challenge, handle_challenge = r.raw.headers.getlist("WWW-Authenticate")
    assert basic_challenge == 'Basic realm="handle"'
    assert re.fullmatch(r'Handle sessionId="[-\w]+", nonce="[A-Za-z0-9+/]{22}=="', handle_challenge)
    r = node.s().delete(f"{node.https}/api/handles/0.NA/88.100")
    assert r.status_code == 401 and r.json()["responseCode"] == 402
    assert node.snapshot() == before


def test_wrong_secret(node: Node) -> None:
    before = node.snapshot()
    for headers in (
        basic(password="wrong"),
        basic(user="301:0.NA/88.100"),
        basic(user="garbage"),
        {"Authorization": "Basic !!!"},
        {"Authorization": "Bearer abc"},
    ):
        r = put(node, H, [{"index": 1, "type": "URL", "data": "x"}], headers=headers)
        assert r.status_code == 401 and r.json()["responseCode"] == 403, headers
        assert "WWW-Authenticate" in r.headers
    assert node.snapshot() == before


def test_insufficient_permissions(node: Node) -> None:
    # A second identity with a key but no admin rights on 88.100
    put(
        node,
        "88.100/user",
        [
            {"index": 300, "type": "HS_SECKEY", "data": "pw", "permissions": "1100"},
            {
                "index": 100,
                "type": "HS_ADMIN",
                "data": {
                    "format": "admin",
                    "value": {"handle": "88.100/user", "index": 300, "permissions": "011111111111"},
                },
            },
        ],
    )
    before = node.snapshot()
    r = put(node, H, [{"index": 1, "type": "URL", "data": "x"}], headers=basic("300:88.100/user", "pw"))
    assert r.status_code == 403 and r.json()["responseCode"] == 401
    assert node.snapshot() == before


def test_basic_token_checked_against_the_current_key_every_time(node: Node) -> None:
    """A Basic token is parsed once and kept (a writer sends the same one on every request),
    but its password is compared with the identity's HS_SECKEY as it is now: once the key
    changes, the same token fails at once, and the new one works; once the identity is
    deleted, no token of it works."""
    user = "88.100/keyholder"

    def key(secret: str) -> list[dict[str, Any]]:
        return [{"index": 300, "type": "HS_SECKEY", "data": secret, "permissions": "1100"}]

    assert put(node, user, key("pw-1")).status_code == 200
    old, new = basic(f"300:{user}", "pw-1"), basic(f"300:{user}", "pw-2")
    for _ in range(3):  # the token is parsed once, then found again
        r = put(node, f"{user}-item", [{"index": 1, "type": "URL", "data": "x"}], headers=old)
        assert r.status_code == 403 and r.json()["responseCode"] == 401  # authenticated, no rights
    assert put(node, user, key("pw-2")).status_code == 200  # the admin changes the key
    for headers, status, code in ((old, 401, 403), (new, 403, 401), (old, 401, 403)):
        r = put(node, f"{user}-item", [{"index": 1, "type": "URL", "data": "x"}], headers=headers)
        assert (r.status_code, r.json()["responseCode"]) == (status, code), headers
    assert node.s().delete(f"{node.https}/api/handles/{user}", headers=basic()).status_code == 200
    r = put(node, f"{user}-item", [{"index": 1, "type": "URL", "data": "x"}], headers=new)
    assert (r.status_code, r.json()["responseCode"]) == (401, 403)


def test_writes_over_plain_http_refused(node: Node) -> None:
    create(node)
    before = node.snapshot()
    body: Any = [{"index": 1, "type": "URL", "data": "x"}]
    for headers in ({}, basic()):
        r = node.s().put(f"{node.http}/api/handles/{H}", json=body, headers=headers)
        assert r.status_code == 403 and r.json()["message"] == "authentication requires HTTPS"
        r = node.s().delete(f"{node.http}/api/handles/{H}", headers=headers)
        assert r.status_code == 403
    # credentials over plain HTTP are refused even for a read
    r = node.s().get(f"{node.http}/api/handles/{H}", headers=basic())
    assert r.status_code == 403 and "HTTPS" in r.json()["message"]
    assert node.snapshot() == before


def test_delete_values_and_handle(node: Node) -> None:
    put(node, H, [{"index": 1, "type": "URL", "data": "a"}, {"index": 2, "type": "DESC", "data": "b"}])
    r = node.s().delete(f"{node.https}/api/handles/{H}?index=2", headers=basic())
    assert r.status_code == 200 and r.json() == {"responseCode": 1, "handle": H}
    rec = node.record(H)
    assert rec is not None and rec.value(2) is None and rec.value(1) is not None
    before = node.snapshot()
    r = node.s().delete(f"{node.https}/api/handles/{H}?index=2", headers=basic())
    assert r.status_code == 400 and r.json()["responseCode"] == 200  # pyhandle's "values not found"
    assert node.snapshot() == before
    r = node.s().delete(f"{node.https}/api/handles/{H.lower()}", headers=basic())
    assert r.status_code == 200 and r.json()["handle"] == H.lower()
    assert node.record(H) is None
    r = node.s().delete(f"{node.https}/api/handles/{H}", headers=basic())
    assert r.status_code == 404 and r.json()["responseCode"] == 100


def test_mint_new_suffix(node: Node) -> None:
    r = put(node, "88.100/", [{"index": 1, "type": "URL", "data": "x"}], "?mintNewSuffix=true")
    assert r.status_code == 200
    minted = r.json()["handle"]
    assert minted.startswith("88.100/") and len(minted) > len("88.100/")
    assert node.record(minted) is not None


def test_structured_formats_round_trip(node: Node) -> None:
    body = [
        {
            "index": 100,
            "type": "HS_ADMIN",
            "data": {
                "format": "admin",
                "value": {"handle": "0.NA/88.100", "index": "300", "permissions": "*"},
            },
        },
        {
            "index": 200,
            "type": "HS_VLIST",
            "data": {"format": "vlist", "value": [{"handle": "0.NA/88.100", "index": 300}]},
        },
        {"index": 3, "type": "BLOB", "data": {"format": "hex", "value": "00ff10"}},
        {
            "index": 4,
            "type": "DESC",
            "data": {"format": "base64", "value": "5Lit5paH"},
            "ttl": "2030-01-01T00:00:00Z",
        },
        {"index": 5, "type": "URL", "data": "x", "references": [{"handle": "88.100/ref", "index": 1}]},
    ]
    assert put(node, H, body).status_code == 200
    rec = node.record(H)
    assert rec is not None
    assert decode_admin(rec.value(100).data).permissions == 0xFFF  # type: ignore[union-attr]
    vals = {v["index"]: v for v in node.s().get(f"{node.https}/api/handles/{H}").json()["values"]}
    assert vals[100]["data"] == {
        "format": "admin",
        "value": {"handle": "0.NA/88.100", "index": 300, "permissions": "111111111111"},
    }
    assert vals[200]["data"] == {"format": "vlist", "value": [{"handle": "0.NA/88.100", "index": 300}]}
    assert vals[3]["data"] == {"format": "base64", "value": "AP8Q"}
    assert (
        vals[4]["data"] == {"format": "string", "value": "中文"} and vals[4]["ttl"] == "2030-01-01T00:00:00Z"
    )
    assert vals[5]["references"] == [{"handle": "88.100/ref", "index": 1}]


# ----------------------------------------------------------------------------- listing, prefixes


def test_list_handles_paged(node: Node) -> None:
    for i in range(7):
        create(node, f"88.100/L{i}")
    r = node.s().get(f"{node.https}/api/handles?prefix=88.100", headers=basic())
    body = r.json()
    assert r.status_code == 200 and body["totalCount"] == "7" and body["prefix"] == "88.100"
    assert body["handles"] == [f"88.100/L{i}" for i in range(7)]
    pages = [
        node.s()
        .get(f"{node.https}/api/handles?prefix=0.NA/88.100&page={p}&pageSize=3", headers=basic())
        .json()
        for p in range(4)
    ]
    assert [p["handles"] for p in pages] == [
        [f"88.100/L{i}" for i in (0, 1, 2)],
        [f"88.100/L{i}" for i in (3, 4, 5)],
        ["88.100/L6"],
        [],
    ]
    assert all(p["totalCount"] == "7" and p["pageSize"] == 3 for p in pages)
    r = node.s().get(f"{node.https}/api/handles?prefix=88.100&page=0&pageSize=0", headers=basic()).json()
    assert r["totalCount"] == "7" and r["handles"] == []


def test_list_handles_needs_auth(node: Node) -> None:
    r = node.s().get(f"{node.https}/api/handles?prefix=88.100")
    assert r.status_code == 401 and r.json()["responseCode"] == 402
    r = node.s().get(f"{node.http}/api/handles?prefix=88.100")
    assert r.status_code == 403 and r.json()["responseCode"] == 402


def test_prefixes(node: Node) -> None:
    r = node.s().get(f"{node.https}/api/prefixes")
    assert r.status_code == 200 and r.json() == {"responseCode": 1, "totalCount": "1", "prefixes": ["88.100"]}
    r = node.s().post(f"{node.https}/api/prefixes?prefix=88.200", headers=basic())
    assert r.status_code == 200 and r.json() == {"responseCode": 1, "handle": "88.200"}
    assert node.s().get(f"{node.https}/api/prefixes").json()["prefixes"] == ["88.100", "88.200"]
    # now responsible for 88.200: a lookup is a 404, not a 301
    assert node.s().get(f"{node.https}/api/handles/88.200/x").json()["responseCode"] == 100
    before = node.snapshot()
    assert node.s().post(f"{node.https}/api/prefixes?prefix=88.300").status_code == 401
    assert node.s().post(f"{node.http}/api/prefixes?prefix=88.300", headers={}).status_code == 403
    assert node.snapshot() == before
    r = node.s().delete(f"{node.https}/api/prefixes?prefix=88.200", headers=basic())
    assert r.status_code == 200
    assert node.s().get(f"{node.https}/api/prefixes").json()["prefixes"] == ["88.100"]
    r = node.s().post(f"{node.https}/api/prefixes", headers=basic())
    assert r.status_code == 400 and r.json()["message"] == "Prefix not specified in homing request"


def test_identity_in_username_must_be_percent_encoded(node: Node) -> None:
    """Basic splits at the first ':', so ``index:handle`` must be sent as ``index%3Ahandle``
    (manual §14.6); unencoded, the identity is just "300" and authentication fails."""
    import base64

    plain = base64.b64encode(f"{ADMIN}:secret-key".encode()).decode()
    r = put(node, H, [{"index": 1, "type": "URL", "data": "x"}], headers={"Authorization": f"Basic {plain}"})
    assert r.status_code == 401
    minimal = base64.b64encode(b"300%3A0.NA/88.100:secret-key").decode()
    r = put(
        node, H, [{"index": 1, "type": "URL", "data": "x"}], headers={"Authorization": f"Basic {minimal}"}
    )
    assert r.status_code == 200
