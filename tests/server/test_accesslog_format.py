"""A native access record is formatted by hand (for speed); each line must be exactly what
``orjson.dumps`` writes for the same fields read by ``idr.codec.peek`` — for well-formed
requests and for anything a client may send (quotes, backslashes, control characters, bytes
that are not UTF-8, short or encrypted messages) — whether it came as the UDP hot path's
5-tuple (formatted by the batch loop) or as a general native record."""

from __future__ import annotations

import json
import logging

import orjson
from hypothesis import given
from hypothesis import strategies as st

from idr.codec import peek
from idr.codec.envelope import EnvFlag, OpCode
from idr.server.accesslog import AccessLog
from idr.server.native import WARM_SHAPES, plain_request

_OPS = {int(op): op.name for op in OpCode}


def expected(sink: AccessLog, rec: tuple[str, int, int, object, bytes, bytes, int], offset: int) -> str:
    peer, request, answer = rec[3], rec[4], rec[5]
    op = peek.opcode(request)
    doc = {
        "time": sink._time(rec[1] + offset),
        "client": peer[0] if isinstance(peer, tuple) else str(peer),
        "interface": rec[0],
        "operation": _OPS.get(op, str(op)),
        "handle": peek.handle(request),
        "code": peek.response_code(answer) if answer else -1,
        "bytes": rec[6],
        "us": (rec[2] - rec[1]) // 1000,
    }
    return orjson.dumps(doc).decode()


ANSWER = bytes.fromhex("02010000") + bytes(16) + (1).to_bytes(4, "big") + (100).to_bytes(4, "big") + bytes(16)


def check(request: bytes, answer: bytes, peer: object, sent: int = 233) -> str:
    sink = AccessLog(logging.getLogger("idr.access.test"))
    rec = ("udp", 1_000_000, 1_000_000 + 14_999, peer, request, answer, sent)
    offset = 1_764_000_000_000_000_000
    line = sink._line(rec, offset)
    assert line == expected(sink, rec, offset)
    json.loads(line)
    if isinstance(peer, tuple) and len(request) >= 44:  # as the UDP hot path records it
        hot = (1_000_000, 1_000_000 + 14_999, peer, request, answer)
        sink._format([hot, rec, hot], offset)  # between general lines
        want = expected(sink, ("udp", *hot[:2], peer, request, answer, len(answer)), offset)
        assert sink.lines == [want, line, want]
    return line


def test_hot_records_across_seconds_and_clients() -> None:
    """The batch loop caches the second's text and each client's: a batch crossing seconds
    (and clients, and interleaved with other records) gives every line its own time."""
    sink = AccessLog(logging.getLogger("idr.access.test"))
    offset = 1_764_000_000_999_999_000  # 1 µs before a second's end
    request = plain_request(WARM_SHAPES[1], b"88.100/bench-7")
    recs: list[tuple[object, ...]] = []
    for i in range(6):
        t0 = 500 * i  # 0.5 µs apart: the second turns between the second and third
        peer = (f"10.0.0.{i % 2}", 2641)
        recs.append((t0, t0 + 2000, peer, request, ANSWER))
        if i == 3:
            recs.append(("tcp", t0, t0 + 1000, peer, request, ANSWER, 9))
    for rec in recs:
        sink._format([rec], offset)
    one_by_one = list(sink.lines)
    sink.lines.clear()
    sink._format(recs, offset)
    assert sink.lines == one_by_one
    times = [json.loads(x)["time"] for x in sink.lines]
    assert times[:3] == [
        "2025-11-24T16:00:00.999999Z",
        "2025-11-24T16:00:00.999999Z",
        "2025-11-24T16:00:01.000000Z",
    ]
    assert [json.loads(x)["client"] for x in sink.lines][:2] == ["10.0.0.0", "10.0.0.1"]
    for rec, x in zip(recs, sink.lines, strict=True):
        assert x == (
            expected(sink, rec, offset)
            if len(rec) == 7
            else expected(sink, ("udp", *rec[:4], ANSWER, len(ANSWER)), offset)
        )


def test_a_plain_resolution_line() -> None:
    line = check(plain_request(WARM_SHAPES[1], b"88.100/bench-7"), ANSWER, ("10.0.0.7", 2641))
    doc = json.loads(line)
    assert doc["handle"] == "88.100/bench-7" and doc["operation"] == "RESOLUTION"
    assert doc["code"] == 100 and doc["client"] == "10.0.0.7" and doc["us"] == 14


def test_handles_that_need_escaping() -> None:
    odd = (b'88.100/a"b', b"88.100/a\\b", b"88.100/a\x00b\x1f", b"88.100/\xff\xfe", b"88.100/a\x7fb")
    for raw in (*odd, "88.100/标识".encode(), b"88.100/\xe2\x80\xa8"):
        doc = json.loads(check(plain_request(WARM_SHAPES[1], raw), ANSWER, ("::1", 1, 0, 0)))
        assert doc["handle"] == raw.decode("utf-8", "replace")


def test_short_encrypted_and_odd_messages() -> None:
    encrypted = bytearray(plain_request(WARM_SHAPES[1], b"88.100/x"))
    encrypted[2] |= EnvFlag.EC
    for request in (b"", b"\x02\x01", bytes(23), bytes(24), bytes(47), bytes(encrypted)):
        check(request, b"", "unix-peer")
        check(request, bytes(27), ("1.2.3.4", 1))


@given(st.binary(max_size=120), st.binary(max_size=40), st.text(max_size=12))
def test_any_bytes_give_the_same_line(body: bytes, answer: bytes, host: str) -> None:
    request = plain_request(WARM_SHAPES[1], b"88.100/x")[:44] + body
    check(request, answer, (host, 1))
    check(plain_request(WARM_SHAPES[0], body[:60]), answer, host)
