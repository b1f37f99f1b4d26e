"""Byte-exact agreement with captures from the reference server (Handle.Net 9.2.0)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from idr.codec import OpCode, OpFlag, decode_message, encode_message
from idr.codec.bodies import ErrorResponse, ResolutionRequest, ResolutionResponse
from idr.codec.envelope import decode_envelope
from idr.codec.message import request_digest, response_to
from idr.codec.udp import Reassembler, fragment
from idr.codec.values import decode_admin
from idr.model.errors import ResponseCode

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "handle"
ALL = sorted(p.name for p in VECTORS.glob("*.bin"))
MESSAGES = [n for n in ALL if "_pkt" not in n]
PACKETS = [f"udp_resolve_big_response_pkt{i}.bin" for i in range(7)]


def load(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def test_vectors_present() -> None:
    assert len(ALL) == 18, ALL
    assert set(PACKETS) <= set(ALL)


@pytest.mark.parametrize("name", MESSAGES)
def test_reencode_is_byte_exact(name: str) -> None:
    data = load(name)
    msg = decode_message(data)
    assert msg.raw == data
    assert encode_message(msg) == data


@pytest.mark.parametrize("name", MESSAGES)
def test_envelope_length_counts_header_body_and_credential_length(name: str) -> None:
    data = load(name)
    env = decode_envelope(data)
    body_len = int.from_bytes(data[40:44], "big")
    assert env.message_length == len(data) - 20 == 24 + body_len + 4
    assert data[-4:] == b"\0\0\0\0"  # nothing signed


@pytest.mark.parametrize(
    ("name", "handle"),
    [
        ("udp_resolve_bench-0_request.bin", "88.100/bench-0"),
        ("tcp_resolve_bench-0_request.bin", "88.100/bench-0"),
        ("udp_resolve_not-found_request.bin", "88.100/does-not-exist"),
        ("udp_resolve_unknown-prefix_request.bin", "99.999/foo"),
        ("udp_resolve_big_request.bin", "88.100/big"),
        ("tcp_resolve_big_request.bin", "88.100/big"),
    ],
)
def test_requests(name: str, handle: str) -> None:
    m = decode_message(load(name))
    assert m.is_request and m.opcode == OpCode.RESOLUTION
    assert m.body == ResolutionRequest(handle, (), ())
    assert m.opflags == 0x19000000 == OpFlag.REC | OpFlag.CA | OpFlag.PO
    assert (m.major, m.minor, m.suggested_major, m.suggested_minor) == (2, 3, 2, 11)
    assert m.site_info_serial == 0xFFFF and m.credential is None and m.request_digest is None


def test_request_ids_pair_up() -> None:
    for req in [n for n in MESSAGES if n.endswith("_request.bin")]:
        resp = req.replace("_request", "_response")
        if resp not in ALL:
            resp = resp.replace(".bin", "_pkt0.bin")
        a, b = decode_envelope(load(req)), decode_envelope(load(resp))
        assert a.request_id == b.request_id != 0
    assert decode_message(load("udp_resolve_bench-0_request.bin")).request_id == 0x031DB0C1


@pytest.mark.parametrize("name", ["udp_resolve_bench-0_response.bin", "tcp_resolve_bench-0_response.bin"])
def test_bench_response(name: str) -> None:
    m = decode_message(load(name))
    assert (m.response_code, m.opflags, m.version) == (ResponseCode.SUCCESS, 0x99000000, (2, 11))
    assert isinstance(m.body, ResolutionResponse)
    assert m.body.handle == "88.100/bench-0"
    url, email, admin = m.body.values
    assert (url.index, url.type, url.data) == (1, "URL", b"https://example.org/objects/0")
    assert (email.index, email.type, email.data) == (2, "EMAIL", b"owner-0@example.org")
    assert (admin.index, admin.type) == (100, "HS_ADMIN")
    a = decode_admin(admin.data)
    assert (a.handle, a.index, a.permissions) == ("0.NA/88.100", 300, 0x0FFF)
    for v in m.body.values:
        assert (v.timestamp, v.ttl, v.permissions) == (1700000000, 86400, 0xE)


def test_not_found_and_unknown_prefix() -> None:
    nf = decode_message(load("udp_resolve_not-found_response.bin"))
    assert nf.response_code == 100 and ResponseCode(nf.response_code) is ResponseCode.HANDLE_NOT_FOUND
    assert nf.body == ErrorResponse("") and nf.opflags == 0x99000000
    up = decode_message(load("udp_resolve_unknown-prefix_response.bin"))
    assert up.response_code == 301 and ResponseCode(up.response_code) is ResponseCode.SERVER_NOT_RESPONSIBLE
    assert up.body == ErrorResponse("That prefix doesn't live here")


def test_big_response_over_tcp() -> None:
    m = decode_message(load("tcp_resolve_big_response.bin"))
    assert isinstance(m.body, ResolutionResponse)
    url, desc = m.body.values
    assert url.type == "URL" and desc.type == "DESC" and len(desc.data) == 3000


def test_response_to_rebuilds_the_reference_answer() -> None:
    """Our response builder, fed the captured request, produces the captured answer."""
    req = decode_message(load("udp_resolve_bench-0_request.bin"))
    want = decode_message(load("udp_resolve_bench-0_response.bin"))
    ours = response_to(req, ResponseCode.SUCCESS, want.body)
    assert encode_message(ours) == load("udp_resolve_bench-0_response.bin")


def test_request_digest_covers_header_and_body_only() -> None:
    import hashlib

    data = load("udp_resolve_bench-0_request.bin")
    d = request_digest(data, 3)
    assert d.digest == hashlib.sha256(data[20:-4]).digest()
    assert request_digest(decode_message(data), 3) == d
    assert request_digest(data, 1).digest == hashlib.md5(data[20:-4]).digest()


def test_fragment_reproduces_udp_packets() -> None:
    packets = [load(n) for n in PACKETS]
    tcp = load("tcp_resolve_big_response.bin")
    rid = decode_envelope(packets[0]).request_id
    assert fragment(tcp, rid) == packets
    assert [len(p) for p in packets] == [512] * 6 + [196]


def test_reassembler_rebuilds_from_shuffled_packets() -> None:
    packets = [load(n) for n in PACKETS]
    whole = packets[0][:20] + b"".join(p[20:] for p in packets)
    for seed in range(5):
        shuffled = packets[:]
        random.Random(seed).shuffle(shuffled)
        ra = Reassembler()
        out = [ra.feed(("127.0.0.1", 2641), p, now=0.0) for p in shuffled]
        assert out[:-1] == [None] * 6
        assert out[-1] == whole
        assert ra.pending == 0 and ra.buffered_bytes == 0
        m = decode_message(whole)
        assert isinstance(m.body, ResolutionResponse) and m.body.handle == "88.100/big"
        tcp_msg = decode_message(load("tcp_resolve_big_response.bin"))
        assert m.body == tcp_msg.body
