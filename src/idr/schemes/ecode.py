"""Ecode (GB/T 31866 物联网标识体系 物品编码Ecode) and its handles.

An Ecode is V (version, one digit) + NSI (number system identifier, which coding scheme
the rest follows) + MD (master data code, structured by that scheme). What was checked
and what was not (see docs/schemes.md):

* verified from public summaries of GB/T 31866-2023: the V/NSI/MD structure, and that V0
  is reserved for GS1-compatible codes — so a V0 Ecode is resolved as the GS1 key it carries;
* NOT verified against the standard's text (not available to us): the per-version NSI and
  MD lengths and character sets in ``VERSIONS``. They are one table, to be corrected there.

The written form of a V0 Ecode is taken to be ``0`` followed by a GS1 element string,
Digital Link path or GTIN — an assumption of this implementation.

Handles: ``<root>.<V>.<NSI>/<the whole Ecode>``, e.g. ``ECODE.1.0001/1000112345678``; the
holder of an NSI holds that prefix. Like every scheme here, longest match over the
candidate prefixes picks the holder and the suffix alone gives the Ecode back.
"""

from __future__ import annotations

from dataclasses import dataclass

from idr.schemes import gs1
from idr.schemes.common import Holds, SchemeError, handle_suffix, longest_held

DEFAULT_ROOT = "ECODE"
MAX_ECODE_BYTES = 255
_ALNUM = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_DIGITS = frozenset("0123456789")


@dataclass(frozen=True, slots=True)
class Version:
    nsi_len: int
    md_max: int
    charset: frozenset[str] | None  # None: any printable character (variable-length version)
    charset_name: str


# UNVERIFIED (see module docstring): lengths as recalled from GB/T 31866-2015 Table 1.
VERSIONS: dict[int, Version] = {
    1: Version(4, 20, _DIGITS, "digits"),
    2: Version(4, 28, _DIGITS, "digits"),
    3: Version(5, 39, _ALNUM, "digits and upper-case letters"),
    4: Version(5, MAX_ECODE_BYTES - 6, None, "printable characters"),
}
GS1_VERSION = 0
EXPLICIT_PREFIXES = ("urn:ecode:", "ecode:")


def _err(message: str) -> SchemeError:
    return SchemeError("ecode", message)


@dataclass(frozen=True, slots=True)
class Ecode:
    version: int
    nsi: str
    md: str
    gs1: gs1.DigitalLink | None = None  # V0: the GS1 key it carries

    def __str__(self) -> str:
        if self.gs1 is not None:
            return f"0{self.gs1.element_string()}"
        return f"{self.version}{self.nsi}{self.md}"


def strip_explicit(text: str) -> tuple[str, bool]:
    """Drop an ``ecode:`` / ``urn:ecode:`` marker; says whether there was one."""
    t = text.strip()
    for p in EXPLICIT_PREFIXES:
        if t[: len(p)].lower() == p:
            return t[len(p) :], True
    return t, False


def parse(text: str) -> Ecode:
    """``ecode:`` marker optional; SchemeError naming the part (V, NSI, MD) that is wrong."""
    t, _ = strip_explicit(text)
    if not t:
        raise _err("empty Ecode")
    if len(t.encode("utf-8")) > MAX_ECODE_BYTES:
        raise _err(f"Ecode longer than {MAX_ECODE_BYTES} bytes")
    if not t[0].isdigit() or not t[0].isascii():
        raise _err(f"Ecode {t!r} must start with its version digit")
    v = int(t[0])
    if v == GS1_VERSION:
        try:
            key = gs1.parse(t[1:])
        except SchemeError as e:
            raise _err(f"V0 Ecode {t!r} does not carry a GS1 key: {e.message}") from e
        return Ecode(0, "", "", key)
    spec = VERSIONS.get(v)
    if spec is None:
        raise _err(
            f"Ecode version {v} is reserved (known versions: 0 (GS1), {', '.join(map(str, VERSIONS))})"
        )
    nsi = t[1 : 1 + spec.nsi_len]
    md = t[1 + spec.nsi_len :]
    if len(nsi) < spec.nsi_len or not set(nsi) <= _DIGITS:
        raise _err(f"Ecode V{v}: NSI must be {spec.nsi_len} digits, got {nsi!r}")
    if not 1 <= len(md) <= spec.md_max:
        raise _err(f"Ecode V{v}: master data code must be 1..{spec.md_max} characters, got {len(md)}")
    if spec.charset is not None:
        bad = next((c for c in md if c not in spec.charset), None)
        if bad is not None:
            raise _err(
                f"Ecode V{v}: {bad!r} is not allowed in the master data code ({spec.charset_name} only)"
            )
    elif any(not c.isprintable() or c.isspace() for c in md):
        raise _err(f"Ecode V{v}: master data code must be printable, without spaces")
    return Ecode(v, nsi, md)


def candidate_prefixes(code: Ecode, root: str = DEFAULT_ROOT) -> tuple[str, ...]:
    if code.gs1 is not None:
        raise _err("a V0 Ecode resolves as GS1; map its .gs1 key with idr.schemes.gs1")
    return (f"{root}.{code.version}.{code.nsi}", root)


def to_handle(code: Ecode, prefix: str) -> str:
    return f"{prefix}/{code}"


def from_handle(handle: str) -> Ecode:
    return parse(handle_suffix(handle, "ecode"))


def handle_for(code: Ecode, holds: Holds, root: str = DEFAULT_ROOT) -> str | None:
    prefix = longest_held(candidate_prefixes(code, root), holds)
    return None if prefix is None else to_handle(code, prefix)
