"""Templates on a node started by ``idr serve``: its own files loaded at start and listed by the
API, and enforced on removal through ``idr remove`` (native) and REST ``DELETE ?index=``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.ports import free_port

SECRET = "tmpl-secret"
AUTH = ["--auth", "300:0.NA/88.100", "--secret", SECRET]
SENSOR = """
id = "sensor"
version = 1
name = "Pressure sensor"
industry = "instruments"
[[fields]]
name = "range_kpa"
kind = "integer"
minimum = 1
[[fields]]
name = "model"
"""


def idr(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "idr", *args], capture_output=True, text=True, timeout=60, env=env
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[dict[str, str], str, int]]:
    native, https = free_port(), free_port()
    env = {**os.environ, "IDR_SERVER": f"127.0.0.1:{native}", "COLUMNS": "200"}
    data = tmp_path / "node"
    r = idr(
        "init", "--data", str(data), "--prefix", "88.100", "--admin-secret", SECRET,
        "--https", f"127.0.0.1:{https}", "--native", f"127.0.0.1:{native}", env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    (data / "templates").mkdir()
    (data / "templates" / "sensor@1.toml").write_text(SENSOR)
    proc = subprocess.Popen(
        [sys.executable, "-m", "idr", "serve", "--data", str(data)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", https)) == 0:
                    break
            assert time.monotonic() < deadline, "idr serve did not start"
            time.sleep(0.1)
        yield env, str(data / "tls" / "cert.pem"), https
    finally:
        proc.terminate()
        proc.wait(15)


def test_node_templates_are_listed_and_enforced_on_removal(served: tuple[dict[str, str], str, int]) -> None:
    env, cert, https = served
    base = f"https://127.0.0.1:{https}"
    listed = requests.get(f"{base}/api/federation/templates", verify=cert, timeout=10).json()
    refs = {t["ref"]: t for t in listed["templates"]}
    assert {"battery-cell@1", "vehicle@1", "sensor@1"} <= set(refs)
    assert refs["sensor@1"]["builtin"] is False and refs["vehicle@1"]["builtin"] is True

    create = idr(
        "create", "88.100/s-1", "--value", "2:range_kpa:600", "--value", "3:model:PX-1",
        "--value", "1001:IDR.TEMPLATE:sensor@1", *AUTH, env=env,
    )  # fmt: skip
    assert create.returncode == 0, create.stderr
    bad = idr(
        "create",
        "88.100/s-2",
        "--value",
        "2:range_kpa:0",
        "--value",
        "1001:IDR.TEMPLATE:sensor",
        *AUTH,
        env=env,
    )
    assert bad.returncode == 1 and "INVALID_VALUE" in bad.stderr and "range_kpa" in bad.stderr
    assert "Traceback" not in bad.stderr

    removed = idr("remove", "88.100/s-1", "--index", "3", *AUTH, env=env)
    assert removed.returncode == 1 and "required field is missing" in removed.stderr, removed.stderr
    r = requests.delete(
        f"{base}/api/handles/88.100/s-1?index=2", auth=("300%3A0.NA/88.100", SECRET), verify=cert, timeout=10
    )
    assert r.status_code == 400 and r.json()["responseCode"] == 202, r.text
    record = requests.get(f"{base}/api/handles/88.100/s-1", verify=cert, timeout=10).json()
    assert {v["type"] for v in record["values"]} >= {"range_kpa", "model", "IDR.TEMPLATE"}
