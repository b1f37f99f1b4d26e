"""SIGHUP on ``idr serve``: the certificate, log levels and limits change in place; what needs a
restart is logged as such; a broken idr.toml or certificate changes nothing and says why."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from idr.server.tls import generate_self_signed
from tests.operations.test_logs import edit_config, init
from tests.procs import ServeProc, serve_fresh

AUTH = ("300%3A0.NA/88.100", "s3cret-key")


def presented_certificate(port: int) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def der_of(pem: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.read_text())


def events(data: Path) -> list[dict[str, Any]]:
    path = data / "logs" / "idr.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def hup_and_wait(s: ServeProc, message: str, count: int) -> list[dict[str, Any]]:
    """SIGHUP, then wait (bounded) for the ``count``-th event whose message starts so."""
    assert s.proc is not None
    s.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while True:
        found = [e for e in events(s.data) if e["message"].startswith(message)]
        if len(found) >= count:
            return events(s.data)
        assert time.monotonic() < deadline, f"no {message!r} in {events(s.data)}"
        time.sleep(0.05)


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_sighup_reloads_certificate_levels_and_limits(tmp_path: Path) -> None:
    data = tmp_path / "node"
    init(data)
    edit_config(data, logging={"file": "logs/idr.log"})
    s = serve_fresh(data)
    try:
        first = presented_certificate(s.https)
        assert first == der_of(data / "tls" / "cert.pem")
        big = {"values": [{"index": 1, "type": "URL", "data": "https://example.org/" + "x" * 3000}]}
        url = f"https://127.0.0.1:{s.https}/api/handles/88.100/big"
        assert requests.put(url, json=big, auth=AUTH, verify=False, timeout=10).status_code in (200, 201)

        generate_self_signed(tmp_path / "new.pem", tmp_path / "new.key", common_name="renewed")
        edit_config(
            data,
            tls={"cert": str(tmp_path / "new.pem"), "key": str(tmp_path / "new.key")},
            logging={"level": "debug"},
            limits={"max_body_bytes": 1000},
            listen={"https": "127.0.0.1:1"},
        )
        log = hup_and_wait(s, "reloaded", 1)
        assert presented_certificate(s.https) == der_of(tmp_path / "new.pem")  # new handshakes
        assert requests.put(url, json=big, auth=AUTH, verify=False, timeout=10).status_code == 413
        (done,) = [e for e in log if e["message"].startswith("reloaded")]
        assert "logging" in done["applied"] and "limits.max_body_bytes" in done["applied"]
        assert done["needs_restart"] == ["https"]
        restart = [e for e in log if e["level"] == "warning" and e.get("setting") == "https"]
        assert restart and "next restart" in restart[0]["message"]

        assert any(e["level"] == "debug" and e["logger"] == "idr.reload" for e in log)  # the level took

        # A broken idr.toml changes nothing.
        good = (data / "idr.toml").read_text()
        (data / "idr.toml").write_text(good + "\n[[[ not toml\n")
        log = hup_and_wait(s, "reload refused", 1)
        assert presented_certificate(s.https) == der_of(tmp_path / "new.pem")
        (data / "idr.toml").write_text(good)

        # A certificate that does not load leaves the old one in place.
        (tmp_path / "bad.pem").write_text("not a certificate")
        edit_config(data, tls={"cert": str(tmp_path / "bad.pem"), "key": str(tmp_path / "new.key")})
        log = hup_and_wait(s, "reload: the certificate did not load", 1)
        assert presented_certificate(s.https) == der_of(tmp_path / "new.pem")
        assert requests.get(f"http://127.0.0.1:{s.http}/api/prefixes", timeout=10).status_code == 200
    finally:
        s.stop_cleanly()


SENSOR = """
id = "sensor"
version = {version}
name = "Pressure sensor"
industry = "instruments"
[[fields]]
name = "range_kpa"
kind = "integer"
minimum = {minimum}
"""


def published(s: ServeProc) -> set[str]:
    r = requests.get(f"http://127.0.0.1:{s.http}/api/federation/templates", timeout=10)
    assert r.status_code == 200, r.text
    return {t["ref"] for t in r.json()["templates"]}


def register(s: ServeProc, handle: str, ref: str, range_kpa: str) -> requests.Response:
    values = [
        {"index": 1001, "type": "IDR.TEMPLATE", "data": ref},
        {"index": 2, "type": "range_kpa", "data": range_kpa},
    ]
    return requests.put(f"https://127.0.0.1:{s.https}/api/handles/{handle}", json={"values": values},
                        auth=AUTH, verify=False, timeout=10)  # fmt: skip


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_sighup_publishes_new_templates_and_keeps_them_on_a_bad_file(tmp_path: Path) -> None:
    data = tmp_path / "node"
    init(data)
    edit_config(data, logging={"file": "logs/idr.log"})
    (data / "templates").mkdir()
    (data / "templates" / "sensor@1.toml").write_text(SENSOR.format(version=1, minimum=1))
    s = serve_fresh(data)
    try:
        assert "sensor@1" in published(s) and "sensor@2" not in published(s)
        assert register(s, "88.100/s-0", "sensor@2", "5").status_code == 400  # not published yet

        (data / "templates" / "sensor@2.toml").write_text(SENSOR.format(version=2, minimum=10))
        edit_config(data, search={"access": "anonymous"})  # a section no reload applies
        log = hup_and_wait(s, "reloaded", 1)
        (done,) = [e for e in log if e["message"].startswith("reloaded")]
        assert "templates (new: sensor@2)" in done["applied"] and done["errors"] == []
        assert done["needs_restart"] == ["search"]
        assert {"sensor@1", "sensor@2"} <= published(s)
        # checked on writes at once: sensor@2's own rule (minimum 10), not sensor@1's
        assert register(s, "88.100/s-1", "sensor@2", "5").status_code == 400
        assert register(s, "88.100/s-2", "sensor@2", "50").status_code in (200, 201)

        # A file that does not load changes nothing, and the reload says why.
        (data / "templates" / "sensor@3.toml").write_text("id = [not toml")
        log = hup_and_wait(s, "reloaded", 2)
        last = [e for e in log if e["message"].startswith("reloaded")][-1]
        assert [e for e in last["errors"] if e.startswith("templates: ") and "sensor@3" in e], last
        assert "sensor@3" not in published(s) and "sensor@2" in published(s)
        assert register(s, "88.100/s-3", "sensor@2", "60").status_code in (200, 201)
    finally:
        s.stop_cleanly()
