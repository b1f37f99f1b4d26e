"""UDP and TCP rules: amplification limit, what UDP refuses, pipelining, keep-alive, idle timeout,
oversized frames, garbage, and the pre-encoded answer cache (identical bytes, invalidation)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from idr.codec.bodies import (
    ErrorResponse,
    GenericRequest,
    ListHandlesRequest,
    ResolutionRequest,
    ResolutionResponse,
)
from idr.codec.envelope import EnvFlag, OpCode, OpFlag
from idr.codec.message import decode_message, encode_message
from idr.model.errors import ResponseCode
from idr.model.value import HandleValue
from idr.resolver.client import HandleClient, SecretKeyAuth, build_request
from idr.server.native import NativeOptions
from idr.server.udp import Amplification
from tests.resolver.native_node import SECRET, TIMEOUT, NativeNode, identity, native, start_node, vector  # noqa: F401
from tests.server.test_native_vectors import udp_exchange


def recv_message(s: socket.socket) -> bytes:
    head = b""
    while len(head) < 20:
        chunk = s.recv(20 - len(head))
        if not chunk:
            raise EOFError
        head += chunk
    need = int.from_bytes(head[16:20], "big")
    body = b""
    while len(body) < need:
        chunk = s.recv(need - len(body))
        if not chunk:
            raise EOFError
        body += chunk
    return head + body


def resolution(handle: str, flags: int = OpFlag.PO) -> bytes:
    return encode_message(build_request(OpCode.RESOLUTION, ResolutionRequest(handle), flags=flags))


# --------------------------------------------------------------------------- UDP


async def test_big_udp_answer_is_a_multi_datagram_message_by_default(native: NativeNode) -> None:  # noqa: F811
    """RFC 3652 as the reference sends it: 7 datagrams, reassembled by the client; no TC."""
    request = vector("udp_resolve_big_request.bin")
    got = await asyncio.to_thread(udp_exchange, native.host, native.port, request, 7)
    assert not any(d[2] & EnvFlag.TC for d in got)
    async with HandleClient(native.host, native.port, timeout=TIMEOUT) as c:
        raw = await c.send_udp(request)  # UDP only: the reassembled message itself
        values = await c.resolve_values("88.100/big", transport="udp")
    assert not raw[2] & EnvFlag.TC and decode_message(raw).response_code == ResponseCode.SUCCESS
    assert len(values[1].data) == 3000
    assert native.server.udp.over_budget == 0


def big_requests(n: int) -> list[bytes]:
    base = vector("udp_resolve_big_request.bin")
    return [base[:8] + (0x5000 + i).to_bytes(4, "big") + base[12:] for i in range(n)]


def collect(host: str, port: int, requests: list[bytes], quiet: float = 0.3) -> list[bytes]:
    """Send every request from one socket; every datagram that comes back until ``quiet`` s of silence."""
    got: list[bytes] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        for r in requests:
            s.sendto(r, (host, port))
        s.settimeout(quiet)
        with contextlib.suppress(TimeoutError):
            while True:
                got.append(s.recvfrom(65535)[0])
    return got


async def test_udp_byte_budget_per_source_bounds_amplification(tmp_path: Path) -> None:
    """40 × 85-byte requests for a 3 KB answer: the source gets the burst (2 answers), then
    per RRL slip=2 one 48-byte TC header for every second answer over budget, nothing more."""
    amp = Amplification(rate=1, burst=2 * 3268, slip=2)  # 2 answers of 3128 + 7 × 20 bytes
    node = await start_node(tmp_path, NativeOptions(amplification=amp))
    try:
        requests = big_requests(40)
        got = await asyncio.to_thread(collect, node.host, node.port, requests)
        whole = [d for d in got if not d[2] & EnvFlag.TC]
        slips = [d for d in got if d[2] & EnvFlag.TC]
        assert len(whole) == 14  # two complete 7-datagram answers
        assert len(slips) == 19 and all(len(d) == 48 for d in slips)  # 38 over budget, every 2nd
        sent = sum(len(d) for d in got)
        assert sent <= amp.burst + 19 * 48 < 3 * sum(len(r) for r in requests)
        assert node.server.udp.over_budget == 38
        # TCP is not metered, and the client's TC fallback gets the whole record
        async with HandleClient(node.host, node.port, timeout=TIMEOUT) as c:
            values = await c.resolve_values("88.100/big", transport="udp")
        assert len(values[1].data) == 3000
    finally:
        await node.server.close()
        node.service.close()


async def test_truncate_option_restores_tc_for_any_large_answer(tmp_path: Path) -> None:
    """``truncate=True``: the former DNS-style rule — a header with TC, the client asks over TCP."""
    node = await start_node(tmp_path, NativeOptions(amplification=Amplification(truncate=True)))
    try:
        request = vector("udp_resolve_big_request.bin")
        [answer] = await asyncio.to_thread(udp_exchange, node.host, node.port, request)
        assert answer[2] & EnvFlag.TC and len(answer) == 48
        assert int.from_bytes(answer[24:28], "big") == ResponseCode.SUCCESS
        async with HandleClient(node.host, node.port, timeout=TIMEOUT) as c:
            values = await c.resolve_values("88.100/big", transport="udp")
        assert len(values[1].data) == 3000
    finally:
        await node.server.close()
        node.service.close()


async def test_udp_answer_within_three_times_a_padded_request_is_free(tmp_path: Path) -> None:
    """A request large enough (3× rule) gets the whole answer even with no budget at all."""
    node = await start_node(tmp_path, NativeOptions(amplification=Amplification(rate=0, burst=0)))
    try:
        pad = tuple(f"T{i:04d}" for i in range(120))  # type filter that matches nothing extra
        msg = build_request(OpCode.RESOLUTION, ResolutionRequest("88.100/big", (1, 2), pad), flags=OpFlag.PO)
        data = encode_message(msg)
        assert 3 * len(data) >= 3128 + 7 * 20
        async with HandleClient(node.host, node.port, timeout=TIMEOUT) as c:
            raw = await c.send_udp(data)
        assert not raw[2] & EnvFlag.TC
        body = decode_message(raw).body
        assert isinstance(body, ResolutionResponse) and len(body.values) == 2
        assert node.server.udp.over_budget == 0
    finally:
        await node.server.close()
        node.service.close()


@pytest.mark.parametrize(
    "opcode, body",
    [
        (OpCode.DELETE_HANDLE, GenericRequest("88.100/bench-0")),
        (OpCode.LIST_HANDLES, ListHandlesRequest("0.NA/88.100")),
        (OpCode.LIST_HOMED_NAS, ListHandlesRequest("")),
    ],
)
async def test_udp_refuses_admin_and_connection_requests(
    native: NativeNode,  # noqa: F811 (the fixture, imported from tests.resolver.native_node)
    opcode: int,
    body: GenericRequest,
) -> None:
    data = encode_message(build_request(opcode, body))
    [raw] = await asyncio.to_thread(udp_exchange, native.host, native.port, data)
    msg = decode_message(raw)
    assert msg.response_code == ResponseCode.PROTOCOL_ERROR
    assert msg.request_id == decode_message(data).request_id
    assert native.service.store.get("88.100/BENCH-0") is not None


async def test_udp_garbage_is_dropped_or_answered_with_an_error(native: NativeNode) -> None:  # noqa: F811
    good = vector("udp_resolve_bench-0_request.bin")
    addr = (native.host, native.port)

    def run() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.3)
            for junk in (b"", b"hello", b"\x07" * 60):  # not a Handle 2.x envelope: silence
                s.sendto(junk, addr)
                with pytest.raises(TimeoutError):
                    s.recvfrom(2048)
            broken = good[:60]  # shorter than its envelope says
            s.settimeout(TIMEOUT)
            s.sendto(broken, addr)
            err = decode_message(s.recvfrom(2048)[0])
            assert err.response_code == ResponseCode.PROTOCOL_ERROR and err.opcode == 0
            s.sendto(good, addr)
            assert s.recvfrom(2048)[0] == vector("udp_resolve_bench-0_response.bin")

    await asyncio.to_thread(run)


async def test_multi_datagram_request_is_reassembled(native: NativeNode) -> None:  # noqa: F811
    types = (*tuple(f"X{i:03d}" for i in range(200)), "URL")
    data = encode_message(
        build_request(OpCode.RESOLUTION, ResolutionRequest("88.100/bench-0", (), types), flags=OpFlag.PO)
    )
    assert len(data) > 512
    async with HandleClient(native.host, native.port, timeout=TIMEOUT) as c:
        msg = decode_message(await c.send_udp(data))
    assert isinstance(msg.body, ResolutionResponse) and [v.type for v in msg.body.values] == ["URL"]


# --------------------------------------------------------------------------- TCP


async def test_tcp_pipelining_and_keep_alive(native: NativeNode) -> None:  # noqa: F811
    reqs = [resolution(f"88.100/bench-{i % 2}", OpFlag.PO | OpFlag.KA) for i in range(6)]
    reqs.append(resolution("88.100/missing", OpFlag.PO | OpFlag.KA))

    def run() -> list[bytes]:
        with socket.create_connection((native.host, native.port), timeout=TIMEOUT) as s:
            s.sendall(b"".join(reqs))  # all at once: pipelined
            out = [recv_message(s) for _ in reqs]
            s.sendall(resolution("88.100/bench-0", OpFlag.PO))  # no KA: the last one
            out.append(recv_message(s))
            assert s.recv(1) == b""  # closed after the non-KA answer
            return out

    answers = [decode_message(a) for a in await asyncio.to_thread(run)]
    assert [a.request_id for a in answers[:-1]] == [decode_message(r).request_id for r in reqs]
    assert [a.response_code for a in answers] == [1] * 6 + [ResponseCode.HANDLE_NOT_FOUND, 1]


async def test_tcp_idle_timeout(tmp_path: Path) -> None:
    node = await start_node(tmp_path, NativeOptions(idle_timeout=0.3))
    try:

        def idle() -> tuple[bytes, float]:
            with socket.create_connection((node.host, node.port), timeout=TIMEOUT) as s:
                t0 = time.monotonic()
                s.sendall(resolution("88.100/bench-0")[:30])  # a partial message, then silence
                return s.recv(1), time.monotonic() - t0

        data, waited = await asyncio.to_thread(idle)
        assert data == b"" and 0.2 < waited < TIMEOUT
    finally:
        await node.server.close()
        node.service.close()


async def test_tcp_oversized_message_length_refused(native: NativeNode) -> None:  # noqa: F811
    head = bytearray(vector("tcp_resolve_bench-0_request.bin")[:20])
    struct.pack_into(">I", head, 16, 262145)

    def run() -> bytes:
        with socket.create_connection((native.host, native.port), timeout=TIMEOUT) as s:
            s.sendall(bytes(head))
            answer = recv_message(s)
            assert s.recv(1) == b""
            return answer

    err = decode_message(await asyncio.to_thread(run))
    assert err.response_code == ResponseCode.PROTOCOL_ERROR
    assert isinstance(err.body, ErrorResponse) and "262145" in err.body.message
    assert err.request_id == int.from_bytes(head[8:12], "big")


async def test_tcp_connection_cap(tmp_path: Path) -> None:
    node = await start_node(tmp_path, NativeOptions(max_connections=2))
    try:

        def run() -> bytes:
            held = [socket.create_connection((node.host, node.port), timeout=TIMEOUT) for _ in range(2)]
            try:
                time.sleep(0.1)
                with socket.create_connection((node.host, node.port), timeout=TIMEOUT) as s:
                    try:
                        s.sendall(resolution("88.100/bench-0"))
                        return s.recv(1)
                    except ConnectionResetError:
                        return b""
            finally:
                for h in held:
                    h.close()

        assert await asyncio.to_thread(run) == b""
    finally:
        await node.server.close()
        node.service.close()


async def test_list_handles_and_homed_prefixes_over_tcp(native: NativeNode) -> None:  # noqa: F811
    auth = SecretKeyAuth(identity("secret"), SECRET)
    async with HandleClient(native.host, native.port, timeout=TIMEOUT, auth=auth) as c:
        for i in range(60):  # more than one 50-name part
            await c.create(f"88.100/item-{i:02d}", [HandleValue(1, "URL", b"x")])
        names = await c.list_handles("0.NA/88.100")
        homed = await c.list_homed()
    assert len(names) == 63 and "88.100/item-59" in names
    assert homed == ["0.NA/88.100"]


# --------------------------------------------------------------------------- hot cache


async def test_cached_answer_is_byte_identical_and_invalidated_on_write(native: NativeNode) -> None:  # noqa: F811
    svc, cache = native.service, native.server.cache
    base = build_request(OpCode.RESOLUTION, ResolutionRequest("88.100/BENCH-1"), flags=OpFlag.PO)
    first = encode_message(base)
    [slow] = await asyncio.to_thread(udp_exchange, native.host, native.port, first)
    assert len(cache) == 1
    again = encode_message(
        base.__class__(
            **{
                **{f: getattr(base, f) for f in base.__dataclass_fields__},
                "request_id": 77,
                "expiration": 1234,
            }
        )
    )
    [fast] = await asyncio.to_thread(udp_exchange, native.host, native.port, again)
    # The slow path, run fresh on the second request, gives exactly the cached bytes.
    fresh = native.server.handler.handle(again, "127.0.0.1", udp=True)
    assert not asyncio.iscoroutine(fresh)
    assert fast == fresh.messages[0]  # type: ignore[union-attr]
    assert fast[8:12] == (77).to_bytes(4, "big") and fast[36:40] == (1234).to_bytes(4, "big")
    assert slow[12:36] == fast[12:36] and slow[40:] == fast[40:]
    # A commit through the core drops the entry; the next answer shows the new value.
    auth = SecretKeyAuth(identity("secret"), SECRET)
    async with HandleClient(native.host, native.port, timeout=TIMEOUT, auth=auth) as c:
        await c.modify_values("88.100/bench-1", [HandleValue(1, "URL", b"https://changed.example/")])
    assert len(cache) == 0
    [after] = await asyncio.to_thread(udp_exchange, native.host, native.port, first)
    body = decode_message(after).body
    assert isinstance(body, ResolutionResponse) and body.values[0].data == b"https://changed.example/"
    assert svc.store.get("88.100/BENCH-1") is not None


async def test_negative_answer_cached_then_dropped_on_create(native: NativeNode) -> None:  # noqa: F811
    data = resolution("88.100/later")
    [nf] = await asyncio.to_thread(udp_exchange, native.host, native.port, data)
    assert decode_message(nf).response_code == ResponseCode.HANDLE_NOT_FOUND and len(native.server.cache) == 1
    auth = SecretKeyAuth(identity("secret"), SECRET)
    async with HandleClient(native.host, native.port, timeout=TIMEOUT, auth=auth) as c:
        await c.create("88.100/later", [HandleValue(1, "URL", b"x")])
    [ok] = await asyncio.to_thread(udp_exchange, native.host, native.port, data)
    assert decode_message(ok).response_code == ResponseCode.SUCCESS


async def test_rd_requests_carry_a_digest_and_bypass_the_cache(native: NativeNode) -> None:  # noqa: F811
    data = resolution("88.100/bench-0", OpFlag.PO | OpFlag.RD)
    for _ in range(2):
        [raw] = await asyncio.to_thread(udp_exchange, native.host, native.port, data)
        msg = decode_message(raw)
        assert msg.request_digest is not None and msg.opflags & OpFlag.RD
    assert len(native.server.cache) == 0


@pytest_asyncio.fixture
async def sessionless(native: NativeNode) -> AsyncIterator[NativeNode]:  # noqa: F811
    yield native


async def test_unknown_session_id_times_out(sessionless: NativeNode) -> None:
    msg = build_request(OpCode.RESOLUTION, ResolutionRequest("88.100/bench-0"), session_id=99)
    [raw] = await asyncio.to_thread(udp_exchange, sessionless.host, sessionless.port, encode_message(msg))
    assert decode_message(raw).response_code == ResponseCode.SESSION_TIMEOUT
