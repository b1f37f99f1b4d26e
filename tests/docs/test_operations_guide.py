"""docs/operations.md, run as written: every ``sh`` block in order, each as one bash script.

What changes: ``/opt/idr`` and ``/var/lib/idr`` move under a temporary directory and the
ports 8443, 8000 and 2641 become free ephemeral ones (network tests never take fixed ports).
The blocks run in a copy of the checkout (what ``pip install .`` needs), so the install really
builds and installs idr into a fresh venv. ``console`` blocks (systemd, docker) cannot run on
this machine — no systemd as PID 1, no container daemon — and tests/deploy checks what can be
checked of them. The ``toml`` block's keys must be real settings.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tomllib
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from idr.core.config import NodeConfig
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "operations.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", GUIDE.read_text("utf-8"), re.M | re.S)


# idr.toml's tables whose NodeConfig attribute has another name (NodeConfig.load)
_TABLES = {"native": "native_limits", "http": "http_limits"}


def test_toml_keys_are_settings(tmp_path: Path) -> None:
    docs = [tomllib.loads(b) for b in blocks("toml")]
    assert docs

    def check(section: dict[str, Any], cls: Any, where: str) -> None:
        names = {f.name: f for f in fields(cls)}
        for key, value in section.items():
            assert key in names, f"docs/operations.md: [{where}] {key} is not a setting"
            sub = getattr(cls(), key) if is_dataclass(cls) else None
            if isinstance(value, dict) and is_dataclass(sub):
                check(value, type(sub), f"{where}.{key}")

    for doc in docs:
        for name, section in doc.items():
            check(section, type(getattr(NodeConfig(Path(".")), _TABLES.get(name, name))), name)
        # and the node's own loader takes the block as it is (types, names, checks)
        (tmp_path / "idr.toml").write_text(tomli_w.dumps(doc))
        NodeConfig.load(tmp_path)


def test_console_blocks_name_the_deploy_files() -> None:
    text = "".join(blocks("console"))
    assert "deploy/idr.service" in text and "deploy/Containerfile" in text
    guide = GUIDE.read_text("utf-8")
    assert "deploy/entrypoint.sh" in guide


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """What a source release holds: enough for ``pip install .`` and the lock."""
    src = tmp_path / "checkout"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "requirements"):
        p = ROOT / name
        (shutil.copytree if p.is_dir() else shutil.copy2)(p, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return src


def test_operations_guide_runs_as_written(tmp_path: Path, checkout: Path) -> None:
    root = tmp_path / "root"
    ports = {"8443": free_port(), "8000": free_port(), "2641": free_port()}
    moved = {"/opt/idr": str(root / "opt" / "idr"), "/var/lib/idr": str(root / "var" / "lib" / "idr")}
    Path(moved["/var/lib/idr"]).mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    outputs: list[str] = []
    pid_file = Path(moved["/var/lib/idr"]) / "idr.pid"
    try:
        for block in blocks("sh"):
            script = block
            for old, new in moved.items():
                script = script.replace(old, new)
            script = re.sub(r"127\.0\.0\.1:(8443|8000|2641)\b", lambda m: f"127.0.0.1:{ports[m[1]]}", script)
            out = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", script],
                cwd=checkout,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            text = out.stdout + out.stderr
            assert out.returncode == 0, f"block failed ({out.returncode}):\n{block}\n{text}"
            assert "Traceback" not in text, text
            outputs.append(text)
    finally:
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
    joined = "\n".join(outputs)
    assert "Identifier registration and resolution" in outputs[0]  # idr --help from the new venv
    assert joined.count('"responseCode":1') >= 3  # served after install, restore and upgrade
    assert re.search(r"^idr_resolutions_total \d", joined, re.M)
    assert '"interface":"http"' in joined and '"handle":"0.NA/88.100"' in joined  # access log
    assert "reloaded:" in joined
    assert '"store": "sqlite"' in joined and '"seq":' in joined  # the backup's manifest
    assert "seq=" in joined  # idr backup / restore print the log position
    assert (Path(moved["/var/lib/idr"]) / "backups" / "before-upgrade" / "backup.json").is_file()
