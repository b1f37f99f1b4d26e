"""Multi-datagram UDP: fragmenting and the bounded reassembler."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idr.codec.bodies import ResolutionResponse
from idr.codec.envelope import OpCode, decode_envelope
from idr.codec.message import Message, decode_message, encode_message
from idr.codec.udp import MAX_UDP_DATA, Reassembler, fragment
from idr.codec.wire import ProtocolError
from idr.model.errors import ResponseCode
from idr.model.value import HandleValue


def big_message(size: int, request_id: int = 9) -> bytes:
    v = HandleValue(1, "DESC", b"x" * size)
    return encode_message(
        Message(
            OpCode.RESOLUTION,
            ResolutionResponse("88.100/big", (v,)),
            ResponseCode.SUCCESS,
            request_id=request_id,
        )
    )


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 5000), st.randoms(use_true_random=False))
def test_fragment_then_reassemble(size: int, rng: object) -> None:
    msg = big_message(size)
    packets = fragment(msg, truncated=True)
    assert all(len(p) <= 512 for p in packets)
    assert len(packets) == max(1, -(-(len(msg) - 20) // MAX_UDP_DATA))
    if len(packets) > 1:
        assert all(decode_envelope(p).truncated for p in packets)
    rng.shuffle(packets)  # type: ignore[attr-defined]
    ra = Reassembler()
    results = [ra.feed("peer", p, 0.0) for p in packets]
    whole = results[-1]
    assert whole is not None and all(r is None for r in results[:-1])
    assert decode_message(whole).body == decode_message(msg).body


def test_single_packet_passes_straight_through() -> None:
    msg = big_message(10)
    assert Reassembler().feed("peer", msg, 0.0) == msg


def test_duplicates_and_two_sources_do_not_mix() -> None:
    a, b = fragment(big_message(1000, 1)), fragment(big_message(1000, 1))
    ra = Reassembler()
    assert ra.feed("A", a[0], 0) is None
    assert ra.feed("A", a[0], 0) is None  # duplicate ignored
    assert ra.feed("B", b[1], 0) is None
    assert ra.pending == 2
    for p in a[1:-1]:
        assert ra.feed("A", p, 0) is None
    assert ra.feed("A", a[-1], 0) is not None
    assert ra.pending == 1


def test_deadline_expires_partial_messages() -> None:
    ra = Reassembler(timeout=2.0)
    p = fragment(big_message(2000))
    ra.feed("peer", p[0], now=0.0)
    ra.feed("peer", p[1], now=1.0)
    assert ra.pending == 1
    ra.feed("other", fragment(big_message(2000, 5))[0], now=2.5)  # anything later sweeps
    assert ra.pending == 1 and ra.dropped == 1
    assert ra.feed("peer", p[2], now=2.6) is None  # starts afresh, cannot complete from old parts


def test_bounds_evict_oldest() -> None:
    ra = Reassembler(max_pending=3, max_bytes=10_000)
    for rid in range(10):
        ra.feed("peer", fragment(big_message(3000, rid))[0], now=0.0)
        assert ra.pending <= 3 and ra.buffered_bytes <= 10_000
    assert ra.dropped == 7
    ra = Reassembler(max_bytes=1000)
    for rid in range(5):
        ra.feed("peer", fragment(big_message(3000, rid))[0], now=0.0)
        assert ra.buffered_bytes <= 1000


def test_one_source_cannot_push_out_the_others() -> None:
    """A flood of first datagrams from one address costs that address its own oldest partial
    messages, not a partial message of anyone else."""
    ra = Reassembler(max_pending=64, per_source=8, source_bytes=4 * 492)
    other = fragment(big_message(2000, 999))
    ra.feed("bystander", other[0], now=0.0)
    for rid in range(200):  # from ever new ports of one address
        ra.feed(("10.0.0.9", 1000 + rid), fragment(big_message(3000, rid))[0], now=0.0, group="10.0.0.9")
        assert ra.pending <= 1 + 4  # its bytes bound (4 datagrams) is tighter than its count bound
    assert all(ra.feed("bystander", d, now=0.1) is None for d in other[1:-1])
    assert ra.feed("bystander", other[-1], now=0.1) is not None


@pytest.mark.parametrize("mutation", ["seq", "short", "long", "length"])
def test_inconsistent_packets_are_refused(mutation: str) -> None:
    packets = fragment(big_message(2000))
    p = bytearray(packets[1])
    if mutation == "seq":
        p[12:16] = (99).to_bytes(4, "big")
    elif mutation == "short":
        del p[-1]
    elif mutation == "long":
        p += b"x"
    ra = Reassembler()
    ra.feed("peer", packets[0], 0.0)
    if mutation == "length":
        p[16:20] = (int.from_bytes(p[16:20], "big") + 492).to_bytes(4, "big")
    with pytest.raises(ProtocolError):
        ra.feed("peer", bytes(p), 0.0)
