"""GS1 keys: Digital Link URIs, element strings, raw scanner data, and their handles.

Every rule about an AI — format, length, check digits, dates, code lists, which AIs are
Digital Link keys and qualifiers, which AIs require or exclude others — comes from idr's
AI rule table (``gs1_syntax``: the rules of GS1's Barcode Syntax Dictionary, restated).
This module knows the written forms:

* Digital Link URIs (``https://host/…/01/{gtin}/10/{lot}?17=…``; http and https only),
  uncompressed, partially or fully compressed (``gs1_compress``);
* element strings in human-readable form (``(01)09506000134352(10)LOT``);
* raw scanner data: AIs without brackets, variable-length values ended by GS (0x1D) or
  FNC1 (written ``^`` as in GS1's syntax engine), optionally after an ISO/IEC 15424
  symbology identifier (``]d2``, ``]C1``, ``]Q3``, ``]e0``…; ``]E0``/``]E4``/``]I1`` carry a
  bare GTIN);
* a bare GTIN-8/12/13/14.

A GTIN-8/12/13 is padded to 14 digits only where GS1 allows it: in a Digital Link path
(and as a bare GTIN). In an element string AI 01 is exactly 14 digits.

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

from biip import ParseError as _BiipParseError
from biip.symbology import GS1Symbology, SymbologyIdentifier

from idr.schemes import gs1_syntax as syntax
from idr.schemes.common import Holds, handle_suffix, longest_held
from idr.schemes.gs1_syntax import CSET39, CSET82, Gs1Error, check_digit

__all__ = ["CSET39", "CSET82", "DigitalLink", "Gs1Error", "check_digit"]

DEFAULT_ROOT = "GS1"
MAX_QUERY_ATTRIBUTES = 32  # a Digital Link carries a handful; bound what a request can make us parse
MAX_ELEMENTS = 64  # elements in one element string or scan
GS = "\x1d"  # ASCII group separator: how scanners transmit FNC1 used as a separator
SEPARATORS = frozenset({GS, "^"})  # "^" is FNC1 in GS1's syntax-engine notation; never data (set 82)
_BASE64URL = re.compile(r"^[A-Za-z0-9_-]+$")


def _err(message: str, ai: str = "", rule: str = "") -> Gs1Error:
    return Gs1Error(message, ai=ai, rule=rule)


PRIMARY_KEYS: tuple[str, ...] = syntax.primary_keys()

# Key qualifiers per primary key: the sequences the Digital Link path allows, each in order.
QUALIFIERS: Mapping[str, tuple[tuple[str, ...], ...]] = {
    ai: tuple(seq for seq in syntax.rules()[ai].dl_qualifiers or () if seq) for ai in PRIMARY_KEYS
}

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
    "415": (0, 12),
    "417": (0, 12),
    "8017": (0, 17),
    "8018": (0, 17),
}
MAX_COMPANY_PREFIX = 12


def ai_title(code: str) -> str:
    """GS1's data title of an AI (``GTIN``, ``BATCH/LOT``…)."""
    return syntax.rule(code).title


def with_check_digit(body: str) -> str:
    return body + str(check_digit(body))


def pad_gtin(value: str) -> str:
    """GTIN-8/12/13 → GTIN-14 with leading zeros (the check digit stays valid: weights run from the right)."""
    if value.isdigit() and len(value) in (8, 12, 13):
        return value.zfill(14)
    return value


def validate_ai(code: str, value: str) -> str:
    """Check ``value`` against AI ``code``'s rules (format, length, linters); returns it."""
    syntax.check_value(code, value)
    return value


def _decode_segment(raw: str) -> str:
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError as e:
        raise _err(f"path segment {raw!r} is not UTF-8 after percent-decoding", rule="digital-link") from e


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

    def elements(self) -> list[tuple[str, str]]:
        """Every (AI, value): the key, its qualifiers, then the data attributes."""
        return [(self.primary, self.value), *self.qualifiers, *self.attributes]

    def element_string(self) -> str:
        """Human-readable form ``(01)09506000134352(10)L1(17)290101``."""
        return "".join(f"({c}){v}" for c, v in self.elements())

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
        m = re.match(r"\d{0,12}", self.value)  # GINC, GIAI, CPID, GMN: GCP then a free-form reference
        return m.group(0) if m else ""


