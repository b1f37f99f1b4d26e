"""docs/federation.md's "Build a federation by hand", run as written: separate ``idr serve``
processes (top, secondary, recursive, enterprise) joined from the CLI alone, the prefix
lifecycle (apply → review → allocate → file → verify), and resolution across them.

Only the ports change (each ``127.0.0.1:PORT`` of the recipe becomes a free ephemeral one);
each ``sh`` block runs as one bash session in a scratch directory, with ``set -e``; the
``idr serve … &`` processes are recorded and stopped at the end.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ports import free_port

DOC = Path(__file__).resolve().parents[2] / "docs" / "federation.md"
SECTION = "Build a federation by hand"


def recipe_blocks() -> list[str]:
    text = DOC.read_text("utf-8")
    m = re.search(rf"^## {re.escape(SECTION)}\n(.*?)(?=^## )", text, re.M | re.S)
    assert m, f"docs/federation.md has no section {SECTION!r}"
    blocks = re.findall(r"```sh\n(.*?)```", m.group(1), re.S)
    assert len(blocks) == 3, "the recipe has three blocks: nodes, lifecycle, enterprise node"
    return blocks


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "200"
    env.pop("IDR_SERVER", None)
    try:
        yield tmp_path, env
    finally:
        for pids in tmp_path.glob("**/serve.pids"):
            _stop(pids)


def _stop(pids: Path) -> None:
    """Stop the ``idr serve`` processes a recipe run recorded (SIGTERM, then SIGKILL)."""
    started = pids.read_text().split() if pids.exists() else []
    for line in started:
        try:
            os.kill(int(line), signal.SIGTERM)
        except ProcessLookupError:
            continue
    for line in started:
        for _ in range(100):
            try:
                os.kill(int(line), 0)
            except ProcessLookupError:
                break
            subprocess.run(["sleep", "0.1"], check=False)
        else:
            os.kill(int(line), signal.SIGKILL)
    pids.unlink(missing_ok=True)


def test_the_recipe_builds_a_federation_from_the_cli(scratch: tuple[Path, dict[str, str]]) -> None:
    tmp, env = scratch
    # The recipe's ports are picked free here and bound by its nodes later: another suite on the
    # machine may take one in between. That run (and only that) is tried again on other ports.
    for attempt in range(3):
        cwd = tmp / f"run{attempt}"
        cwd.mkdir()
        try:
            outputs = _run_recipe(cwd, env)
            break
        except AssertionError as e:
            if "address already in use" not in str(e).lower() or attempt == 2:
                raise
            _stop(cwd / "serve.pids")
    _check_outputs(outputs)


def _run_recipe(cwd: Path, env: dict[str, str]) -> list[str]:
    blocks = recipe_blocks()
    ports: dict[str, int] = {}

    def moved(m: re.Match[str]) -> str:
        return f"127.0.0.1:{ports.setdefault(m.group(1), free_port())}"

    outputs = []
    for i, block in enumerate(blocks):
        script = re.sub(r"127\.0\.0\.1:(\d+)", moved, block)
        # Record each background node's pid, so the test stops what the recipe started.
        script = re.sub(
            r"^(idr serve .*?) &$", r"\1 >>serve.log 2>&1 & echo $! >> serve.pids", script, flags=re.M
        )
        r = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + script],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        out = " ".join((r.stdout + r.stderr).split())
        log = (cwd / "serve.log").read_text() if (cwd / "serve.log").exists() else ""
        assert r.returncode == 0, (
            f"recipe block {i + 1} failed ({r.returncode}):\n{out}\nnodes:\n{log[-3000:]}"
        )
        assert "Traceback" not in out, out
        outputs.append(out)
    return outputs


def _check_outputs(outputs: list[str]) -> None:
    nodes, lifecycle, enterprise = outputs
    assert "✓ 0.NA/88.168 at" in nodes and "HS_SITE, HS_SITE.PREFIX" in nodes
    assert "files prefixes with https://127.0.0.1:" in nodes
    assert "pending" in lifecycle and "approved → prefix 88.168.6; filed with the top" in lifecycle
    assert "prefix 88.168.6 filed: yes" in lifecycle and "answering: yes" in lifecycle
    assert "✓ 0.NA/88.168.6 at" in enterprise and "served by Yibin cell plant" in enterprise
    assert "created 88.168.6/CELL-1" in enterprise
    assert "https://yibin.example/cells/1" in enterprise  # through the recursive node
    assert "PREFIX_REFERRAL (303): 88.168.6/CELL-1 is served elsewhere" in enterprise
    assert "Sichuan secondary node (primary)" in enterprise  # the top names where it refers
    assert "identifier 88.168.6/CELL-1: yes" in enterprise
