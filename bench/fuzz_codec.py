"""Throw ≥1,000,000 random and mutated inputs at the Handle message decoder.

Prints how many inputs ran, how many were rejected (ProtocolError), how many decoded, any
crash (any other exception; should be 0) and the time taken. Mutants start from the captured
vectors in ../shared/vectors/handle; half get their envelope length fixed up so they reach the
body parsers.

    python bench/fuzz_codec.py [count] [seed]
"""

from __future__ import annotations

import random
import struct
import sys
import time
import traceback
from pathlib import Path

from idr.codec.message import decode_message, encode_message
from idr.codec.wire import ProtocolError

VECTORS = Path(__file__).resolve().parents[1] / "tests" / "vectors" / "handle"


def mutate(data: bytes, rng: random.Random, seeds: list[bytes]) -> bytes:
    buf = bytearray(data)
    kind = rng.randrange(7)
    if kind == 0 and buf:
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
    elif kind == 1:
        del buf[rng.randrange(len(buf) + 1) :]
    elif kind == 2 and len(buf) >= 4:
        i = rng.randrange(len(buf) - 3) & ~3 if rng.random() < 0.5 else rng.randrange(len(buf) - 3)
        huge = [0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, 0x00100000, 262144, 2048, 2049, rng.getrandbits(32)]
        buf[i : i + 4] = struct.pack(">I", rng.choice(huge))
    elif kind == 3 and buf:
        i, j = sorted(rng.randrange(len(buf)) for _ in range(2))
        buf[i:j] = rng.randbytes(rng.randint(0, 8))
    elif kind == 4:
        buf += rng.randbytes(rng.randint(1, 16))
    elif kind == 5:
        src = rng.choice(seeds)
        i = rng.randrange(len(buf) + 1)
        buf[i:i] = src[rng.randrange(len(src)) :][: rng.randint(0, 64)]
    else:
        return rng.randbytes(rng.randint(0, 300))
    return bytes(buf)


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 2641)
    seeds = [p.read_bytes() for p in sorted(VECTORS.glob("*.bin"))]
    if not seeds:
        print(f"no vectors under {VECTORS}")
        return 2
    rejected = decoded = crashes = 0
    first_crash: str | None = None
    t0 = time.perf_counter()
    for _ in range(count):
        data = rng.choice(seeds)
        for _ in range(rng.randint(1, 3)):
            data = mutate(data, rng, seeds)
        if len(data) >= 20 and rng.random() < 0.5:
            data = data[:16] + struct.pack(">I", len(data) - 20) + data[20:]
        try:
            msg = decode_message(data)
            encode_message(msg)  # whatever decodes must also encode
            decoded += 1
        except ProtocolError:
            rejected += 1
        except Exception:
            crashes += 1
            if first_crash is None:
                first_crash = f"input {data.hex()}\n{traceback.format_exc()}"
    elapsed = time.perf_counter() - t0
    print(f"inputs    {count}")
    print(f"rejected  {rejected} (ProtocolError)")
    print(f"decoded   {decoded}")
    print(f"crashes   {crashes}")
    print(f"time      {elapsed:.1f} s ({count / elapsed:,.0f} inputs/s)")
    if first_crash:
        print(first_crash)
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
