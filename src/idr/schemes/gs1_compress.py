"""Compressed GS1 Digital Links (GS1 Digital Link standard 1.1, compression; kept in 1.2+).

A compressed link carries its AIs as one base64url path segment,
``https://id.gs1.org/AQnYUc1gmg`` = ``https://id.gs1.org/01/05412345000013``. The bits are
a sequence of elements, each:

* the AI as 4-bit digits (the first two digits say how many digits the AI has — the
  standard's "table P", taken here from idr's AI rule table), or one byte from the
  standard's optimisation table ("table Opt") standing for a common sequence of AIs
  (``0B`` = 01 then 10);
* its value, part by part ("table F"): fixed-length digits as one binary number just wide
  enough for the largest value of that many digits; variable-length digits as a length
  (wide enough for the maximum), then the number; alphanumerics as a 3-bit encoding (0
  digits, 1 lower-case hex, 2 upper-case hex, 3 base64url, 4 seven-bit ASCII), a length if
  variable, then the characters;
* or, after the nibble F, a non-GS1 ``key=value`` pair (7-bit key length, base64url key,
  encoded value), which is decoded and set aside.

The bit string is right-padded with zeros to whole base64url characters. An AI's "table F"
parts are its components from the rule table, with neighbouring fixed-length components of
one kind merged (``N6 N4`` → N10) and optional ones merged into one variable-length part
(``[N2] [N2]`` → N..4); AIs 7230–7239 are one X..30 part, as GS1's encoders write them.
Decoded digits keep their encoded length: leading zeros are part of the value (GS1's
JavaScript toolkit drops those of variable-length digits).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache

from idr.schemes import gs1_syntax as syntax
from idr.schemes.gs1_syntax import Gs1Error

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
MAX_COMPRESSED = 1024  # characters of one compressed segment: far beyond any real key

# The optimisation codes of GS1 Digital Link compression ("table Opt"): one byte for a
# sequence of AIs.
OPTIMISATIONS: Mapping[str, tuple[str, ...]] = {
    "0A": ("01", "22"),
    "0B": ("01", "10"),
    "0C": ("01", "21"),
    "0D": ("01", "17"),
    "0E": ("01", "7003"),
    "0F": ("01", "30"),
    "1A": ("01", "10", "21", "17"),
    "1B": ("01", "15"),
    "1C": ("01", "11"),
    "1D": ("01", "16"),
    "1E": ("01", "91"),
    "1F": ("01", "10", "15"),
    **{f"2{x}": ("01", f"310{n}") for n, x in enumerate("ABCDEF")},
    **{f"3{x}": ("01", f"320{n}") for n, x in enumerate("ABCDEF")},
    "9A": ("8010", "8011"),
    "9B": ("8017", "8019"),
    "9C": ("8018", "8019"),
    "9D": ("414", "254"),
    **{f"A{n}": ("01", f"392{n}") for n in range(10)},
    **{f"C{n}": ("255", f"390{n}") for n in range(10)},
    **{f"C{x}": ("255", f"394{n}") for n, x in enumerate("ABCD")},
}
_WIDE_X = {f"723{n}": 30 for n in range(10)}  # compressed as one X..30 part; the rules say X2 + X..28


def _err(message: str) -> Gs1Error:
    return Gs1Error(f"not a compressed Digital Link: {message}", rule="compression")


@dataclass(frozen=True, slots=True)
class Part:
    numeric: bool
    length: int  # fixed length, or the maximum if variable
    variable: bool


@cache
def table_f(ai: str) -> tuple[Part, ...]:
    """The compression format of an AI's value (see the module docstring)."""
    if ai in _WIDE_X:
        return (Part(False, _WIDE_X[ai], True),)
    parts: list[Part] = []
    for c in syntax.rule(ai).components:
        numeric, variable = c.charset == "N", c.optional or c.min != c.max
        if parts and parts[-1].numeric == numeric and parts[-1].variable == variable:
            prev = parts.pop()
            parts.append(Part(numeric, prev.length + c.max, variable))
        else:
            parts.append(Part(numeric, c.max, variable))
    return tuple(parts)


@cache
def _ai_lengths() -> Mapping[str, int]:
    """The standard's table P: how many digits an AI has, from its first two."""
    return {ai[:2]: len(ai) for ai in syntax.rules()}


def _value_bits(digits: int) -> int:
    """Bits for any number of ``digits`` digits: those of the largest one, 99…9."""
    return int("9" * digits).bit_length() if digits else 0


def _length_bits(maximum: int) -> int:
    """Bits for a length from 0 to ``maximum``."""
    return maximum.bit_length()


# --------------------------------------------------------------------------- decoding


class _Bits:
    def __init__(self, text: str) -> None:
        self.bits = "".join(f"{_INDEX[c]:06b}" for c in text)
        self.pos = 0

    def left(self) -> int:
        return len(self.bits) - self.pos

    def take(self, n: int) -> int:
        if n > self.left():
            raise _err("ends in the middle of a value")
        v = int(self.bits[self.pos : self.pos + n] or "0", 2)
        self.pos += n
        return v


def _chars(bits: _Bits, enc: int, n: int) -> str:
    if enc == 0:
        return str(bits.take(_value_bits(n))).zfill(n) if n else ""
    if enc in (1, 2):
        s = "".join("0123456789ABCDEF"[bits.take(4)] for _ in range(n))
        return s.lower() if enc == 1 else s
    if enc == 3:
        return "".join(ALPHABET[bits.take(6)] for _ in range(n))
    if enc == 4:
        return "".join(chr(bits.take(7)) for _ in range(n))
    raise _err(f"unknown encoding indicator {enc}")


