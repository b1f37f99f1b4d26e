"""codec.peek against the reference server's captured bytes and against cut or lying messages."""

from __future__ import annotations

from pathlib import Path

from idr.codec import peek
from idr.codec.envelope import OpCode

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "handle"


def test_reference_request_and_answer() -> None:
    req = (VECTORS / "udp_resolve_bench-0_request.bin").read_bytes()
    resp = (VECTORS / "udp_resolve_bench-0_response.bin").read_bytes()
    assert peek.opcode(req) == OpCode.RESOLUTION and peek.handle(req) == "88.100/bench-0"
    assert peek.response_code(req) == 0 and peek.response_code(resp) == 1
    missing = (VECTORS / "udp_resolve_not-found_response.bin").read_bytes()
    assert peek.response_code(missing) == 100


def test_short_and_lying_messages_give_empty_answers() -> None:
    req = (VECTORS / "udp_resolve_bench-0_request.bin").read_bytes()
    for cut in (0, 10, 23, 27, 44, 47, 50):
        short = req[:cut]
        assert peek.handle(short) == ""
        assert peek.opcode(short) in (-1, OpCode.RESOLUTION)
    lying = bytearray(req)
    lying[44:48] = (10_000).to_bytes(4, "big")  # says the handle is longer than the message
    assert peek.handle(bytes(lying)) == ""
    site = bytearray(req)
    site[20:24] = int(OpCode.GET_SITE_INFO).to_bytes(4, "big")  # its body holds no handle
    assert peek.handle(bytes(site)) == ""
    bad = bytearray(req)
    bad[48:50] = b"\xff\xfe"
    assert "\ufffd" in peek.handle(bytes(bad))