def _qualifier_order(primary: str, codes: Iterable[str]) -> tuple[str, ...]:
    """The allowed sequence of ``primary``'s qualifiers that holds the most of ``codes``."""
    seqs = QUALIFIERS.get(primary, ())
    present = set(codes)
    return max(seqs, key=lambda seq: len(present & set(seq)), default=())


def make(
    primary: str,
    value: str,
    qualifiers: Iterable[tuple[str, str]] = (),
    attributes: Iterable[tuple[str, str]] = (),
) -> DigitalLink:
    """Validate every element, the qualifier order and the AI pairs; the one constructor."""
    if primary not in PRIMARY_KEYS:
        syntax.rule(primary)  # an unassigned AI says so
        raise _err(
            f"AI {primary} is not a primary key (supported: {', '.join(PRIMARY_KEYS)})",
            ai=primary,
            rule="digital-link",
        )
    quals = list(qualifiers)
    seqs = QUALIFIERS.get(primary, ())
    order = _qualifier_order(primary, (c for c, _ in quals))
    allowed_text = " | ".join(", ".join(seq) for seq in seqs)
    last = -1
    for code, _ in quals:
        if code not in order:
            if not seqs:
                raise _err(
                    f"AI {primary} ({ai_title(primary)}) takes no key qualifiers, got AI {code}",
                    ai=code,
                    rule="digital-link",
                )
            raise _err(
                f"AI {code} is not a key qualifier of AI {primary} (allowed, in order: {allowed_text})",
                ai=code,
                rule="digital-link",
            )
        pos = order.index(code)
        if pos == last:
            raise _err(f"AI {code} given twice", ai=code, rule="duplicate")
        if pos < last:
            raise _err(
                f"AI {code} out of order: qualifiers of AI {primary} go {' then '.join(order)}",
                ai=code,
                rule="digital-link",
            )
        last = pos
    attrs = list(attributes)
    elements = syntax.check_message([(primary, value), *quals, *attrs])
    n_quals = len(dict.fromkeys(c for c, _ in quals))
    return DigitalLink(primary, value, tuple(elements[1 : 1 + n_quals]), tuple(elements[1 + n_quals :]))


def from_elements(elements: Iterable[tuple[str, str]]) -> DigitalLink:
    """A key from an unordered message (element string, scan, compressed link): the first
    primary key AI is the key, its qualifiers are put in the one allowed order, every other
    AI is a data attribute."""
    elems = list(elements)
    if len(elems) > MAX_ELEMENTS:
        raise _err(f"more than {MAX_ELEMENTS} elements", rule="format")
    for code, _ in elems:
        syntax.rule(code)
    primary = next((c for c, _ in elems if c in PRIMARY_KEYS), None)
    if primary is None:
        listed = "".join(f"({c})" for c, _ in elems)
        raise _err(
            f"no GS1 primary key among {listed} (expected one of {', '.join(PRIMARY_KEYS)})",
            rule="digital-link",
        )
    key_at = next(i for i, (c, _) in enumerate(elems) if c == primary)
    rest = elems[:key_at] + elems[key_at + 1 :]
    order = _qualifier_order(primary, (c for c, _ in rest))
    quals: dict[str, str] = {}
    attrs: list[tuple[str, str]] = []
    for code, v in rest:
        if code in order and quals.get(code, v) == v:
            quals[code] = v
        else:
            attrs.append((code, v))
    ordered = sorted(quals.items(), key=lambda cv: order.index(cv[0]))
    return make(primary, elems[key_at][1], ordered, attrs)


def _is_numeric_key(s: str) -> bool:
    return s.isdigit() and len(s) <= 8


def parse_path(path: str, query: str = "") -> DigitalLink:
    """A Digital Link path (anything before the primary key AI is a resolver's own path) and query."""
    segs = path.split("/")
    if segs and segs[0] == "":
        segs = segs[1:]
    if len(segs) > 1 and segs[-1] == "":
        segs = segs[:-1]  # tolerate one trailing slash
    if len(segs) > 64:
        raise _err("too many path segments for a Digital Link", rule="digital-link")
    start = next(
        (i for i, s in enumerate(segs) if s in PRIMARY_KEYS and (len(segs) - i) % 2 == 0),
        None,
    )
    if start is None:
        return _with_query(_compressed_path(path, segs), query)
    elems = [(segs[i], _decode_segment(segs[i + 1])) for i in range(start, len(segs), 2)]
    for code, _ in elems[1:]:
        if not _is_numeric_key(code):
            raise _err(f"path segment {code!r} is not an AI", rule="digital-link")
        syntax.rule(code)
    (primary, value), *quals = elems
    if primary == "01":
        value = pad_gtin(value)  # GS1 Digital Link: a GTIN-8/12/13 in the path is read as GTIN-14
    return _with_query(make(primary, value, quals), query)


