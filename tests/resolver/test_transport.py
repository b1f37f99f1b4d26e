"""The recursion engine's UDP transport: queries pipelined through one socket, bounded per
upstream server, answers matched by RequestId, truncated answers asked again over TCP."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from idr.codec.bodies import ResolutionRequest, ResolutionResponse
from idr.codec.envelope import EnvFlag
from idr.codec.message import decode_message, encode_message, response_to
from idr.core.request import Op, Request
from idr.model.errors import ResponseCode
from idr.model.site import InterfaceType, ServerInfo, ServerInterface, TransportProtocol
from idr.model.value import HandleValue
from idr.resolver.transport import NativeTransport


class Upstream(asyncio.DatagramProtocol):
    """Answers each resolution after ``delay`` seconds, with a URL naming the handle; records the
    most queries it held at once and the client ports they came from."""

    def __init__(self, delay: float, truncate: bool = False) -> None:
        self.delay = delay
        self.truncate = truncate
        self.holding = 0
        self.most = 0
        self.ports: set[int] = set()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.ports.add(addr[1])
        self.holding += 1
        self.most = max(self.most, self.holding)
        asyncio.get_running_loop().call_later(self.delay, self._answer, data, addr)

    def _answer(self, data: bytes, addr: Any) -> None:
        self.holding -= 1
        req = decode_message(data)
        assert isinstance(req.body, ResolutionRequest)
        value = HandleValue(1, "URL", f"https://example.org/{req.body.handle}".encode())
        out = bytearray(
            encode_message(
                response_to(req, ResponseCode.SUCCESS, ResolutionResponse(req.body.handle, (value,)))
            )
        )
        if self.truncate:
            out[2] |= EnvFlag.TC
        self.transport.sendto(bytes(out), addr)


def _server(port: int) -> ServerInfo:
    address = bytes(12) + bytes((127, 0, 0, 1))
    return ServerInfo(
        1, address, interfaces=(ServerInterface(InterfaceType.QUERY, TransportProtocol.UDP, port),)
    )


@pytest.mark.asyncio
async def test_queries_share_one_socket_and_are_bounded_per_server() -> None:
    loop = asyncio.get_running_loop()
    up_t, up = await loop.create_datagram_endpoint(lambda: Upstream(0.02), local_addr=("127.0.0.1", 0))
    port = up_t.get_extra_info("sockname")[1]
    transport = NativeTransport(per_server=8)
    try:
        names = [f"88.100/q-{i}" for i in range(100)]
        answers = await asyncio.gather(
            *(transport.query(_server(port), Request(Op.RESOLUTION, n), 5.0) for n in names)
        )
        for name, resp in zip(names, answers, strict=True):
            assert resp.code == ResponseCode.SUCCESS and resp.handle == name
            assert resp.values[0].data == f"https://example.org/{name}".encode()  # its own answer
        assert up.most == 8, f"{up.most} queries in flight at once (bound 8)"
        assert len(up.ports) == 1, "queries did not share one socket"
    finally:
        transport.close()
        up_t.close()


@pytest.mark.asyncio
async def test_no_answer_is_a_connection_error_after_the_timeout() -> None:
    loop = asyncio.get_running_loop()
    up_t, _ = await loop.create_datagram_endpoint(lambda: Upstream(10.0), local_addr=("127.0.0.1", 0))
    port = up_t.get_extra_info("sockname")[1]
    transport = NativeTransport()
    try:
        t0 = loop.time()
        with pytest.raises(ConnectionError):
            await transport.query(_server(port), Request(Op.RESOLUTION, "88.100/slow"), 0.3)
        assert loop.time() - t0 < 2.0
    finally:
        transport.close()
        up_t.close()
