"""The server's key pair: made by ``idr init`` (RSA, DSA, SM2, or the operator's own), published
in the site's server record by a node that ``Node`` assembles, and used by ``idr`` commands with
``--session --certify``."""

from __future__ import annotations

import asyncio
import stat
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import dsa, rsa
from typer.testing import CliRunner

from idr.cli import app
from idr.codec.keys import decode_public_key
from idr.codec.sm2 import SM2PublicKey
from idr.core.config import NodeConfig
from idr.node import Node
from idr.resolver.client import HandleClient
from idr.resolver.keys import generate, load_public_key, write_key_pair
from idr.server.server_key import SERVER_KEY_NAME, load_server_key

runner = CliRunner()


def init(data: Path, *extra: str) -> str:
    r = runner.invoke(
        app,
        [
            "init",
            "--data",
            str(data),
            "--prefix",
            "88.100",
            "--admin-secret",
            "s3cret-key",
            "--https",
            "",
            *extra,
        ],
    )
    return f"{r.exit_code}:{r.output}"


@pytest.mark.parametrize(
    ("kind", "cls"), [("rsa", rsa.RSAPublicKey), ("dsa", dsa.DSAPublicKey), ("sm2", SM2PublicKey)]
)
def test_init_makes_the_servers_key_pair(tmp_path: Path, kind: str, cls: type) -> None:
    data = tmp_path / kind
    extra = () if kind == "rsa" else ("--server-key-type", kind)
    assert init(data, *extra).startswith("0:")
    path = data / SERVER_KEY_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = load_server_key(data)
    assert key is not None and isinstance(decode_public_key(key.public_bytes), cls)
    assert isinstance(load_public_key(Path(f"{path}.pub")), cls)


def test_init_takes_the_operators_key_and_refuses_bad_ones(tmp_path: Path) -> None:
    own = tmp_path / "own.pem"
    write_key_pair(generate("rsa"), own)
    assert init(tmp_path / "a", "--server-key", str(own)).startswith("0:")
    key = load_server_key(tmp_path / "a")
    assert key is not None and (tmp_path / "a" / SERVER_KEY_NAME).read_bytes() == own.read_bytes()
    ed = tmp_path / "ed.pem"
    write_key_pair(generate("ed25519"), ed)
    for extra in (
        ("--server-key", str(ed)),
        ("--server-key", str(tmp_path / "none.pem")),
        ("--server-key-type", "x"),
    ):
        out = init(tmp_path / f"b{len(str(extra))}", *extra)
        assert out.startswith("1:") and "Traceback" not in out, out


def test_a_served_node_publishes_its_key_and_certifies_sessions(tmp_path: Path) -> None:
    data = tmp_path / "n"
    assert init(data, "--native", "127.0.0.1:0").startswith("0:")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    node = Node(NodeConfig.load(data))
    try:
        asyncio.run_coroutine_threadsafe(node.start(https="", native="127.0.0.1:0"), loop).result(10)
        assert node.listeners.native is not None
        host, port = node.listeners.native

        async def site_key() -> bytes:
            async with HandleClient(host, port, timeout=5) as c:
                return (await c.site_info()).servers[0].public_key

        key = load_server_key(data)
        assert key is not None and asyncio.run(site_key()) == key.public_bytes
        server = f"{host}:{port}"
        auth = [
            "--auth",
            "300:0.NA/88.100",
            "--secret",
            "s3cret-key",
            "--server",
            server,
            "--session",
            "--certify",
        ]
        r = runner.invoke(app, ["create", "88.100/s1", "--value", "1:URL:https://s.example/", *auth])
        assert r.exit_code == 0 and "created 88.100/s1" in r.output, r.output
        r = runner.invoke(app, ["delete", "88.100/s1", *auth])
        assert r.exit_code == 0, r.output
    finally:
        asyncio.run_coroutine_threadsafe(node.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        node.close()
