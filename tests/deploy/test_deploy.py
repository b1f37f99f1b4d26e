"""The service definitions in deploy/: the systemd unit passes ``systemd-analyze verify`` without a
warning, and the Containerfile's own steps, run here as a script in a temporary directory (no
container engine on this machine: docker's daemon is not runnable), build the wheel, install it
with the lock, and its entrypoint creates a node and serves it."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is part of Debian's systemd package: apt-get install systemd"
    unit = (DEPLOY / "idr.service").read_text("utf-8")
    exec_start = re.search(r"^ExecStart=(\S+)", unit, re.M)
    assert exec_start and exec_start.group(1) == "/opt/idr/bin/idr"
    assert re.search(r"^ExecReload=/bin/kill -HUP \$MAINPID$", unit, re.M)  # reload is SIGHUP
    # verify checks that ExecStart exists: point it at this environment's idr, nothing else changes
    idr = Path(sys.executable).with_name("idr")
    assert idr.exists()
    copy = tmp_path / "idr.service"
    copy.write_text(unit.replace("/opt/idr/bin/idr", str(idr)), "utf-8")
    out = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out.stderr


# --------------------------------------------------------------------------- the Containerfile


@dataclass
class Stage:
    name: str
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m.group(1), m.group(0)), text)


def run_containerfile(path: Path, context: Path, root: Path) -> Stage:
    """Run the Containerfile's steps on this machine: every path it names through an ENV
    variable is moved under ``root`` (the file promises to name paths only that way), RUN
    steps go to sh with that environment, COPY copies. Returns the final stage."""
    moved: dict[str, str] = {}
    stages: list[Stage] = []
    for word, args in instructions(path.read_text("utf-8")):
        if word == "FROM":
            image, _, name = args.partition(" AS ")
            assert image.startswith("python:3.11"), image
            stages.append(Stage(name.strip()))
            continue
        stage = stages[-1]
        if word == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                value = expand(value, {**os.environ, **stage.env})
                if key.startswith("IDR_") and value.startswith("/"):
                    moved[value] = str(root / value.lstrip("/"))
                    value = moved[value]
                elif key == "PATH":
                    for old, new in moved.items():
                        value = value.replace(old + "/", new + "/")
                stage.env[key] = value
        elif word == "COPY":
            parts = shlex.split(expand(args, stage.env))
            if parts[0].startswith("--from="):
                parts = parts[1:]
                sources = [Path(parts[0])]
            else:
                sources = [context / p for p in parts[:-1]]
            dest = Path(parts[-1])
            assert str(dest).startswith(str(root)), f"COPY to {dest}: name it through an ENV path"
            for src in sources:
                if src == dest:  # --from= a stage that wrote there: one filesystem here
                    continue
                if src == context:
                    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(*_ignored(context)))
                elif src.is_dir():
                    shutil.copytree(src, dest, dirs_exist_ok=True)
                else:
                    dest.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dest / src.name)
        elif word == "RUN":
            script = args
            if os.geteuid() != 0:  # the image builds as root; a non-root test run cannot chown
                script = "chown() { :; }; " + script
            env = {**os.environ, **stage.env}
            env.pop("VIRTUAL_ENV", None)
            out = subprocess.run(["sh", "-ec", script], env=env, capture_output=True, text=True, timeout=900)
            assert out.returncode == 0, f"RUN {args}\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
        elif word == "ENTRYPOINT":
            cmd = json.loads(args)
            for old, new in moved.items():
                cmd = [c.replace(old + "/", new + "/") for c in cmd]
            stage.entrypoint = cmd
        else:
            assert word in ("USER", "VOLUME", "EXPOSE", "STOPSIGNAL", "WORKDIR", "LABEL"), word
    return stages[-1]


def _ignored(context: Path) -> list[str]:
    lines = (context / ".dockerignore").read_text("utf-8").splitlines()
    return [ln.strip().removeprefix("**/") for ln in lines if ln.strip() and not ln.startswith("#")]


def test_containerfile_steps_build_a_node_that_serves(tmp_path: Path) -> None:
    stage = run_containerfile(DEPLOY / "Containerfile", ROOT, tmp_path / "image")
    venv = Path(stage.env["IDR_VENV"])
    probe = "import idr, psycopg; print('ok')"  # the image serves either store engine
    assert subprocess.run([venv / "bin/python", "-c", probe], capture_output=True, text=True).stdout == "ok\n"
    assert not Path(stage.env["IDR_DIST"]).exists()  # the wheel is not left in the image
    https, http, native = free_port(), free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"},
        **stage.env,
        "IDR_PREFIX": "88.100",
        "IDR_ADMIN_SECRET": "s3cret-key",
        "IDR_HTTPS": f"127.0.0.1:{https}",
        "IDR_HTTP": f"127.0.0.1:{http}",
        "IDR_NATIVE": f"127.0.0.1:{native}",
    }
    proc = subprocess.Popen(stage.entrypoint, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
            try:
                got = requests.get(f"http://127.0.0.1:{http}/api/handles/0.NA/88.100", timeout=2).json()
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the container's node did not answer in 60 s"
                time.sleep(0.2)
        assert "HS_ADMIN" in [v["type"] for v in got["values"]]  # HS_SITE (index 1) comes first
        assert (Path(stage.env["IDR_DATA"]) / "node" / "idr.toml").is_file()
    finally:
        proc.terminate()
        assert proc.wait(15) == 0  # SIGTERM (the image's STOPSIGNAL) ends the node cleanly
