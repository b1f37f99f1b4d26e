"""What one client may cost the native front-ends: TCP output and connections, verification work
(OC_VERIFY_CHALLENGE, challenge answers), parked challenges — each bound checked in-process on
real sockets. The same attacks against an ``idr serve`` process, with memory and a bystander's
latency measured, are in tests/security/test_native_attacks.py."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import time
from pathlib import Path

import pytest

from idr.codec.auth import MAC_HMAC_SHA256, MAC_PBKDF2_HMAC_SHA1, secret_key_mac
from idr.codec.bodies import (
    DIGEST_MD5_LEGACY,
    CreateHandleRequest,
    ErrorResponse,
    RequestDigest,
    ResolutionRequest,
    VerifyChallengeRequest,
    VerifyChallengeResponse,
)
from idr.codec.envelope import OpCode, OpFlag
from idr.codec.message import Message, decode_message, encode_message
from idr.model.errors import HandleError, ResponseCode
from idr.model.value import HandleRecord, HandleValue, ValueReference
from idr.resolver.client import build_request
from idr.server.auth import AuthGuard, ChallengeTable, VerifyLimits
from idr.server.limits import CostGate, RateTable, source_network
from idr.server.native import NativeOptions
from idr.server.throttle import ThrottleLimits
from tests.resolver.native_node import SECRET, TIMEOUT, NativeNode, native, start_node  # noqa: F401
from tests.server.test_native_transport import recv_message
from tests.server.test_native_vectors import udp_exchange

# --------------------------------------------------------------------------- pure pieces


def test_rate_table_refills_spends_and_forgets_the_oldest() -> None:
    t = RateTable(rate=10, burst=20, capacity=2)
    assert t.take("a", 20, 0.0) and not t.take("a", 1, 0.0)
    assert t.take("a", 10, 1.0) and not t.take("a", 1, 1.0)  # 1 s refilled 10
    t.charge("a", 100, 1.0)  # debt, at most one burst deep
    assert not t.has("a", 1e-9, 2.5) and t.has("a", 1e-9, 4.1)
    t.take("b", 1, 5.0)
    t.take("c", 1, 5.0)  # capacity 2: "a" (least recently used) is forgotten
    assert len(t) == 2 and t.has("a", 20, 5.0)


def test_source_networks() -> None:
    assert source_network("192.0.2.77") == "192.0.2.0/24"
    assert source_network("::ffff:192.0.2.77") == "192.0.2.0/24"
    assert source_network("2001:db8:1:2:3::9") == "2001:db8:1::/56"
    assert source_network("not an address") == "not an address"


async def test_cost_gate_bounds_work_and_refuses_beyond_its_queue() -> None:
    gate = CostGate(slots=1, queue=2)
    started: list[float] = []

    def work() -> int:
        started.append(time.monotonic())
        time.sleep(0.05)
        return 1

    jobs = [asyncio.ensure_future(gate.run(work)) for _ in range(5)]
    done = await asyncio.gather(*jobs, return_exceptions=True)
    assert done.count(1) == 3
    refused = [d for d in done if isinstance(d, HandleError)]
    assert len(refused) == 2 and all(e.code == ResponseCode.SERVER_TOO_BUSY for e in refused)
    assert all(b - a >= 0.04 for a, b in itertools.pairwise(started))  # one at a time
    assert gate.busy == 0
    gate.close()


async def test_cost_gate_slot_is_held_until_the_work_ends_even_if_the_caller_leaves() -> None:
    gate = CostGate(slots=1, queue=0)
    job = asyncio.ensure_future(gate.run(time.sleep, 0.2))
    await asyncio.sleep(0.05)
    job.cancel()
    await asyncio.sleep(0)
    with pytest.raises(HandleError):  # the thread is still busy: no new work admitted
        await gate.run(time.sleep, 0)
    await asyncio.sleep(0.3)
    await gate.run(time.sleep, 0)
    gate.close()


def test_challenge_table_is_bounded_in_bytes_and_per_peer() -> None:
    big = encode_message(
        Message(
            OpCode.CREATE_HANDLE, CreateHandleRequest("88.100/x", (HandleValue(1, "DESC", bytes(100_000)),))
        )
    )
    req = decode_message(big)
    table = ChallengeTable(max_bytes=1_000_000, per_peer=4)
    for i in range(50):
        table.park(f"peer-{i % 10}", i + 1, req, b"n" * 16, b"d" * 32)
    assert table.bytes <= 1_000_000 and len(table) <= 9
    for i in range(10):
        table.park(
            "greedy",
            1000 + i,
            decode_message(encode_message(Message(OpCode.DELETE_HANDLE, req.body))),
            b"",
            b"",
        )
    assert sum(1 for k in table._pending if k[0] == "greedy") == 4  # its oldest went first
    table.take("greedy", 1009)
    with pytest.raises(HandleError):
        table.take("greedy", 1000)  # pushed out


# --------------------------------------------------------------------------- TCP


WIDE = HandleRecord("88.100/wide", tuple(HandleValue(i, "DESC", bytes(1000)) for i in range(1, 40)))


def requests_for(handle: str, n: int) -> bytes:
    msg = build_request(OpCode.RESOLUTION, ResolutionRequest(handle), flags=OpFlag.KA | OpFlag.PO)
    return encode_message(msg) * n  # the same request id is fine: answers come in order


async def test_tcp_client_that_does_not_read_is_paused_and_loses_nothing(tmp_path: Path) -> None:
    """The issue's attack on one connection: pipelined keep-alive resolutions of a record of 39
    values of 1000 bytes (~40 KB answers), a 4 KB receive buffer, never reading."""
    node = await start_node(tmp_path, NativeOptions(write_high=32 * 1024))
    node.service.import_now([WIDE])
    try:
        n = 400  # 400 × ~40 KB = 16 MB of answers: more than any kernel buffer holds
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((node.host, node.port))
        s.setblocking(False)
        data = requests_for("88.100/wide", n)
        sent = 0
        deadline = time.monotonic() + 3
        while sent < len(data) and time.monotonic() < deadline:
            with contextlib.suppress(BlockingIOError):
                sent += s.send(data[sent:])
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        [conn] = list(node.server.tcp.connections)
        assert conn.paused and conn.write_paused
        assert conn.transport is not None
        answer = 20 + 24 + 4 + len("88.100/wide") + 4 + 39 * 1030 + 4  # 40,237 bytes
        assert conn.transport.get_write_buffer_size() <= 32 * 1024 + answer  # the mark + one answer
        assert len(conn.buf) <= 262_164 + 65_536  # the input side is bounded too
        # the client reads now: every answer comes, in order, and the rest of its requests go in
        s.setblocking(True)
        s.settimeout(TIMEOUT)

        def read_all() -> list[int]:
            if sent < len(data):
                s.sendall(data[sent:])
            got = [recv_message(s) for _ in range(n)]
            assert all(decode_message(m).response_code == 1 for m in got)
            return [len(m) for m in got]

        assert await asyncio.to_thread(read_all) == [answer] * n
        s.close()
    finally:
        await node.server.close()
        node.service.close()


async def test_tcp_connections_per_source(tmp_path: Path) -> None:
    node = await start_node(tmp_path, NativeOptions(max_per_source=3))
    try:

        def run() -> tuple[list[bytes], int]:
            held = [socket.create_connection((node.host, node.port), timeout=TIMEOUT) for _ in range(5)]
            time.sleep(0.2)
            got = []
            for h in held:
                try:
                    h.sendall(requests_for("88.100/bench-0", 1))
                    got.append(h.recv(1))
                except OSError:
                    got.append(b"")
            # another client address still gets in
            other = socket.create_connection(
                (node.host, node.port), timeout=TIMEOUT, source_address=("127.0.0.2", 0)
            )
            other.sendall(requests_for("88.100/bench-0", 1))
            answer = decode_message(recv_message(other)).response_code
            for h in [*held, other]:
                h.close()
            return got, answer

        got, answer = await asyncio.to_thread(run)
        assert [bool(g) for g in got] == [True, True, True, False, False]
        assert answer == ResponseCode.SUCCESS and node.server.tcp.refused == 2
        await asyncio.sleep(0.1)
        assert node.server.tcp.per_source == {}  # all released
    finally:
        await node.server.close()
        node.service.close()


# --------------------------------------------------------------------------- verification work

NONCE, DIGEST = b"n" * 16, b"d" * 32


def verify_request(answer: bytes, index: int = 300) -> bytes:
    body = VerifyChallengeRequest(
        "0.NA/88.100", index, NONCE, RequestDigest(DIGEST_MD5_LEGACY, DIGEST), answer
    )
    return encode_message(build_request(OpCode.VERIFY_CHALLENGE, body))


def verdict(raw: bytes) -> bool | int:
    msg = decode_message(raw)
    if msg.response_code != ResponseCode.SUCCESS:
        return msg.response_code
    assert isinstance(msg.body, VerifyChallengeResponse)
    return msg.body.valid


async def test_verify_challenge_over_udp_answers_like_the_reference(native: NativeNode) -> None:  # noqa: F811
    good = secret_key_mac(MAC_HMAC_SHA256, SECRET, NONCE, DIGEST)
    bad = secret_key_mac(MAC_HMAC_SHA256, b"guess", NONCE, DIGEST)
    for answer, want in ((good, True), (bad, False)):
        [raw] = await asyncio.to_thread(udp_exchange, native.host, native.port, verify_request(answer))
        assert verdict(raw) is want


async def test_verify_challenge_guessing_backs_off_per_identity(tmp_path: Path) -> None:
    """The native guard's own per-(handle, index) failures (the login back-off shared with HTTP
    set loose here: it is tested below)."""
    node = await start_node(tmp_path, NativeOptions(login=ThrottleLimits(free_failures=1000)))
    try:
        guesses = [secret_key_mac(MAC_HMAC_SHA256, f"guess-{i}".encode(), NONCE, DIGEST) for i in range(15)]
        results = []
        for g in guesses:
            [raw] = await asyncio.to_thread(udp_exchange, node.host, node.port, verify_request(g))
            results.append(verdict(raw))
        assert results[:10] == [False] * 10  # ten failed attempts…
        assert results[10:] == [ResponseCode.SERVER_TOO_BUSY] * 5  # …then the identity must wait
        good = secret_key_mac(MAC_HMAC_SHA256, SECRET, NONCE, DIGEST)
        [raw] = await asyncio.to_thread(udp_exchange, node.host, node.port, verify_request(good))
        assert verdict(raw) == ResponseCode.SERVER_TOO_BUSY  # even the right answer, until it refills
        [raw] = await asyncio.to_thread(udp_exchange, node.host, node.port, verify_request(good, 301))
        assert verdict(raw) is False  # another identity (index 301 is no HS_SECKEY) is not blocked
    finally:
        await node.server.close()
        node.service.close()


def _udp_from(address: str, host: str, port: int, request: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((address, 0))
        s.settimeout(TIMEOUT)
        s.sendto(request, (host, port))
        return s.recvfrom(65535)[0]


async def test_native_guesses_meet_the_nodes_login_back_off(native: NativeNode) -> None:  # noqa: F811
    """The login back-off HTTP logins use (5 free failures, then waits per address and per
    identity) counts native guesses too: the sixth guess from an address waits, and so does a
    guess at the same identity from a fresh address; the real secret from an address that
    proved it before is not held back by others' guessing."""
    good = secret_key_mac(MAC_HMAC_SHA256, SECRET, NONCE, DIGEST)
    assert verdict(
        await asyncio.to_thread(_udp_from, "127.0.0.4", native.host, native.port, verify_request(good))
    )
    guesses = [secret_key_mac(MAC_HMAC_SHA256, f"guess-{i}".encode(), NONCE, DIGEST) for i in range(7)]
    results = []
    for g in guesses:
        raw = await asyncio.to_thread(_udp_from, "127.0.0.2", native.host, native.port, verify_request(g))
        results.append(verdict(raw))
    assert results[:5] == [False] * 5 and results[5:] == [ResponseCode.SERVER_TOO_BUSY] * 2
    raw = await asyncio.to_thread(
        _udp_from, "127.0.0.3", native.host, native.port, verify_request(guesses[0])
    )
    assert verdict(raw) == ResponseCode.SERVER_TOO_BUSY  # the identity waits, whatever the address
    body = decode_message(raw).body
    assert isinstance(body, ErrorResponse) and "too many failed attempts" in body.message, body
    raw = await asyncio.to_thread(_udp_from, "127.0.0.4", native.host, native.port, verify_request(good))
    assert verdict(raw) is True  # the address that proved the secret before is not held back


