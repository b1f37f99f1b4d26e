"""GS1 keys: Digital Link URIs, element strings, check digits, and their handles.

Syntax follows the GS1 Digital Link URI standard (path ``/{primary AI}/{value}[/{qualifier
AI}/{value}…]``, data attributes in the query string) and the AI formats of the GS1
General Specifications for the AIs below. Only what a resolver needs is implemented:
compressed Digital Links and the full AI table are not.

Handles: a GS1 key lives at ``<root>.<company digits>/<canonical DL path without the
leading slash>``, e.g. ``GS1.6901234/01/06901234567892/10/L1``. A GTIN does not say how
long its company prefix is, so the prefix is found by longest match against the prefixes
a node holds (``candidate_prefixes`` + ``common.longest_held``); the suffix alone gives the
key back (``from_handle``). See docs/schemes.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote_to_bytes, urlsplit

from idr.schemes.common import Holds, SchemeError, handle_suffix, longest_held

DEFAULT_ROOT = "GS1"

# GS1 General Specifications §7.11: AI encodable character sets 82 and 39.
CSET82 = frozenset("!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz")
CSET39 = frozenset("#-/0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_CHARSETS = {"N": frozenset("0123456789"), "X": CSET82, "Y": CSET39}
_CHARSET_NAMES = {"N": "digits", "X": "GS1 character set 82", "Y": "GS1 character set 39"}

MAX_QUERY_ATTRIBUTES = 32  # a Digital Link carries a handful; bound what a request can make us parse


def _err(message: str) -> SchemeError:
    return SchemeError("gs1", message)


@dataclass(frozen=True, slots=True)
class Part:
    """One component of an AI's value: charset N/X/Y, length range, whether it ends in a check digit."""

    charset: str
    min: int
    max: int
    check: bool = False


@dataclass(frozen=True, slots=True)
class Ai:
    code: str
    name: str
    parts: tuple[Part, ...]
    role: str  # "primary", "qualifier" or "attribute"


def _n(n: int, check: bool = False) -> Part:
    return Part("N", n, n, check)


def _ai(code: str, name: str, role: str, *parts: Part) -> Ai:
    return Ai(code, name, parts, role)


# Formats from the GS1 General Specifications AI table (e.g. 01 = N2+N14 with check digit,
# 10 = N2+X..20, 8003 = N4+N14+X..16, 8004 = N4+X..30); only the value part is listed.
AIS: Mapping[str, Ai] = {
    a.code: a
    for a in (
        _ai("00", "SSCC", "primary", _n(18, True)),
        _ai("01", "GTIN", "primary", _n(14, True)),
        _ai("253", "GDTI", "primary", _n(13, True), Part("X", 0, 17)),
        _ai("255", "GCN", "primary", _n(13, True), Part("N", 0, 12)),
        _ai("401", "GINC", "primary", Part("X", 1, 30)),
        _ai("402", "GSIN", "primary", _n(17, True)),
        _ai("414", "GLN", "primary", _n(13, True)),
        _ai("417", "PARTY GLN", "primary", _n(13, True)),
        _ai("8003", "GRAI", "primary", _n(14, True), Part("X", 0, 16)),
        _ai("8004", "GIAI", "primary", Part("X", 1, 30)),
        _ai("8006", "ITIP", "primary", _n(14, True), _n(2), _n(2)),
        _ai("8010", "CPID", "primary", Part("Y", 1, 30)),
        _ai("8017", "GSRN PROVIDER", "primary", _n(18, True)),
        _ai("8018", "GSRN RECIPIENT", "primary", _n(18, True)),
        _ai("22", "CPV", "qualifier", Part("X", 1, 20)),
        _ai("10", "BATCH/LOT", "qualifier", Part("X", 1, 20)),
        _ai("21", "SERIAL", "qualifier", Part("X", 1, 20)),
        _ai("254", "GLN EXTENSION COMPONENT", "qualifier", Part("X", 1, 20)),
        _ai("8011", "CPID SERIAL", "qualifier", Part("N", 1, 12)),
        _ai("8019", "SRIN", "qualifier", Part("N", 1, 10)),
        _ai("11", "PROD DATE", "attribute", _n(6)),
        _ai("12", "DUE DATE", "attribute", _n(6)),
        _ai("13", "PACK DATE", "attribute", _n(6)),
        _ai("15", "BEST BEFORE", "attribute", _n(6)),
        _ai("16", "SELL BY", "attribute", _n(6)),
        _ai("17", "USE BY", "attribute", _n(6)),
        _ai("30", "VAR. COUNT", "attribute", Part("N", 1, 8)),
        _ai("37", "COUNT", "attribute", Part("N", 1, 8)),
        _ai("7003", "EXPIRY TIME", "attribute", _n(10)),
    )
}

