"""SM2/SM3 administration over native TCP, from the command line down: ``idr keygen --type sm2``,
``idr init --admin-key <sm2>.pub``, then create/modify/delete authenticated with the SM2 key
against a live node on 127.0.0.1; wrong keys are refused and nothing is written."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from typer.testing import CliRunner

from idr.cli import app
from idr.codec.keys import decode_public_key
from idr.codec.sm2 import SM2PrivateKey
from idr.codec.wire import Writer
from idr.core.config import NodeConfig
from idr.core.service import NodeService
from idr.model.errors import ResponseCode
from idr.model.value import HandleValue, ValueReference
from idr.node import open_service
from idr.resolver.client import Authenticator, HandleClient, PublicKeyAuth, ResponseError
from idr.resolver.keys import generate, load_private_key
from idr.server.native import NativeServer, start_server

PREFIX = "88.300"
ADMIN = ValueReference(f"0.NA/{PREFIX}", 300)
TIMEOUT = 10.0  # pure-Python SM2 verification takes tens of milliseconds
runner = CliRunner()


@dataclass
class Sm2Node:
    service: NodeService
    server: NativeServer
    key: SM2PrivateKey

    def client(self, auth: Authenticator | None = None) -> HandleClient:
        host, port = self.server.address[0], self.server.address[1]
        return HandleClient(host, port, timeout=TIMEOUT, retries=1, auth=auth)

    def snapshot(self) -> tuple[int, list[str]]:
        return self.service.store.last_seq(), self.service.store.list_handles(PREFIX, None, 100_000)


@pytest_asyncio.fixture
async def sm2_node(tmp_path: Path) -> AsyncIterator[Sm2Node]:
    key_path, data = tmp_path / "admin-sm2.pem", tmp_path / "node"
    made = runner.invoke(app, ["keygen", "--type", "sm2", str(key_path)])
    assert made.exit_code == 0, made.output
    init = runner.invoke(
        app, ["init", "--data", str(data), "--prefix", PREFIX, "--admin-key", f"{key_path}.pub"]
    )
    assert init.exit_code == 0, init.output
    key = load_private_key(key_path)
    assert isinstance(key, SM2PrivateKey)
    service = open_service(NodeConfig.load(data))
    server = await start_server(service, "127.0.0.1", 0)
    try:
        yield Sm2Node(service, server, key)
    finally:
        await server.close()
        service.close()


def test_init_stored_the_sm2_key(sm2_node: Sm2Node) -> None:
    record = sm2_node.service.store.get(f"0.NA/{PREFIX}")
    assert record is not None
    [pubkey] = [v for v in record.values if v.type == "HS_PUBKEY"]
    assert pubkey.index == 300 and pubkey.data.startswith(b"\0\0\0\x0bSM2_PUB_KEY")
    assert decode_public_key(pubkey.data) == sm2_node.key.public_key()


async def test_create_modify_delete_with_an_sm2_key(sm2_node: Sm2Node) -> None:
    h = f"{PREFIX}/sm2-item"
    async with sm2_node.client(PublicKeyAuth(ADMIN, sm2_node.key)) as c:
        assert await c.create(h, [HandleValue(1, "URL", b"https://a.example/")]) == h
        await c.modify_values(h, [HandleValue(1, "URL", b"https://b.example/")])
        await c.add_values(h, [HandleValue(2, "EMAIL", b"sm2@example.org")])
        values = {v.index: v.data for v in await c.resolve_values(h, transport="tcp")}
        assert values[1] == b"https://b.example/" and values[2] == b"sm2@example.org"
        await c.delete(h)
        assert (await c.resolve(h)).response_code == ResponseCode.HANDLE_NOT_FOUND
    assert sm2_node.service.store.get(h.upper()) is None


@pytest.mark.parametrize("wrong", ["another sm2 key", "rsa key claiming the sm2 index"])
async def test_wrong_key_is_refused_and_nothing_written(sm2_node: Sm2Node, wrong: str) -> None:
    key = generate("sm2") if wrong.startswith("another") else generate("rsa")
    before = sm2_node.snapshot()
    async with sm2_node.client(PublicKeyAuth(ADMIN, key)) as c:
        with pytest.raises(ResponseError) as e:
            await c.create(f"{PREFIX}/intruder", [HandleValue(1, "URL", b"x")])
    assert e.value.code == ResponseCode.AUTHENTICATION_FAILED
    assert sm2_node.snapshot() == before


@dataclass(frozen=True)
class MislabelledSm2:
    """A good SM2 signature over nonce || digest, but labelled with another hash name."""

    identity: ValueReference
    key: SM2PrivateKey
    hash_name: str
    auth_type: str = "HS_PUBKEY"

    def answer(self, nonce: bytes, digest: bytes, version: tuple[int, int]) -> bytes:
        return Writer().text(self.hash_name).blob(self.key.sign(nonce + digest)).getvalue()


@pytest.mark.parametrize("hash_name", ["SHA-256", "SM3withSM2", "sm3"])
async def test_sm2_signature_under_another_hash_name_is_refused(sm2_node: Sm2Node, hash_name: str) -> None:
    await _create_bench(sm2_node)
    before = sm2_node.snapshot()
    mislabelled = MislabelledSm2(ADMIN, sm2_node.key, hash_name)
    async with sm2_node.client() as plain, sm2_node.client(mislabelled) as c:
        with pytest.raises(ResponseError) as e:
            await c.delete(f"{PREFIX}/bench")
        assert (await plain.resolve(f"{PREFIX}/bench")).response_code == ResponseCode.SUCCESS
    assert e.value.code == ResponseCode.AUTHENTICATION_FAILED
    assert sm2_node.snapshot() == before


async def _create_bench(node: Sm2Node) -> None:
    async with node.client(PublicKeyAuth(ADMIN, node.key)) as c:
        await c.create(f"{PREFIX}/bench", [HandleValue(1, "URL", b"https://bench.example/")])