async def test_costly_pbkdf2_answers_spend_the_sources_cpu_budget(tmp_path: Path) -> None:
    """100,000 PBKDF2 iterations (the most accepted) cost ≥ 18 ms each here: one address gets
    its burst (0.05 s here) and then SERVER_TOO_BUSY, while cheap answers from elsewhere pass."""
    limits = VerifyLimits(cpu_per_source=0.01, cpu_burst=0.05, failures_per_identity=1000)
    node = await start_node(tmp_path, NativeOptions(verify=limits))
    try:
        costly = secret_key_mac(MAC_PBKDF2_HMAC_SHA1, SECRET, NONCE, DIGEST, iterations=100_000)
        results = []
        for _ in range(8):
            [raw] = await asyncio.to_thread(udp_exchange, node.host, node.port, verify_request(costly))
            results.append(verdict(raw))
        assert results[0] is True
        assert results.count(True) <= 3 and results[-1] == ResponseCode.SERVER_TOO_BUSY

        def from_elsewhere() -> bytes:
            cheap = secret_key_mac(MAC_HMAC_SHA256, SECRET, NONCE, DIGEST)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.2", 0))
                s.settimeout(TIMEOUT)
                s.sendto(verify_request(cheap), (node.host, node.port))
                return s.recvfrom(65535)[0]

        assert verdict(await asyncio.to_thread(from_elsewhere)) is True
    finally:
        await node.server.close()
        node.service.close()