def _value(bits: _Bits, ai: str) -> str:
    out = []
    for p in table_f(ai):
        if p.numeric:
            n = bits.take(_length_bits(p.length)) if p.variable else p.length
            out.append(str(bits.take(_value_bits(n))).zfill(n) if n else "")
        else:
            enc = bits.take(3)
            n = bits.take(_length_bits(p.length)) if p.variable else p.length
            out.append(_chars(bits, enc, n))
    return "".join(out)


def decompress_all(segment: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(AI elements, non-GS1 key=value pairs) of one compressed path segment."""
    if not segment or len(segment) > MAX_COMPRESSED or not re.fullmatch(r"[A-Za-z0-9_-]+", segment):
        raise _err(f"{segment[:40]!r} is not base64url")
    bits = _Bits(segment)
    lengths = _ai_lengths()
    elements: list[tuple[str, str]] = []
    others: list[tuple[str, str]] = []
    while bits.left() > 8:
        h1, h2 = bits.take(4), bits.take(4)
        if h1 <= 9 and h2 <= 9:
            ai = f"{h1}{h2}"
            n = lengths.get(ai)
            if n is None:
                raise _err(f"no GS1 Application Identifier starts with {ai}")
            for _ in range(n - 2):
                d = bits.take(4)
                if d > 9:
                    raise _err(f"AI {ai}… has a non-digit")
                ai += str(d)
            syntax.rule(ai)
            elements.append((ai, _value(bits, ai)))
        elif f"{h1:X}{h2:X}" in OPTIMISATIONS:
            for ai in OPTIMISATIONS[f"{h1:X}{h2:X}"]:
                elements.append((ai, _value(bits, ai)))
        elif h1 == 0xF:
            bits.pos -= 4
            key_len = bits.take(7)
            key = "".join(ALPHABET[bits.take(6)] for _ in range(key_len))
            enc = bits.take(3)
            others.append((key, _chars(bits, enc, bits.take(7))))
        else:
            raise _err(f"unknown optimisation code {h1:X}{h2:X}")
        if len(elements) > 64:
            raise _err("more than 64 elements")
    if not elements:
        raise _err(f"{segment[:40]!r} holds no AI")
    if "1" in bits.bits[bits.pos :]:
        raise _err("non-zero padding")
    return elements, others


def decompress(segment: str) -> list[tuple[str, str]]:
    """The (AI, value) elements of one compressed path segment (not yet validated)."""
    return decompress_all(segment)[0]


# --------------------------------------------------------------------------- encoding


def _encoding(s: str) -> int:
    if s.isdigit() and s.isascii():
        return 0
    if re.fullmatch(r"[0-9A-F]+", s):
        return 2
    if re.fullmatch(r"[0-9a-f]+", s):
        return 1
    if re.fullmatch(r"[A-Za-z0-9_-]+", s):
        return 3
    return 4


def _encode_chars(s: str, enc: int) -> str:
    if enc == 0:
        return f"{int(s):0{_value_bits(len(s))}b}" if s else ""
    if enc in (1, 2):
        return "".join(f"{int(c, 16):04b}" for c in s)
    if enc == 3:
        return "".join(f"{_INDEX[c]:06b}" for c in s)
    return "".join(f"{ord(c):07b}" for c in s)


def _encode_value(ai: str, value: str) -> str:
    out = []
    pos = 0
    parts = table_f(ai)
    for i, p in enumerate(parts):
        chunk = value[pos:] if p.variable or i == len(parts) - 1 else value[pos : pos + p.length]
        pos += len(chunk)
        if p.numeric:
            if p.variable:
                out.append(f"{len(chunk):0{_length_bits(p.length)}b}")
            out.append(f"{int(chunk or '0'):0{_value_bits(len(chunk))}b}" if chunk else "")
        else:
            enc = _encoding(chunk)
            out.append(f"{enc:03b}")
            if p.variable:
                out.append(f"{len(chunk):0{_length_bits(p.length)}b}")
            out.append(_encode_chars(chunk, enc))
    return "".join(out)


def compress(elements: Iterable[tuple[str, str]], *, optimise: bool = True) -> str:
    """One base64url segment for validated (AI, value) elements, AIs in ascending order; with
    ``optimise``, the optimisation code that saves the most digits is used first, repeatedly."""
    values = dict(elements)
    keys = sorted(values)
    bits: list[str] = []
    while optimise:
        usable = [(code, seq) for code, seq in OPTIMISATIONS.items() if all(a in keys for a in seq)]
        if not usable:
            break
        code, seq = max(usable, key=lambda cs: len("".join(cs[1])))
        bits.append(f"{int(code, 16):08b}")
        bits.extend(_encode_value(a, values[a]) for a in seq)
        keys = [k for k in keys if k not in seq]
    for ai in keys:
        bits.append("".join(f"{int(d):04b}" for d in ai))
        bits.append(_encode_value(ai, values[ai]))
    binary = "".join(bits)
    binary += "0" * (-len(binary) % 6)
    return "".join(ALPHABET[int(binary[i : i + 6], 2)] for i in range(0, len(binary), 6))
