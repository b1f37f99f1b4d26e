"""``idr demo`` as a newcomer runs it: starts, prints the try-list, resolves the cell, stops."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import requests

from idr.core.prefixes import uscc_error
from idr.demo import CELL, CELL_ECODE, CELL_ELEMENT_STRING


def test_demo_runs_prints_what_to_try_and_resolves_the_cell() -> None:
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1"}
    cmd = [
        sys.executable,
        "-c",
        "from idr.cli import main; main()",
        "demo",
        "--seconds",
        "6",
        "--base-port",
        "0",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert proc.stdout is not None
        out: list[str] = []
        via = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out.append(line)
            m = re.search(r"--via (http://127\.0\.0\.1:\d+)", line)
            if m and via is None:
                via = m.group(1)
            if "running for" in line:
                break
        text = "".join(out)
        assert via is not None, text
        assert "Try:" in text and "idr trace" in text and CELL in text
        assert "--trace" in text and CELL_ELEMENT_STRING in text and CELL_ECODE in text
        console = re.search(r"(http://127\.0\.0\.1:\d+/console)\b", text)
        assert console is not None, text
        assert re.search(r"https://127\.0\.0\.1:\d+/console/prefixes", text), text
        # Every unified social credit code the newcomer is told to type passes the check.
        for uscc in re.findall(r"--uscc (\S+)", text):
            assert uscc_error(uscc) is None, uscc
        page = requests.get(console.group(1), timeout=10)
        assert page.status_code == 200 and "Chengdu" in page.text
        doc = requests.get(f"{via}/api/federation/resolve", params={"handle": CELL}, timeout=10).json()
        assert doc["status"] == "SUCCESS", doc
        assert [h["node"].split()[0] for h in doc["hops"]] == ["Chongqing", "Sichuan", "Yibin"]
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, text + rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
