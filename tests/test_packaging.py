"""Packaging: the lock agrees with pyproject's ranges; the wheel, installed alone into a clean
venv (no psycopg, no test helpers), runs ``idr init`` and ``idr serve`` and answers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ("requirements/test.lock", "requirements/node.lock")


def locked(path: Path) -> dict[str, str]:
    """name → version pinned in a lock file (``name==version \\`` lines)."""
    out = {}
    for line in path.read_text("utf-8").splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^ \\;]+)", line)
        if m:
            out[canonicalize_name(m.group(1))] = m.group(2)
    return out


def project() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("lock", LOCKS)
def test_lock_pins_every_dependency_within_its_range(lock: str) -> None:
    pins = locked(ROOT / lock)
    proj = project()
    extras: dict[str, list[str]] = proj["optional-dependencies"]  # type: ignore[assignment]
    wanted = list(proj["dependencies"]) + extras["postgres"]  # type: ignore[call-overload]
    if "test" in lock:
        wanted += [r for r in extras["test"] if not r.startswith("idr[")]
    for text in wanted:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, f"{lock} does not pin {name}: run scripts/lock"
        assert req.specifier.contains(pins[name], prereleases=True), f"{lock}: {name}=={pins[name]} not {req}"
    assert "--hash=sha256:" in (ROOT / lock).read_text("utf-8")  # installs are hash-checked


def test_every_dependency_is_a_range_and_psycopg_is_an_extra() -> None:
    proj = project()
    for text in proj["dependencies"]:  # type: ignore[attr-defined]
        req = Requirement(text)
        assert "==" not in str(req.specifier), f"{text}: a compatible range, not an exact pin"
        assert not canonicalize_name(req.name).startswith("psycopg")
    assert any(r.startswith("psycopg") for r in proj["optional-dependencies"]["postgres"])  # type: ignore[index]


def test_scripts_test_installs_from_the_lock() -> None:
    script = (ROOT / "scripts" / "test").read_text("utf-8")
    assert "--require-hashes -r requirements/test.lock" in script
    assert "--no-deps -e ." in script


def test_sqlite_node_runs_with_psycopg_unimportable(tmp_path: Path) -> None:
    """The quick check (the clean-venv test below is the real one): block psycopg's import,
    init a node, open it and resolve."""
    code = (
        "import sys\n"
        "sys.modules['psycopg'] = None; sys.modules['psycopg_pool'] = None\n"
        "from pathlib import Path\n"
        "from idr.cli.node import init_node\n"
        "from idr.core.config import NodeConfig\n"
        "from idr.core.request import Op, Request\n"
        "from idr.node import Node\n"
        "import idr.server.http, idr.server.native, idr.replication, idr.console, idr.demo\n"
        f"d = Path({str(tmp_path / 'n')!r})\n"
        "init_node(d, '88.100', secret='s3cret-key')\n"
        "node = Node(NodeConfig.load(d))\n"
        "print(node.service.handle(Request(Op.RESOLUTION, '0.NA/88.100')).code.name)\n"
        "node.close()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "SUCCESS"


def test_postgres_node_without_psycopg_says_what_to_install(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['psycopg'] = None; sys.modules['psycopg_pool'] = None\n"
        "from pathlib import Path\n"
        "from idr.core.config import NodeConfig, ConfigError\n"
        "from idr.node import open_store\n"
        f"cfg = NodeConfig(Path({str(tmp_path)!r}), store='postgres', dsn='host=x')\n"
        "try:\n"
        "    open_store(cfg)\n"
        "except ConfigError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install 'idr[postgres]'" in out.stdout


# --------------------------------------------------------------------------- the built wheel


def _run(*args: str | Path, cwd: Path | None = None, timeout: float = 600) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    out = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
    )
    assert out.returncode == 0, f"{args}: {out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(venv, wheel): the wheel built from this tree, installed into a venv that has nothing
    else (no system site-packages), its dependencies at the lock's versions."""
    base = tmp_path_factory.mktemp("wheel")
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", base / "dist", ROOT)
    (wheel,) = (base / "dist").glob("idr-*.whl")
    venv = base / "venv"
    _run(sys.executable, "-m", "venv", venv)
    constraints = base / "constraints.txt"
    constraints.write_text(
        "".join(f"{n}=={v}\n" for n, v in locked(ROOT / "requirements/node.lock").items()), "utf-8"
    )
    _run(venv / "bin/python", "-m", "pip", "install", "--quiet", "-c", constraints, wheel)
    yield venv, wheel


def test_wheel_holds_the_package_and_no_test_helpers(clean_venv: tuple[Path, Path]) -> None:
    _, wheel = clean_venv
    names = zipfile.ZipFile(wheel).namelist()
    assert "idr/cli/__init__.py" in names and "idr/console/templates/base.html" in names
    assert not [n for n in names if n.startswith("tests/") or "pgcluster" in n], names
    # the UDP burst extension, compiled for this platform (idr.server.udp), and its stub
    ext = "idr/server/_mmsg" + sysconfig.get_config_var("EXT_SUFFIX")
    assert sorted(n for n in names if n.startswith("idr/server/_mmsg")) == [ext, "idr/server/_mmsg.pyi"]


def test_wheel_in_clean_venv_inits_and_serves(clean_venv: tuple[Path, Path], tmp_path: Path) -> None:
    venv, _ = clean_venv
    py, idr = venv / "bin/python", venv / "bin/idr"
    probe = "import importlib.util as u; print(u.find_spec('psycopg'), u.find_spec('tests'))"
    assert _run(py, "-c", probe, cwd=tmp_path).split() == ["None", "None"]  # the wheel and its deps only
    data = tmp_path / "node"
    _run(idr, "init", "--data", data, "--prefix", "88.100", "--admin-secret", "s3cret-key", cwd=tmp_path)
    https, http = free_port(), free_port()
    proc = subprocess.Popen(
        [idr, "serve", "--data", data, "--https", f"127.0.0.1:{https}", "--http", f"127.0.0.1:{http}"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        got = _wait_json(f"http://127.0.0.1:{http}/api/handles/0.NA/88.100", proc)
        assert got["responseCode"] == 1 and "HS_ADMIN" in [v["type"] for v in got["values"]]
        body = {"values": [{"index": 1, "type": "URL", "data": "https://example.org/w"}]}
        put = requests.put(
            f"https://127.0.0.1:{https}/api/handles/88.100/w",
            json=body,
            auth=("300%3A0.NA/88.100", "s3cret-key"),
            verify=str(data / "tls" / "cert.pem"),
            timeout=10,
        )
        assert put.status_code in (200, 201), put.text
        got = requests.get(f"http://127.0.0.1:{http}/api/handles/88.100/w", timeout=10).json()
        assert got["values"][0]["data"]["value"] == "https://example.org/w"
    finally:
        proc.terminate()
        proc.wait(10)


def _wait_json(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"idr serve exited: {proc.stderr.read() if proc.stderr else b''!r}")
        try:
            return requests.get(url, timeout=2).json()  # type: ignore[no-any-return]
        except requests.ConnectionError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer in {timeout} s")