def _compressed_path(path: str, segs: list[str]) -> DigitalLink:
    """A compressed Digital Link (GS1 Digital Link 1.1 compression): the whole key in the
    last path segment, or ``/{primary}/{value}/{compressed qualifiers and attributes}``."""
    from idr.schemes.gs1_compress import decompress

    last = segs[-1] if segs else ""
    problem = ""
    if len(last) >= 4 and _BASE64URL.match(last):
        if len(segs) >= 3 and segs[-3] in PRIMARY_KEYS:  # partially compressed
            primary, value = segs[-3], _decode_segment(segs[-2])
            if primary == "01":
                value = pad_gtin(value)
            return from_elements([(primary, value), *decompress(last)])
        try:
            return from_elements(decompress(last))
        except Gs1Error as e:
            if e.rule != "compression":
                raise
            problem = f"; {e.message}"
    raise _err(
        f"no GS1 primary key in {path!r} "
        f"(expected /{{AI}}/{{value}}…, AI one of {', '.join(PRIMARY_KEYS)}){problem}",
        rule="digital-link",
    )


def _query_attributes(dl: DigitalLink, query: str) -> list[tuple[str, str]]:
    """The data attributes of a query string: all-numeric keys are AIs and must be GS1 data
    attributes, each at most once; other keys (``linkType``, ``context``…) are not data."""
    if not query:
        return []
    try:
        pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=256)
    except ValueError as e:
        raise _err(f"query string: {e}", rule="digital-link") from e
    in_path = {c for c, _ in dl.elements()}
    own_qualifiers = {q for seq in QUALIFIERS.get(dl.primary, ()) for q in seq}
    seen: set[str] = set()
    attrs: list[tuple[str, str]] = []
    for k, v in pairs:
        if not k.isdigit():
            continue
        r = syntax.rule(k)
        if k in seen or k in in_path:
            raise _err(f"{r.label()} given twice in the Digital Link", ai=k, rule="duplicate")
        seen.add(k)
        if k in own_qualifiers or k == dl.primary:
            raise _err(
                f"{r.label()} belongs in the path, not among the data attributes", ai=k, rule="digital-link"
            )
        if not r.dl_attribute:
            raise _err(f"{r.label()} is not a Digital Link data attribute", ai=k, rule="digital-link")
        attrs.append((k, v))
        if len(attrs) > MAX_QUERY_ATTRIBUTES:
            raise _err(f"more than {MAX_QUERY_ATTRIBUTES} data attributes", rule="digital-link")
    return attrs


def _with_query(dl: DigitalLink, query: str) -> DigitalLink:
    attrs = _query_attributes(dl, query)
    if not attrs:
        return dl
    return make(dl.primary, dl.value, dl.qualifiers, [*dl.attributes, *attrs])


_URI_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


def parse_uri(uri: str) -> DigitalLink:
    """``https://host/…/01/…?17=…`` (http and https only) or a bare path ``/01/…``."""
    m = _URI_SCHEME.match(uri)
    if m is not None and m.group(1).lower() not in ("http", "https"):
        raise _err(f"{m.group(1)}: URIs are not GS1 Digital Links (http and https only)", rule="digital-link")
    parts = urlsplit(uri)
    return parse_path(parts.path, parts.query)


_ELEMENT = re.compile(r"\((\d{2,4})\)")


def parse_element_string(text: str) -> DigitalLink:
    """``(01)09506000134352(10)LOT(17)290101``: AIs in any order, each value exactly as its
    AI's format says (no padding: AI 01 is 14 digits here)."""
    text = text.strip()
    pieces = _ELEMENT.split(text)
    if not text.startswith("(") or len(pieces) < 3 or pieces[0] != "":
        raise _err(f"{text!r} is not a GS1 element string like (01)09506000134352", rule="format")
    return from_elements((pieces[i], pieces[i + 1]) for i in range(1, len(pieces), 2))


