"""Issue 12, items 8 and 13: secrets on disk are the node user's alone, and the secrets an
operator sets are not ones a guesser gets.

* ``idr init`` and ``idr serve`` leave the data directory 0700 and every file in it 0600 —
  idr.sqlite3 and its -wal/-shm (HS_SECKEY values), idr.toml (the replication key), TLS keys —
  with the process umask at the usual 022; a directory made before is closed up at start.
* The replication key is a generated 256-bit key: ``idr replication setup`` makes one, refuses
  a passphrase, and a node whose idr.toml holds a weak one does not start its link.
* ``idr init --admin-secret ''`` and the secrets every guesser tries first are refused, and
  nothing is left behind.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from idr.cli import app
from idr.core.config import ConfigError, NodeConfig
from idr.core.secret_policy import link_secret_problem
from idr.node import Node
from tests.security.conftest import basic, start_live

runner = CliRunner()


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    out = {}
    for p in [root, *root.rglob("*")]:
        if not p.is_symlink():
            out[str(p.relative_to(root))] = stat.S_IMODE(p.stat().st_mode)
    return out


def _assert_private(root: Path) -> None:
    for name, mode in _modes(root).items():
        assert mode & 0o077 == 0, f"{name} is {oct(mode)}"


async def test_init_and_serve_leave_nothing_readable_by_others(tmp_path: Path) -> None:
    data = tmp_path / "node"
    async with start_live(data) as live:
        body = [
            {"index": 1, "type": "URL", "data": "https://example.org/"},
            {"index": 300, "type": "HS_SECKEY", "data": "a-secret-key-value"},
        ]
        status, _ = await live.put("88.100/x", body, basic())
        assert status == 200
        names = set(_modes(data))
        assert {"idr.toml", "idr.sqlite3", "tls/key.pem"} <= names
        assert any(n.startswith("idr.sqlite3-") for n in names)  # WAL files exist while it runs
        _assert_private(data)
    _assert_private(data)


async def test_a_data_directory_made_before_is_closed_up_at_start(tmp_path: Path) -> None:
    data = tmp_path / "old"
    async with start_live(data):
        pass
    for p in [data, *data.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)  # as an older idr (umask 022) left them
    node = Node(NodeConfig.load(data))
    node.close()
    _assert_private(data)


def test_replication_setup_generates_a_256_bit_key_and_refuses_a_passphrase(tmp_path: Path) -> None:
    data = tmp_path / "site"
    r = runner.invoke(
        app, ["init", "--data", str(data), "--prefix", "88.100", "--admin-secret", "s3cret-key"]
    )
    assert r.exit_code == 0, r.output
    setup = ["replication", "setup", "--data", str(data), "--listen", "127.0.0.1:0", "--peer", "127.0.0.1:1"]
    for weak in (
        "replication-secret",
        "top-replication-demo-secret",
        "correct horse battery staple",
        "a" * 64,
    ):
        r = runner.invoke(app, [*setup, "--secret", weak])
        assert r.exit_code == 1 and "generated key" in r.output, r.output
        assert not NodeConfig.load(data).replication.listen  # nothing written
    r = runner.invoke(app, setup)
    assert r.exit_code == 0, r.output
    secret = NodeConfig.load(data).replication.secret
    assert link_secret_problem(secret) is None and len(secret) >= 43
    assert secret in r.output  # printed once, for the other sites' setup
    assert stat.S_IMODE((data / "idr.toml").stat().st_mode) == 0o600


async def test_a_weak_replication_key_in_idr_toml_does_not_start(tmp_path: Path) -> None:
    data = tmp_path / "site"
    r = runner.invoke(
        app, ["init", "--data", str(data), "--prefix", "88.100", "--admin-secret", "s3cret-key"]
    )
    assert r.exit_code == 0, r.output
    cfg = NodeConfig.load(data)
    cfg.replication.listen, cfg.replication.secret = "127.0.0.1:0", "s3cret"
    cfg.save()
    node = Node(NodeConfig.load(data))
    try:
        with pytest.raises(ConfigError, match="generated key"):
            await node.start(https="", http="", native="")
    finally:
        await node.stop()
        node.close()


@pytest.mark.parametrize("secret", ["", "   ", "s3cret", "password", "12345678", "aaaaaaaaaa", "abcdefgh"])
def test_init_refuses_empty_and_weak_admin_secrets(tmp_path: Path, secret: str) -> None:
    data = tmp_path / "n"
    r = runner.invoke(app, ["init", "--data", str(data), "--prefix", "88.100", "--admin-secret", secret])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "--admin-secret" in r.output
    assert not data.exists()  # nothing left behind
