"""Reverse lookup over HTTP (``/hrls/handles``), as Handle.Net's reverse-lookup service answers
it: pyhandle's ``search_handle`` against a node, query parameters, paging, who may search."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import tomli_w
from pyhandle.handleclient import PyHandleClient
from pyhandle.handleexceptions import ReverseLookupException

from idr.codec.values import encode_admin
from idr.core.request import Op, Request
from idr.model.errors import ResponseCode
from idr.model.value import PERM_ADMIN_READ, PERM_SECRET, AdminRecord, HandleValue, ValueReference
from tests.server.conftest import ADMIN, SECRET, Node, basic

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


def _create(node: Node, handle: str, *values: tuple[str, str], perms: int | None = None) -> None:
    vals = [HandleValue(100, "HS_ADMIN", encode_admin(AdminRecord("0.NA/88.100", 300)))]
    for i, (t, d) in enumerate(values):
        v = HandleValue(i + 1, t, d.encode())
        vals.append(v if perms is None else HandleValue(i + 1, t, d.encode(), permissions=perms))
    r = node.service.handle(
        Request(Op.CREATE_HANDLE, handle, values=tuple(vals), identity=ValueReference("0.NA/88.100", 300))
    )
    assert r.ok, r


def _fill(node: Node) -> None:
    for i in range(25):
        _create(
            node, f"88.100/obj-{i:02d}", ("URL", f"https://repo.example/obj/{i}"), ("CHECKSUM", f"c{i % 3}")
        )
    _create(node, "88.100/other", ("URL", "https://elsewhere.example/x"), ("CHECKSUM", "c0"))
    _create(node, "88.100/hidden", ("URL", "https://repo.example/hidden"), perms=PERM_ADMIN_READ)


def _get(node: Node, query: str, **kw: Any) -> requests.Response:
    headers = kw.pop("headers", basic())
    return node.s().get(f"{node.https}/hrls/handles?{query}", headers=headers, timeout=10, **kw)


def test_pyhandle_search_handle(node: Node) -> None:
    _fill(node)
    client = PyHandleClient("rest").instantiate_with_username_and_password(
        node.https, ADMIN, SECRET, HTTPS_verify=False
    )
    found = client.search_handle(URL="https://repo.example/obj/1*")
    assert found == ["88.100/obj-01", *[f"88.100/obj-{i}" for i in range(10, 20)]]
    # two fields, both must hold; pyhandle filters by prefix on its side
    assert client.search_handle(URL="*repo.example*", CHECKSUM="c2") == [
        f"88.100/obj-{i:02d}" for i in range(25) if i % 3 == 2
    ]
    assert client.search_handle(URL="*elsewhere*", CHECKSUM="c0", prefix="88.100") == ["88.100/other"]
    assert client.search_handle(URL="*elsewhere*", prefix="99.9") == []
    assert client.search_handle(URL="https://nothing.example/") == []
    # a value only admins may read is never found
    assert client.search_handle(URL="*hidden*") == []
    # a wrong password: pyhandle's "Authentication failed"
    wrong = PyHandleClient("rest").instantiate_with_username_and_password(
        node.https, ADMIN, "not-the-secret", HTTPS_verify=False
    )
    with pytest.raises(ReverseLookupException, match="Authentication failed"):
        wrong.search_handle(URL="*")


def test_query_parameters_paging_and_records(node: Node) -> None:
    _fill(node)
    everything = _get(node, "URL=*repo.example/obj/*&limit=100").json()
    assert everything == [f"88.100/obj-{i:02d}" for i in range(25)]
    pages = [_get(node, f"URL=*repo.example/obj/*&limit=10&page={p}").json() for p in (0, 10, 20)]
    assert [h for page in pages for h in page] == everything
    assert _get(node, "url=https%3A%2F%2Frepo.example%2Fobj%2F3").json() == ["88.100/obj-03"]
    rec = _get(node, "URL=https://elsewhere.example/x&retrieverecords=true").json()
    assert rec == {
        "88.100/other": [
            {"type": "URL", "value": "https://elsewhere.example/x"},
            {"type": "CHECKSUM", "value": "c0"},
            {"type": "HS_ADMIN", "value": rec["88.100/other"][2]["value"]},
        ]
    }
    assert _get(node, "URL=*&enforcesql=true&limit=2").json() == ["88.100/obj-00", "88.100/obj-01"]
    ping = node.s().get(f"{node.https}/hrls/ping", timeout=10)
    assert (ping.status_code, ping.text) == (200, "OK\n")


@pytest.mark.parametrize(
    ("query", "status", "says"),
    [
        ("", 400, "at least one TYPE=VALUE"),
        ("limit=5", 400, "at least one TYPE=VALUE"),
        ("URL=*&limit=0", 400, "limit must be 1"),
        ("URL=*&limit=10001", 400, "limit must be 1"),
        ("URL=*&limit=ten", 400, "not a number"),
        ("URL=*&page=-1", 400, "must not be negative"),
        ("URL=a%01b", 400, "control character"),
    ],
)
def test_bad_queries_say_why(node: Node, query: str, status: int, says: str) -> None:
    r = _get(node, query)
    assert r.status_code == status and says in r.json()["message"], r.text


def test_anonymous_search_needs_an_identity_by_default(node: Node) -> None:
    _fill(node)
    r = _get(node, "URL=*", headers={})
    assert r.status_code == 401 and r.json()["responseCode"] == 402
    assert "Basic" in r.headers.get("WWW-Authenticate", "") or "Handle" in r.headers.get(
        "WWW-Authenticate", ""
    )
    plain = requests.get(f"{node.http}/hrls/handles?URL=*", timeout=10)
    assert plain.status_code == 403  # no authentication over plain HTTP
    unknown = node.s().get(f"{node.https}/hrls/other", timeout=10)
    assert unknown.status_code == 404 and unknown.headers["Content-Type"].startswith("application/json")


def test_who_may_search_is_configurable(node: Node) -> None:
    _fill(node)
    svc = node.service
    # an identity that authenticates but is no admin of this node
    key = HandleValue(300, "HS_SECKEY", b"user-secret", permissions=PERM_SECRET)
    _create(node, "88.100/user", ("DESC", "a user"))
    assert svc.handle(
        Request(Op.ADD_VALUE, "88.100/user", values=(key,), identity=ValueReference("0.NA/88.100", 300))
    ).ok
    user = basic("300:88.100/user", "user-secret")
    assert _get(node, "CHECKSUM=c1", headers=user).json() == [
        f"88.100/obj-{i:02d}" for i in range(25) if i % 3 == 1
    ]
    svc.search_access = "admins"
    r = _get(node, "CHECKSUM=c1", headers=user)
    assert r.status_code == 403 and "admins only" in r.json()["message"]
    assert len(_get(node, "CHECKSUM=c1").json()) == 8
    svc.search_access = "anonymous"
    assert len(_get(node, "CHECKSUM=c1", headers={}).json()) == 8
    assert len(requests.get(f"{node.http}/hrls/handles?CHECKSUM=c1", timeout=10).json()) == 8


# -- a node started by `idr serve` with its own idr.toml --------------------------------------


@contextlib.contextmanager
def _serve(data: Path) -> Iterator[str]:
    """``idr serve`` on ``data`` in a child process; its HTTPS base URL."""
    from tests.cli.test_node_commands import free_port

    https, http = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "idr", "serve", "--data", str(data), "--https", f"127.0.0.1:{https}",
         "--http", f"127.0.0.1:{http}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(f"http://127.0.0.1:{http}/hrls/ping", timeout=1)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
                assert time.monotonic() < deadline, "idr serve did not start"
                time.sleep(0.1)
        yield f"https://127.0.0.1:{https}"
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.parametrize("access", ["authenticated", "anonymous"])
def test_pyhandle_against_idr_serve(tmp_path: Path, access: str) -> None:
    import tomllib

    from idr.cli import app
    from tests.cli.test_node_commands import AUTH, init, runner

    data = tmp_path / "node"
    init(data)
    cfg = tomllib.loads((data / "idr.toml").read_text())
    assert cfg["search"] == {"access": "authenticated", "index": "full"}  # the defaults, written out
    cfg["search"]["access"] = access
    (data / "idr.toml").write_text(tomli_w.dumps(cfg))
    # handles bulk-loaded by `idr import` are searchable too (the index is kept by that write path)
    lines = [
        json.dumps(
            {
                "handle": f"88.100/imp-{i}",
                "values": [{"index": 1, "type": "URL", "data": f"https://imp.example/{i}"}],
            }
        )
        for i in range(3)
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    r = runner.invoke(app, ["import", "--data", str(data), str(tmp_path / "in.jsonl")])
    assert r.exit_code == 0, r.output
    with _serve(data) as https:
        client = PyHandleClient("rest").instantiate_with_username_and_password(
            https, "300:0.NA/88.100", AUTH[1], HTTPS_verify=False
        )
        for i in range(3):
            client.register_handle(f"88.100/served-{i}", f"https://served.example/{i}", checksum=f"k{i}")
        assert client.search_handle(URL="https://served.example/*") == [
            f"88.100/served-{i}" for i in range(3)
        ]
        assert client.search_handle(URL="*served*", CHECKSUM="k1") == ["88.100/served-1"]
        client.modify_handle_value("88.100/served-1", URL="https://moved.example/1")
        assert client.search_handle(URL="*imp.example/2") == ["88.100/imp-2"]
        assert client.search_handle(URL="*served.example*") == ["88.100/served-0", "88.100/served-2"]
        client.delete_handle("88.100/served-0")
        assert client.search_handle(URL="*served.example*") == ["88.100/served-2"]
        anonymous = requests.get(f"{https}/hrls/handles?URL=*moved*", verify=False, timeout=10)
        if access == "anonymous":
            assert anonymous.json() == ["88.100/served-1"]
        else:
            assert anonymous.status_code == 401


def test_a_store_without_the_index_refuses_searches(tmp_path: Path) -> None:
    from idr.core.service import NodeService
    from idr.store.sqlite import SqliteStore

    svc = NodeService(SqliteStore(tmp_path / "off.db", search_mode="off"), search_access="anonymous")
    try:
        resp = svc.handle(Request(Op.SEARCH, terms=(("URL", "*"),)))
        assert resp.code == ResponseCode.OPERATION_NOT_SUPPORTED and "reverse lookup is off" in resp.message
        from idr.codec import rest

        assert rest.http_status(resp.code) == 501
    finally:
        svc.close()
