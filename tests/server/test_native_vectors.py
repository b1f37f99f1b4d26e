"""Byte-for-byte against the reference server (Handle.Net 9.2.0) captures in tests/vectors/handle:
the same request bytes sent to an idr node holding the same records give the same answer bytes."""

from __future__ import annotations

import asyncio
import socket

import pytest

from idr.codec.envelope import EnvFlag, decode_envelope
from tests.resolver.native_node import TIMEOUT, NativeNode, native, vector  # noqa: F401

PKTS = [f"udp_resolve_big_response_pkt{i}.bin" for i in range(7)]


def udp_exchange(host: str, port: int, request: bytes, want: int = 1) -> list[bytes]:
    """Send one datagram; collect ``want`` answer datagrams (bounded by TIMEOUT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(TIMEOUT)
        s.sendto(request, (host, port))
        return [s.recvfrom(65535)[0] for _ in range(want)]


def tcp_exchange(host: str, port: int, request: bytes) -> bytes:
    """Send one request; read until the server closes (it does, after a non-KA answer)."""
    with socket.create_connection((host, port), timeout=TIMEOUT) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


NAMES = ["udp_resolve_bench-0", "udp_resolve_not-found", "udp_resolve_unknown-prefix"]


@pytest.mark.parametrize("name", NAMES)
async def test_udp_answers_match_reference(native: NativeNode, name: str) -> None:  # noqa: F811
    request, want = vector(f"{name}_request.bin"), vector(f"{name}_response.bin")
    for attempt in ("slow path", "hot cache"):
        got = await asyncio.to_thread(udp_exchange, native.host, native.port, request)
        assert got == [want], attempt
    assert native.server.cache.stores == 1  # the second answer came from the cache


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_a_hot_answer_carries_the_requests_id_and_expiration_and_nothing_else_changes(
    native: NativeNode,  # noqa: F811
    transport: str,
) -> None:
    """The hot path writes the request's RequestId (bytes 8-11) and ExpirationTime (36-39) into
    a copy of the cached answer; every other byte is the reference server's."""
    request, want = (
        vector(f"{transport}_resolve_bench-0_request.bin"),
        vector(f"{transport}_resolve_bench-0_response.bin"),
    )

    def exchange(data: bytes) -> bytes:
        if transport == "udp":
            return udp_exchange(native.host, native.port, data)[0]
        return tcp_exchange(native.host, native.port, data)

    assert await asyncio.to_thread(exchange, request) == want
    for rid, expires in ((b"\x01\x02\x03\x04", b"\xfe\xdc\xba\x98"), (b"\0\0\0\0", b"\xff\xff\xff\xff")):
        asked = request[:8] + rid + request[12:36] + expires + request[40:]
        expected = want[:8] + rid + want[12:36] + expires + want[40:]
        assert await asyncio.to_thread(exchange, asked) == expected
    assert native.server.cache.stores == 1  # every answer after the first came from the cache


async def test_tcp_answer_matches_reference_and_connection_closes(native: NativeNode) -> None:  # noqa: F811
    request, want = vector("tcp_resolve_bench-0_request.bin"), vector("tcp_resolve_bench-0_response.bin")
    for _ in range(2):  # slow path, then hot cache: both close after the answer like the reference
        assert await asyncio.to_thread(tcp_exchange, native.host, native.port, request) == want


async def test_big_answer_over_tcp_matches_reference(native: NativeNode) -> None:  # noqa: F811
    request, want = vector("tcp_resolve_big_request.bin"), vector("tcp_resolve_big_response.bin")
    assert await asyncio.to_thread(tcp_exchange, native.host, native.port, request) == want


async def test_big_answer_over_udp_is_fragmented_like_reference(native: NativeNode) -> None:  # noqa: F811
    """By default (amplification budget not spent) the 3128-byte answer goes as the reference
    sends it: 7 datagrams, byte for byte, TC not set."""
    request = vector("udp_resolve_big_request.bin")
    want = [vector(p) for p in PKTS]
    got = await asyncio.to_thread(udp_exchange, native.host, native.port, request, 7)
    assert sorted(got, key=lambda d: decode_envelope(d).sequence_number) == want
    assert not any(d[2] & EnvFlag.TC for d in got)


async def test_a_burst_mixing_hot_answers_misses_garbage_and_the_slow_path_is_answered_in_order(
    native: NativeNode,  # noqa: F811
) -> None:
    """Datagrams waiting together are read as one burst (``DrainedSocket``): each is answered
    as it would be alone, in order — hot answers with their own RequestId, garbage with silence,
    an uncached not-found by the slow path (which sends the burst's hot answers before it)."""
    request, want = vector("udp_resolve_bench-0_request.bin"), vector("udp_resolve_bench-0_response.bin")
    absent, not_found = (
        vector("udp_resolve_not-found_request.bin"),
        vector("udp_resolve_not-found_response.bin"),
    )
    assert await asyncio.to_thread(udp_exchange, native.host, native.port, request) == [want]  # cached

    def rid(data: bytes, n: int) -> bytes:
        return data[:8] + n.to_bytes(4, "big") + data[12:]

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(TIMEOUT)
        for datagram in (rid(request, 1), b"garbage", rid(absent, 2), rid(request, 3), rid(request, 4)):
            s.sendto(datagram, (native.host, native.port))  # all waiting: the loop is not running
        got = await asyncio.to_thread(lambda: [s.recv(65535) for _ in range(4)])
    assert got == [rid(want, 1), rid(not_found, 2), rid(want, 3), rid(want, 4)]
    assert native.server.udp.slow == 2  # the first ask and the not-found; the rest were hot