async def test_guard_counts_failures_and_charges_cpu() -> None:
    clock = [0.0]
    guard = AuthGuard(
        VerifyLimits(cpu_per_source=1.0, cpu_burst=0.05, failures_per_identity=2), lambda: clock[0]
    )
    who = ValueReference("0.NA/88.100", 300)

    def spin(seconds: float) -> bool:
        time.sleep(seconds)
        return False

    assert await guard.check("a", who, spin, 0.1) is False  # 0.1 CPU-s: over the 0.05 burst
    with pytest.raises(HandleError) as e:
        await guard.check("a", who, spin, 0)
    assert e.value.code == ResponseCode.SERVER_TOO_BUSY  # the address is in debt
    assert await guard.check("b", who, spin, 0) is False  # second failure for the identity
    with pytest.raises(HandleError):
        await guard.check("c", who, spin, 0)  # the identity must wait
    clock[0] = 60.0
    assert await guard.check("c", who, lambda: True) is True
    guard.gate.close()


async def test_parked_writes_from_one_address_are_bounded(native: NativeNode) -> None:  # noqa: F811
    """Unauthenticated 100 KB CREATEs each park a challenge; one address keeps at most 64."""
    value = (HandleValue(1, "DESC", bytes(100_000)),)

    def flood() -> None:
        with socket.create_connection((native.host, native.port), timeout=TIMEOUT) as s:
            for i in range(80):
                msg = build_request(
                    OpCode.CREATE_HANDLE, CreateHandleRequest(f"88.100/c{i}", value), flags=OpFlag.KA
                )
                s.sendall(encode_message(msg))
                assert decode_message(recv_message(s)).response_code == ResponseCode.AUTHENTICATION_NEEDED

    await asyncio.to_thread(flood)
    table = native.server.handler.challenges
    assert len(table) == 64 and table.bytes < 64 * 101_000
    assert native.service.store.get("88.100/C0") is None
    assert native.service.store.get("88.100/C79") is None
