"""Native BACKUP_SERVER (opcode 1003): refused with the reason and what to use instead.

Handle.Net answers it by copying its database into its own directory ("checkpoint"), which it
has deprecated; idr refuses it over TCP with OPERATION_NOT_SUPPORTED naming ``idr backup``,
and over UDP, as every admin request, with PROTOCOL_ERROR (Handle.Net's query-only UDP)."""

from __future__ import annotations

import asyncio
import socket

from idr.codec.bodies import ErrorResponse, GenericRequest
from idr.codec.envelope import OpCode
from idr.codec.message import decode_message, encode_message
from idr.model.errors import ResponseCode
from idr.resolver.client import build_request
from tests.resolver.native_node import TIMEOUT, NativeNode, native  # noqa: F401
from tests.server.test_native_transport import recv_message
from tests.server.test_native_vectors import udp_exchange


def backup_request() -> bytes:
    return encode_message(build_request(OpCode.BACKUP_SERVER, GenericRequest("0.NA/88.100")))


async def test_backup_server_is_refused_with_the_reason(native: NativeNode) -> None:  # noqa: F811
    def over_tcp() -> bytes:
        with socket.create_connection((native.host, native.port), timeout=TIMEOUT) as s:
            s.sendall(backup_request())
            return recv_message(s)

    answer = decode_message(await asyncio.to_thread(over_tcp))
    assert answer.response_code == ResponseCode.OPERATION_NOT_SUPPORTED
    assert isinstance(answer.body, ErrorResponse) and "idr backup" in answer.body.message
    [raw] = await asyncio.to_thread(udp_exchange, native.host, native.port, backup_request())
    assert decode_message(raw).response_code == ResponseCode.PROTOCOL_ERROR
