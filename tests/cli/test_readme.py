"""The README's node examples, run as written: its ``sh`` blocks, line by line, through bash.

Only the listen ports change (the README's 8443/8000/2641 become free ephemeral ones, as every
network test here must; the client commands' default server follows through ``$IDR_SERVER``);
commands run in a scratch directory, so ``./node`` and ``admin.pem`` are the README's own
relative paths. ``idr serve`` runs in the background until the end.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ports import free_port

README = Path(__file__).resolve().parents[2] / "README.md"
SECTIONS = (
    "Using a node",
    "HTTP API (Handle.Net 9 REST shapes)",
    "Reverse lookup (`/hrls/handles`)",
    "Native Handle protocol (UDP and TCP, port 2641)",
    "GS1 keys",
)


def sh_blocks(section: str) -> list[str]:
    """The commands of the ``sh`` blocks under heading ``section`` (continuations joined)."""
    text = README.read_text("utf-8")
    m = re.search(rf"^#{{2,}} {re.escape(section)}\n(.*?)(?=^#{{2,}} )", text, re.M | re.S)
    assert m, f"README has no section {section!r}"
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", m.group(1), re.S):
        joined = block.replace("\\\n", " ")
        commands += [
            line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
        ]
    assert commands, f"no sh block under {section!r}"
    return commands


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], list[subprocess.Popen[bytes]]]]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "200"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield tmp_path, env, procs
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            pytest.fail(f"idr serve exited: {err}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail("idr serve did not start listening")


def test_readme_node_examples_run_as_written(
    workdir: tuple[Path, dict[str, str], list[subprocess.Popen[bytes]]],
) -> None:
    cwd, env, procs = workdir
    ports = {"8443": free_port(), "8000": free_port(), "2641": free_port()}
    env["IDR_SERVER"] = f"127.0.0.1:{ports['2641']}"  # the clients' default server, moved with it
    # The import example's file, in the format the README describes (one JSON object per line).
    (cwd / "handles.jsonl").write_text(
        "".join(
            json.dumps(
                {"handle": h, "values": [{"index": 1, "type": "URL", "data": "https://example.org/b"}]}
            )
            + "\n"
            for h in ("88.100/bench-0", "88.100/BAT-2024-000001")
        )
    )
    ran: list[tuple[str, str]] = []
    for section in SECTIONS:
        for line in sh_blocks(section):
            cmd = re.sub(r"127\.0\.0\.1:(8443|8000|2641)\b", lambda m: f"127.0.0.1:{ports[m.group(1)]}", line)
            if cmd.startswith("idr serve"):
                proc = subprocess.Popen(
                    ["bash", "-c", f"exec {cmd}"],
                    cwd=cwd,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                procs.append(proc)
                for port in ports.values():
                    _wait_listening(port, proc)
                continue
            r = subprocess.run(
                ["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
            )
            out = r.stdout + r.stderr
            assert r.returncode == 0, f"README command failed ({r.returncode}): {line}\n{out}"
            assert "Traceback" not in out, out
            ran.append((line, out))
    outputs = {line.split(" --")[0]: out for line, out in ran}
    assert "2 handles loaded" in " ".join(outputs["idr import"].split())
    assert "https://example.org/b" in outputs["idr resolve 88.100/bench-0"]
    assert "modified 1 value(s) of 88.100/item-2" in outputs["idr modify 88.100/item-2"]
    gs1_links = [out for line, out in ran if line.startswith("idr gs1 link")]
    assert gs1_links[0].strip() == "https://id.gs1.org/GhFKk4XBoIdXjPjlnrtvwjaag"
    scanned = json.loads(gs1_links[1])
    assert scanned["elementString"] == "(01)09506000134352(10)ABC(17)290101"
    assert scanned["compressed"].startswith("https://id.gs1.org/")
    curl = [out for line, out in ran if line.startswith("curl")]
    assert '"responseCode":1' in curl[0].replace(" ", "")  # the imported BAT-2024-000001
    proxy = next(out for line, out in ran if line.startswith("curl -ki"))
    assert "302" in proxy.split("\n")[0] or "301" in proxy.split("\n")[0]  # the proxy redirect
    hrls = next(out for line, out in ran if "/hrls/handles" in line)
    # the two imported handles and the one the PUT example made, in key order
    found = json.JSONDecoder().raw_decode(hrls)[0]  # curl's progress meter follows on stderr
    assert found == ["88.100/BAT-2024-000001", "88.100/bench-0", "88.100/x"]
    walk = next(out for line, out in ran if "--root" in line)
    assert "https://example.org/b" in walk and "SUCCESS" in walk
