"""Malformed input of any shape: the decoders raise ProtocolError and nothing else.

Random bytes and mutants of the captured vectors (bit flips, truncations, splices, length fields
set to huge values). ``bench/fuzz_codec.py`` runs its own, wider set of these mutators (with
fresh random inputs and word-aligned lengths) a million times over the message decoder.
"""

from __future__ import annotations

import contextlib
import random
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idr.codec.auth import verify_secret_answer, verify_signature_answer
from idr.codec.credential import decode_credential
from idr.codec.keys import decode_public_key
from idr.codec.message import decode_message
from idr.codec.site import decode_site
from idr.codec.udp import Reassembler
from idr.codec.values import decode_admin, decode_values, decode_vlist
from idr.codec.wire import ProtocolError

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "handle"
SEEDS = [p.read_bytes() for p in sorted(VECTORS.glob("*.bin"))]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One of: flip bits, truncate, set an aligned int4 to a huge/negative value, splice, extend."""
    buf = bytearray(data)
    kind = rng.randrange(6)
    if kind == 0 and buf:
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
    elif kind == 1:
        del buf[rng.randrange(len(buf) + 1) :]
    elif kind == 2 and len(buf) >= 4:
        i = rng.randrange(len(buf) - 3)
        huge = [0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, 0x00100000, 262144, len(buf), rng.getrandbits(32)]
        v = rng.choice(huge)
        buf[i : i + 4] = struct.pack(">I", v)
    elif kind == 3 and buf:
        i, j = sorted(rng.randrange(len(buf)) for _ in range(2))
        buf[i:j] = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 8)))
    elif kind == 4:
        buf += bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 16)))
    else:
        i = rng.randrange(len(buf) + 1)
        buf[i:i] = rng.choice(SEEDS)[rng.randrange(40) :][: rng.randint(0, 64)]
    return bytes(buf)


def fix_length(data: bytes) -> bytes:
    """Make the envelope's MessageLength agree, so mutants reach the body parsers."""
    if len(data) < 20:
        return data
    return data[:16] + struct.pack(">I", len(data) - 20) + data[20:]


DECODERS: list[Callable[[bytes], object]] = [
    decode_message,
    lambda d: decode_message(fix_length(d)),
    lambda d: decode_site(d[44:]),
    lambda d: decode_values(d[62:]),
    decode_admin,
    decode_vlist,
    decode_public_key,
    decode_credential,
    lambda d: verify_secret_answer(b"secret", b"n" * 16, b"d" * 32, d[:200]),
    lambda d: Reassembler(max_pending=4).feed("peer", d, now=0.0),
]


def only_protocol_errors(decoder: Callable[[bytes], object], data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decoder(data)


@pytest.mark.parametrize("decoder", range(len(DECODERS)))
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes(decoder: int, data: bytes) -> None:
    only_protocol_errors(DECODERS[decoder], data)


@pytest.mark.parametrize("decoder", range(len(DECODERS)))
@settings(max_examples=500, deadline=None)
@given(st.integers(0, len(SEEDS) - 1), st.randoms(use_true_random=False), st.integers(1, 3))
def test_mutated_vectors(decoder: int, seed: int, rng: random.Random, rounds: int) -> None:
    data = SEEDS[seed]
    for _ in range(rounds):
        data = mutate(data, rng)
    only_protocol_errors(DECODERS[decoder], data)


def test_huge_declared_lengths_are_refused_without_allocating() -> None:
    msg = bytearray(SEEDS[0])
    msg[44:48] = b"\x7f\xff\xff\xff"  # handle length
    with pytest.raises(ProtocolError):
        decode_message(bytes(msg))
    msg = bytearray(fix_length(SEEDS[0] + bytes(8)))
    msg[16:20] = struct.pack(">I", 262145)
    with pytest.raises(ProtocolError):
        decode_message(bytes(msg))


def test_overlong_handle_is_invalid_handle() -> None:
    from idr.codec.bodies import ResolutionRequest
    from idr.codec.envelope import OpCode
    from idr.codec.message import Message, encode_message
    from idr.model.errors import ResponseCode

    data = encode_message(Message(OpCode.RESOLUTION, ResolutionRequest("8/" + "x" * 2047)))
    with pytest.raises(ProtocolError) as e:
        decode_message(data)
    assert e.value.code == ResponseCode.INVALID_HANDLE
    raw = bytearray(encode_message(Message(OpCode.RESOLUTION, ResolutionRequest("8/ab"))))
    raw[48:52] = b"\xff\xfe\x80\x80"
    with pytest.raises(ProtocolError) as e:
        decode_message(bytes(raw))
    assert e.value.code == ResponseCode.INVALID_HANDLE


def test_bad_value_is_invalid_value() -> None:
    from idr.model.errors import ResponseCode

    raw = bytearray(
        SEEDS[[p.name for p in sorted(VECTORS.glob("*.bin"))].index("udp_resolve_bench-0_response.bin")]
    )
    raw[74] = 7  # ttlType of the first value (body 44 + handle 18 + count 4 + index, timestamp)
    with pytest.raises(ProtocolError) as e:
        decode_message(bytes(raw))
    assert e.value.code == ResponseCode.INVALID_VALUE


def test_unknown_opcode_and_version() -> None:
    raw = bytearray(SEEDS[0])
    raw[20:24] = struct.pack(">I", 77)
    with pytest.raises(ProtocolError):
        decode_message(bytes(raw))
    raw = bytearray(SEEDS[0])
    raw[0] = 3
    with pytest.raises(ProtocolError):
        decode_message(bytes(raw))


def test_signature_answer_garbage() -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate().public_key()
    with pytest.raises(ProtocolError):
        verify_signature_answer(key, b"n", b"d", b"\x00\x00\x00\x09abc")