def split_raw(data: str) -> list[tuple[str, str]]:
    """Unbracketed AI data as a scanner sends it: ``0109506000134352`` + ``10LOT`` + GS + ``17…``.

    An AI whose value has one fixed length takes exactly that many characters (GS1's
    predefined-length AIs never need a separator; a missing one after another fixed-length
    AI is tolerated); a variable-length value runs to the next separator (GS, or FNC1
    written ``^``) or the end. Separators are accepted between any two elements.
    """
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(data):
        if data[pos] in SEPARATORS:
            pos += 1
            continue
        if len(out) >= MAX_ELEMENTS:
            raise _err(f"more than {MAX_ELEMENTS} elements", rule="format")
        r = syntax.ai_at(data, pos)
        if r is None:
            head = data[pos : pos + 4]
            raise _err(
                f"AI {head[:2]}…: no GS1 Application Identifier starts {head!r} (position {pos})",
                ai=data[pos : pos + 2],
                rule="unknown-ai",
            )
        start = pos + len(r.ai)
        if r.min_length == r.max_length:
            end = start + r.max_length
        else:
            end = start
            while end < len(data) and data[end] not in SEPARATORS:
                end += 1
        out.append((r.ai, data[start:end]))
        pos = end
    if not out:
        raise _err("no element strings in the scanned data", rule="format")
    return out


def parse_raw(data: str) -> DigitalLink:
    """Raw (unbracketed) AI data, GS/FNC1-separated: see ``split_raw``."""
    return from_elements(split_raw(data))


_GTIN_SYMBOLOGIES = {
    GS1Symbology.EAN_13: 13,
    GS1Symbology.EAN_13_WITH_ADD_ON: 13,  # the add-on after the 13 digits is not part of the GTIN
    GS1Symbology.EAN_8: 8,
    GS1Symbology.ITF_14: 14,
}


def parse_scan(text: str) -> DigitalLink:
    """What a barcode scanner transmits: an ISO/IEC 15424 symbology identifier (GenSpecs
    Figure 5.1.2-2) then the data. GS1 symbologies with AI data (GS1-128 ``]C1``, GS1
    DataBar ``]e0``, GS1 DataMatrix ``]d2``, GS1 QR ``]Q3``, GS1 DotCode ``]J1``) carry raw
    element strings; EAN/UPC (``]E0``, ``]E4``…) and ITF-14 (``]I1``) a GTIN; anything else
    (``]Q1``, ``]d1``: plain QR/DataMatrix) a Digital Link URI or text."""
    if len(text) < 3:
        raise _err(f"{text!r} is not a symbology identifier", rule="symbology")
    if text.startswith("]J1"):  # GS1 DotCode: biip knows its GS1 identifier, not the ISO code J
        return parse_raw(text[3:])
    try:
        sym = SymbologyIdentifier.extract(text)
    except (_BiipParseError, ValueError, IndexError) as e:
        raise _err(f"{text[:4]!r} is not an ISO/IEC 15424 symbology identifier", rule="symbology") from e
    data = text[len(sym) :]
    if data.startswith("]"):
        raise _err("two symbology identifiers", rule="symbology")
    if re.match(r"^https?://", data, re.I):
        return parse_uri(data)
    kind = sym.gs1_symbology
    if kind in GS1Symbology.with_gs1_messages():
        return parse_raw(data)
    if kind in _GTIN_SYMBOLOGIES:
        n = _GTIN_SYMBOLOGIES[kind]
        gtin = data[:n]
        if len(gtin) != n or not gtin.isdigit():
            raise _err(f"{sym.value} carries {n} digits, got {data!r}", ai="01", rule="symbology")
        return make("01", pad_gtin(gtin))
    return parse(data)


def looks_raw(text: str) -> bool:
    """Whether ``text`` reads as raw AI data: FNC1/GS markers, or a primary key AI first."""
    if text[:1] in SEPARATORS or GS in text:
        return True
    r = syntax.ai_at(text)
    return r is not None and r.ai in PRIMARY_KEYS and len(text) > len(r.ai)


def parse(text: str) -> DigitalLink:
    """Any written form: URI, path, element string, scan, raw AI data, or a bare GTIN."""
    t = text.strip()
    if t.startswith("]"):
        return parse_scan(t)
    if t.startswith("("):
        return parse_element_string(t)
    if t.startswith("/") or _URI_SCHEME.match(t):
        return parse_uri(t)
    if t.isdigit() and len(t) in (8, 12, 13, 14) and check_digit(t[:-1]) == int(t[-1]):
        return make("01", pad_gtin(t))
    if t and looks_raw(t):
        return parse_raw(t)
    raise _err(f"{text!r} is not a GS1 Digital Link, element string, scan or GTIN", rule="format")


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