# Key qualifiers per primary key, in the one order the Digital Link path allows.
QUALIFIERS: Mapping[str, tuple[str, ...]] = {
    "01": ("22", "10", "21"),
    "8006": ("22", "10", "21"),
    "414": ("254",),
    "8010": ("8011",),
    "8017": ("8019",),
    "8018": ("8019",),
}
PRIMARY_KEYS = tuple(code for code, ai in AIS.items() if ai.role == "primary")

# Where the company prefix starts and the most digits it could span (GS1 company prefixes
# are at most 12 digits; the key's check digit is never part of it).
_COMPANY_SLICE: Mapping[str, tuple[int, int]] = {
    "00": (1, 17),  # extension digit, then GCP + serial reference
    "01": (1, 13),  # indicator digit, then GCP + item reference
    "8006": (1, 13),
    "8003": (1, 13),  # GRAI starts with a 0 filler digit
    "253": (0, 12),
    "255": (0, 12),
    "402": (0, 16),
    "414": (0, 12),
    "417": (0, 12),
    "8017": (0, 17),
    "8018": (0, 17),
}
MAX_COMPANY_PREFIX = 12


def check_digit(body: str) -> int:
    """GS1 mod-10: weights 3,1,3,… from the rightmost digit of ``body`` (which excludes the check digit)."""
    total = sum(int(c) * (3 if i % 2 == 0 else 1) for i, c in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def with_check_digit(body: str) -> str:
    return body + str(check_digit(body))


def pad_gtin(value: str) -> str:
    """GTIN-8/12/13 → GTIN-14 with leading zeros (the check digit stays valid: weights run from the right)."""
    if value.isdigit() and len(value) in (8, 12, 13):
        return value.zfill(14)
    return value


def validate_ai(code: str, value: str) -> str:
    """Check ``value`` against AI ``code``'s format; returns it (GTINs padded to 14 digits)."""
    ai = AIS.get(code)
    if ai is None:
        raise _err(f"AI {code} is not supported by this resolver")
    if code == "01":
        value = pad_gtin(value)
    label = f"AI {code} ({ai.name})"
    pos = 0
    for i, part in enumerate(ai.parts):
        rest = len(value) - pos
        if i < len(ai.parts) - 1:
            n = part.max  # only the last part varies in length, so earlier ones are fixed
            if rest < n:
                raise _err(f"{label}: {value!r} is too short ({_format_text(ai)})")
        else:
            n = rest
            if not part.min <= n <= part.max:
                raise _err(f"{label}: {value!r} has the wrong length ({_format_text(ai)})")
        chunk = value[pos : pos + n]
        allowed = _CHARSETS[part.charset]
        bad = next((c for c in chunk if c not in allowed), None)
        if bad is not None:
            raise _err(f"{label}: {bad!r} is not allowed ({_CHARSET_NAMES[part.charset]} only)")
        if part.check and n:
            want = check_digit(chunk[:-1])
            if int(chunk[-1]) != want:
                raise _err(f"{label}: check digit of {chunk} is {chunk[-1]}, expected {want}")
        pos += n
    if pos != len(value):
        raise _err(f"{label}: {value!r} is too long ({_format_text(ai)})")
    return value


def _format_text(ai: Ai) -> str:
    out = []
    for p in ai.parts:
        if p.min == p.max:
            out.append(f"{p.charset}{p.max}")
        else:
            out.append(f"{p.charset}..{p.max}")
    return "+".join(out)


def _decode_segment(raw: str) -> str:
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError as e:
        raise _err(f"path segment {raw!r} is not UTF-8 after percent-decoding") from e


def _encode(value: str) -> str:
    return quote(value, safe="")


@dataclass(frozen=True, slots=True)
class DigitalLink:
    """A validated GS1 key: primary key, key qualifiers (in canonical order), data attributes."""

    primary: str
    value: str
    qualifiers: tuple[tuple[str, str], ...] = ()
    attributes: tuple[tuple[str, str], ...] = ()

    def path(self) -> str:
        """The canonical Digital Link path, ``/01/09506000134352/10/L%2F1``."""
        parts = [self.primary, _encode(self.value)]
        for code, v in self.qualifiers:
            parts += [code, _encode(v)]
        return "/" + "/".join(parts)

    def query(self) -> str:
        return "&".join(f"{code}={_encode(v)}" for code, v in self.attributes)

    def uri(self, root: str = "https://id.gs1.org") -> str:
        q = self.query()
        return root.rstrip("/") + self.path() + (f"?{q}" if q else "")

    def element_string(self) -> str:
        """Human-readable form ``(01)09506000134352(10)L1(17)290101``."""
        return "".join(
            f"({c}){v}" for c, v in ((self.primary, self.value), *self.qualifiers, *self.attributes)
        )

    def ai_values(self) -> dict[str, str]:
        return {self.primary: self.value, **dict(self.qualifiers)}

    def ancestors(self) -> list[DigitalLink]:
        """Itself, then each less specific key (qualifiers dropped from the right): /01/x/10/l → /01/x."""
        return [
            DigitalLink(self.primary, self.value, self.qualifiers[:n])
            for n in range(len(self.qualifiers), -1, -1)
        ]

    def company_digits(self) -> str:
        """The digits where the GS1 company prefix starts, as many as it could span."""
        sl = _COMPANY_SLICE.get(self.primary)
        if sl is not None:
            return self.value[sl[0] : sl[1]]
        m = re.match(r"\d{0,12}", self.value)  # GINC, GIAI, CPID: GCP then a free-form reference
        return m.group(0) if m else ""


def make(
    primary: str,
    value: str,
    qualifiers: Iterable[tuple[str, str]] = (),
    attributes: Iterable[tuple[str, str]] = (),
) -> DigitalLink:
    """Validate every element and the qualifier order; the one constructor parsers use."""
    if primary not in AIS or AIS[primary].role != "primary":
        raise _err(f"AI {primary} is not a primary key (supported: {', '.join(PRIMARY_KEYS)})")
    value = validate_ai(primary, value)
    allowed = QUALIFIERS.get(primary, ())
    quals: list[tuple[str, str]] = []
    last = -1
    for code, v in qualifiers:
        if code not in allowed:
            if not allowed:
                raise _err(f"AI {primary} ({AIS[primary].name}) takes no key qualifiers, got AI {code}")
            raise _err(
                f"AI {code} is not a key qualifier of AI {primary} (allowed, in order: {', '.join(allowed)})"
            )
        pos = allowed.index(code)
        if pos == last:
            raise _err(f"AI {code} given twice")
        if pos < last:
            raise _err(f"AI {code} out of order: qualifiers of AI {primary} go {' then '.join(allowed)}")
        last = pos
        quals.append((code, validate_ai(code, v)))
    attrs: list[tuple[str, str]] = []
    for code, v in attributes:
        ai = AIS.get(code)
        if ai is not None and ai.role != "attribute":
            raise _err(f"AI {code} ({ai.name}) belongs in the path, not among the data attributes")
        attrs.append((code, validate_ai(code, v) if ai is not None else v))
    return DigitalLink(primary, value, tuple(quals), tuple(attrs))


def _is_ai_code(s: str) -> bool:
    return 2 <= len(s) <= 4 and s.isdigit()


def parse_path(path: str, query: str = "") -> DigitalLink:
    """A Digital Link path (anything before the primary key AI is a resolver's own path) and query."""
    segs = path.split("/")
    if segs and segs[0] == "":
        segs = segs[1:]
    if len(segs) > 1 and segs[-1] == "":
        segs = segs[:-1]  # tolerate one trailing slash
    if len(segs) > 64:
        raise _err("too many path segments for a Digital Link")
    start = next(
        (i for i, s in enumerate(segs) if s in AIS and AIS[s].role == "primary" and (len(segs) - i) % 2 == 0),
        None,
    )
    if start is None:
        raise _err(
            f"no GS1 primary key in {path!r} "
            f"(expected /{{AI}}/{{value}}…, AI one of {', '.join(PRIMARY_KEYS)})"
        )
    elems = [(segs[i], _decode_segment(segs[i + 1])) for i in range(start, len(segs), 2)]
    for code, _ in elems[1:]:
        if not _is_ai_code(code):
            raise _err(f"path segment {code!r} is not an AI")
    attrs: list[tuple[str, str]] = []
    if query:
        pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=256)
        for k, v in pairs:
            if _is_ai_code(k):
                attrs.append((k, v))
        if len(attrs) > MAX_QUERY_ATTRIBUTES:
            raise _err(f"more than {MAX_QUERY_ATTRIBUTES} data attributes")
    (primary, value), *quals = elems
    return make(primary, value, quals, attrs)


