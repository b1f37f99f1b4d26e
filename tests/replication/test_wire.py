"""The link's handshake and sealing, against a real loopback socket."""

from __future__ import annotations

import asyncio

import pytest

from idr.model.handle import normalize_key
from idr.model.value import HandleRecord, HandleValue
from idr.replication import wire
from idr.store.base import LogEntry, Write


async def _pair(server_secret: bytes, client_secret: bytes) -> tuple[wire.Channel | BaseException, ...]:
    result: asyncio.Future[wire.Channel] = asyncio.get_running_loop().create_future()

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            result.set_result(await wire.server_handshake(r, w, server_secret, "srv"))
        except Exception as e:
            result.set_exception(e)
            w.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client: wire.Channel | BaseException
        try:
            client = await wire.connect(("127.0.0.1", port), client_secret, "cli", 2.0)
        except Exception as e:
            client = e
        try:
            srv: wire.Channel | BaseException = await asyncio.wait_for(result, 2.0)
        except Exception as e:
            srv = e
        return client, srv
    finally:
        server.close()


async def test_handshake_and_sealed_frames() -> None:
    client, srv = await _pair(b"k", b"k")
    assert isinstance(client, wire.Channel) and isinstance(srv, wire.Channel)
    assert (client.peer, srv.peer) == ("srv", "cli")
    entry = LogEntry(7, 1.5, "create", "300:0.NA/88.100", (
        Write(normalize_key("88.100/电池"), HandleRecord("88.100/电池", (HandleValue(1, "URL", b"u"),))),
        Write("88.100/GONE", None),
    ))  # fmt: skip
    await client.send(wire.ENTRY, wire.encode_entry(entry))
    await srv.send_json({"t": "ack", "seq": 7})
    kind, payload = await srv.recv()
    assert kind == wire.ENTRY and wire.decode_entry(payload) == entry
    assert await client.recv_json() == {"t": "ack", "seq": 7}
    # A frame replayed (or injected) fails the AEAD check.
    srv.writer.write(len(b"\x00" * 40).to_bytes(4, "big") + b"\x00" * 40)
    with pytest.raises(wire.LinkError, match="failed authentication"):
        await client.recv()
    client.close()
    srv.close()


async def test_wrong_secret_fails_both_ways() -> None:
    client, srv = await _pair(b"right", b"wrong")
    assert isinstance(client, wire.LinkError) and "secret" in str(client)
    assert isinstance(srv, wire.LinkError | asyncio.TimeoutError)
