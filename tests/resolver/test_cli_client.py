"""``idr resolve/create/add/modify/remove/delete/keygen`` against a live node, and the REST API and
the native protocol seeing the same records (write through one, read through the other)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import urllib3

from idr.server.http import make_http_app
from tests.resolver.native_node import SECRET, NativeThread, native_thread  # noqa: F401
from tests.resolver.native_node import run_idr as idr
from tests.server.conftest import ServerThread, basic

AUTH = ["--auth", "300:0.NA/88.100", "--secret", SECRET.decode()]


def test_resolve_udp_tcp_json(native_thread: NativeThread) -> None:  # noqa: F811
    s = native_thread.address
    for transport in ("--udp", "--tcp"):
        code, out = idr("resolve", "88.100/bench-0", transport, "--server", s)
        assert code == 0, out
        assert "88.100/bench-0" in out and "EMAIL" in out and "HS_ADMIN" in out  # the rich table
    code, out = idr("resolve", "88.100/bench-0", "--server", s, "--json", "--type", "EMAIL")
    doc = json.loads(out)
    assert code == 0 and [v["type"] for v in doc["values"]] == ["EMAIL"]
    code, out = idr("resolve", "88.100/big", "--server", s, "--json")  # TC → TCP fallback
    assert code == 0 and len(json.loads(out)["values"]) == 2


def test_resolve_errors_are_clear(native_thread: NativeThread) -> None:  # noqa: F811
    code, out = idr("resolve", "88.100/nope", "--server", native_thread.address)
    assert code == 1 and "HANDLE_NOT_FOUND (100)" in out and "Traceback" not in out
    code, out = idr("resolve", "99.999/x", "--server", native_thread.address)
    assert code == 1 and "SERVER_NOT_RESPONSIBLE (301): That prefix doesn't live here" in out
    code, out = idr("resolve", "88.100/x", "--tcp", "--server", "127.0.0.1:1", "--timeout", "1")
    assert code == 1 and "cannot connect" in out and "Traceback" not in out
    code, out = idr("resolve", "88.100/x", "--udp", "--server", "127.0.0.1:9", "--timeout", "0.2")
    assert code == 1 and ("no answer" in out or "unreachable" in out)


def test_admin_commands_with_secret_and_key(native_thread: NativeThread, tmp_path: Path) -> None:  # noqa: F811
    s = native_thread.address
    code, out = idr("create", "88.100/cli", "--value", "1:URL:https://cli.example/", "--server", s, *AUTH)
    assert code == 0 and "created 88.100/cli" in out, out
    key = tmp_path / "ed.pem"
    code, out = idr("keygen", "--type", "ed25519", str(key))
    assert code == 0 and "HS_PUBKEY" in out and key.exists() and Path(f"{key}.pub").exists()
    code, out = idr("add", "0.NA/88.100", "--value", f"310:HS_PUBKEY:@{key}.pub", "--server", s, *AUTH)
    assert code == 0, out
    key_auth = ["--auth", "310:0.NA/88.100", "--key", str(key)]
    code, out = idr("add", "88.100/cli", "--value", "2:EMAIL:cli@example.org", "--server", s, *key_auth)
    # 310 is not an admin of 88.100/cli (only 300 is): authenticated, but not authorised
    assert code == 1 and "INSUFFICIENT_PERMISSIONS" in out
    code, out = idr("add", "88.100/cli", "--value", "2:EMAIL:cli@example.org", "--server", s, *AUTH)
    assert code == 0, out
    code, out = idr("modify", "88.100/cli", "--value", "1:URL:https://cli2.example/", "--server", s, *AUTH)
    assert code == 0, out
    code, out = idr("remove", "88.100/cli", "--index", "2", "--server", s, *AUTH)
    assert code == 0, out
    code, out = idr("resolve", "88.100/cli", "--server", s, "--json")
    assert [v["index"] for v in json.loads(out)["values"]] == [1, 100]
    assert "cli2.example" in out
    code, out = idr("delete", "88.100/cli", "--server", s, "--auth", "300:0.NA/88.100", "--secret", "wrong")
    assert code == 1 and "AUTHENTICATION_FAILED (403)" in out
    code, out = idr("delete", "88.100/cli", "--server", s, *AUTH)
    assert code == 0, out


def test_admin_command_usage_errors(native_thread: NativeThread) -> None:  # noqa: F811
    code, out = idr("delete", "88.100/x", "--server", native_thread.address)
    assert code == 1 and "--auth" in out
    code, out = idr("add", "88.100/bench-0", "--value", "nonsense", "--server", native_thread.address, *AUTH)
    assert code != 0 and "INDEX:TYPE:DATA" in out


@pytest.fixture
def http_and_native(native_thread: NativeThread, tmp_path: Path) -> Iterator[tuple[NativeThread, str]]:  # noqa: F811
    server = ServerThread(make_http_app(native_thread.node.service, tls=True, max_body=64 * 1024), tmp_path)
    try:
        tls_port, _ = server.start()
        yield native_thread, f"https://127.0.0.1:{tls_port}"
    finally:
        server.stop()


def test_rest_and_native_see_the_same_records(http_and_native: tuple[NativeThread, str]) -> None:
    native_t, base = http_and_native
    s = native_t.address
    # write through the REST API (as pyhandle does), read through the native protocol
    body = {
        "values": [
            {"index": 1, "type": "URL", "data": {"format": "string", "value": "https://rest.example/"}}
        ]
    }
    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    r = requests.put(
        f"{base}/api/handles/88.100/via-rest",
        json=body,
        headers=basic("300:0.NA/88.100", SECRET.decode()),
        verify=False,
        timeout=10,
    )
    assert r.status_code in (200, 201), r.text
    code, out = idr("resolve", "88.100/via-rest", "--server", s, "--json")
    assert code == 0 and "https://rest.example/" in out, out
    # write through the native protocol, read through the REST API with the client's --http
    code, out = idr(
        "create", "88.100/via-native", "--value", "1:URL:https://native.example/", "--server", s, *AUTH
    )
    assert code == 0, out
    code, out = idr("resolve", "88.100/via-native", "--http", "--server", base, "--insecure", "--json")
    assert code == 0 and "https://native.example/" in out, out
    code, out = idr("resolve", "88.100/via-native", "--http", "--server", base)
    assert code == 1 and "--insecure" in out  # self-signed certificate refused without the flag