def parse_uri(uri: str) -> DigitalLink:
    """``https://host/…/01/…?17=…`` or a bare path ``/01/…``."""
    parts = urlsplit(uri)
    return parse_path(parts.path, parts.query)


_ELEMENT = re.compile(r"\((\d{2,4})\)")


def parse_element_string(text: str) -> DigitalLink:
    """``(01)09506000134352(10)LOT(17)290101``: primary key first, then qualifiers and attributes
    in any order."""
    text = text.strip()
    pieces = _ELEMENT.split(text)
    if not text.startswith("(") or len(pieces) < 3 or pieces[0] != "":
        raise _err(f"{text!r} is not a GS1 element string like (01)09506000134352")
    elems = [(pieces[i], pieces[i + 1]) for i in range(1, len(pieces), 2)]
    (primary, value), *rest = elems
    quals = [(c, v) for c, v in rest if c in AIS and AIS[c].role == "qualifier"]
    # An element string has no canonical order (a barcode may carry (21) before (10)).
    order = QUALIFIERS.get(primary, ())
    quals.sort(key=lambda cv: order.index(cv[0]) if cv[0] in order else -1)
    attrs = [(c, v) for c, v in rest if not (c in AIS and AIS[c].role == "qualifier")]
    return make(primary, value, quals, attrs)


def parse(text: str) -> DigitalLink:
    """Any written form: URI, path, element string, or a bare 8/12/13/14-digit GTIN."""
    t = text.strip()
    if t.startswith("("):
        return parse_element_string(t)
    if t.startswith("/") or "://" in t:
        return parse_uri(t)
    if t.isdigit() and len(t) in (8, 12, 13, 14):
        return make("01", t)
    raise _err(f"{text!r} is not a GS1 Digital Link, element string or GTIN")


# --------------------------------------------------------------------------- handles


def candidate_prefixes(dl: DigitalLink, root: str = DEFAULT_ROOT) -> tuple[str, ...]:
    """Prefixes that could hold ``dl``, most specific first, ending with ``root`` itself."""
    digits = dl.company_digits()[:MAX_COMPANY_PREFIX]
    return (*(f"{root}.{digits[:n]}" for n in range(len(digits), 0, -1)), root)


def to_handle(dl: DigitalLink, prefix: str) -> str:
    """The handle of ``dl`` under ``prefix`` (data attributes are not part of the key)."""
    return f"{prefix}/{dl.path()[1:]}"


def from_handle(handle: str) -> DigitalLink:
    """Back from a handle: its suffix is the canonical Digital Link path."""
    return parse_path("/" + handle_suffix(handle, "gs1"))


def handle_for(dl: DigitalLink, holds: Holds, root: str = DEFAULT_ROOT) -> str | None:
    """The handle of ``dl`` under the longest prefix ``holds`` accepts, or None."""
    prefix = longest_held(candidate_prefixes(dl, root), holds)
    return None if prefix is None else to_handle(dl, prefix)
