"""GS1 Application Identifier rules and the checks they name.

The facts are the AI rules of GS1's Barcode Syntax Dictionary, release 2026-01-27, restated
as idr's own table (``data/gs1_ai_rules.json``, described in ``data/README.md``): for every
AI its components (character set N/X/Y/Z, length, optional or not), the content checks of
each component by idr's names (check digits, dates, code lists…), whether it has a
predefined length (no FNC1 needed after it), its Digital Link role (primary key with its
key qualifier sequences, data attribute) and the AIs it requires or excludes. To update,
regenerate the table from a newer release and run ``tests/schemes``.

The checks are implemented here from the rules in the GS1 General Specifications
(GenSpecs) they stand for. Every refusal is a :class:`Gs1Error` naming the AI and the rule
that failed; a content check is named as GS1's syntax tools name it (``csum``, ``yymmd0``…),
so a refusal reads the same as theirs (``CHECK_OF_LINTER`` maps those names to idr's).
"""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import pycountry

from idr.schemes.common import SchemeError

RULES_FILE = "data/gs1_ai_rules.json"

# GenSpecs §7.11: the AI encodable character sets (Figure 7.11-1 set 82, 7.11-2 set 39,
# 7.11-3 set 64 — base64url, used by the digital signature AI 8030).
CSET82 = frozenset("!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz")
CSET39 = frozenset("#-/0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
CSET64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")
DIGITS = frozenset("0123456789")
CHARSETS: Mapping[str, tuple[frozenset[str], str]] = {
    "N": (DIGITS, "digits"),
    "X": (CSET82, "GS1 character set 82"),
    "Y": (CSET39, "GS1 character set 39"),
    "Z": (CSET64, "GS1 character set 64"),
}


class Gs1Error(SchemeError):
    """A GS1 rule refused the identifier: ``ai`` is the AI concerned (or ""), ``rule`` names
    the rule (``format``, ``length``, ``charset``, a content check by its GS1 linter name such
    as ``csum`` or ``yymmdd``, ``unknown-ai``, ``duplicate``, ``requires``, ``excludes``,
    ``digital-link``, …)."""

    def __init__(self, message: str, *, ai: str = "", rule: str = "") -> None:
        super().__init__("gs1", message)
        self.ai = ai
        self.rule = rule


# --------------------------------------------------------------------------- rule table


@dataclass(frozen=True, slots=True)
class Component:
    """One component of an AI's data field, e.g. six digits checked as a date."""

    charset: str  # N, X, Y or Z
    min: int
    max: int
    optional: bool
    checks: tuple[str, ...]  # idr check names, keys of CHECKS

    def text(self) -> str:
        core = f"{self.charset}{self.max}" if self.min == self.max else f"{self.charset}..{self.max}"
        return f"[{core}]" if self.optional else core


@dataclass(frozen=True, slots=True)
class AiRule:
    """Everything idr knows about one AI."""

    ai: str
    title: str
    components: tuple[Component, ...]
    predefined_length: bool  # no FNC1 separator follows it
    dl_attribute: bool  # may be a Digital Link data attribute (query string)
    requires: tuple[tuple[tuple[str, ...], ...], ...]  # each: alternatives, each a group of AI patterns
    excludes: tuple[str, ...]  # AI patterns that may not appear with it
    dl_qualifiers: tuple[tuple[str, ...], ...] | None  # None: not a primary key; else its sequences

    @property
    def max_length(self) -> int:
        return sum(c.max for c in self.components)

    @property
    def min_length(self) -> int:
        return sum(c.min for c in self.components if not c.optional)

    def format_text(self) -> str:
        return " ".join(c.text() for c in self.components)

    def label(self) -> str:
        return f"AI {self.ai} ({self.title})"


def _component(raw: Mapping[str, Any]) -> Component:
    return Component(
        str(raw["charset"]),
        int(raw["min"]),
        int(raw["max"]),
        bool(raw.get("optional", False)),
        tuple(str(c) for c in raw.get("checks", ())),
    )


def _ai_rule(ai: str, raw: Mapping[str, Any]) -> AiRule:
    qualifiers = raw.get("dl_key_qualifiers")
    return AiRule(
        ai,
        str(raw["title"]),
        tuple(_component(c) for c in raw["components"]),
        bool(raw.get("predefined_length", False)),
        bool(raw.get("dl_attribute", False)),
        tuple(tuple(tuple(str(p) for p in group) for group in req) for req in raw.get("requires", ())),
        tuple(str(p) for p in raw.get("excludes", ())),
        None if qualifiers is None else tuple(tuple(str(q) for q in seq) for seq in qualifiers),
    )


@cache
def _table() -> Mapping[str, Any]:
    text = resources.files("idr.schemes").joinpath(RULES_FILE).read_text("utf-8")
    table: Mapping[str, Any] = json.loads(text)
    return table


def release() -> str:
    """The Syntax Dictionary release the table restates."""
    return str(_table()["release"])


@cache
def rules() -> Mapping[str, AiRule]:
    """Every AI GS1 has assigned, by AI, in the table's order."""
    return {ai: _ai_rule(ai, raw) for ai, raw in _table()["ais"].items()}


def rule(ai: str) -> AiRule:
    """The rule of ``ai``; a Gs1Error if GS1 has not assigned it."""
    r = rules().get(ai)
    if r is None:
        raise Gs1Error(f"AI {ai} is not a GS1 Application Identifier", ai=ai, rule="unknown-ai")
    return r


def primary_keys() -> tuple[str, ...]:
    """AIs that may start a Digital Link path, in table order."""
    return tuple(a for a, r in rules().items() if r.dl_qualifiers is not None)


def key_qualifiers() -> frozenset[str]:
    """Every AI that is a key qualifier of some primary key."""
    return frozenset(q for r in rules().values() if r.dl_qualifiers for seq in r.dl_qualifiers for q in seq)


def ai_at(data: str, pos: int = 0) -> AiRule | None:
    """The AI that starts ``data`` at ``pos`` (AIs are prefix-free, two to four digits)."""
    table = rules()
    for n in (2, 3, 4):
        r = table.get(data[pos : pos + n])
        if r is not None:
            return r
    return None


# --------------------------------------------------------------------------- checks


def check_digit(body: str) -> int:
    """GenSpecs §7.9.1 mod-10: weights 3,1,3,… from the rightmost digit of ``body``."""
    total = sum(int(c) * (3 if i % 2 == 0 else 1) for i, c in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def _csum(v: str) -> str | None:
    if not v:
        return "no check digit"
    want = check_digit(v[:-1])
    return None if int(v[-1]) == want else f"check digit of {v} is {v[-1]}, expected {want}"


_CSET82_ORDER = sorted(CSET82)
_CSET32 = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"


def _primes(n: int) -> list[int]:
    out: list[int] = []
    k = 2
    while len(out) < n:
        if all(k % p for p in out if p * p <= k):
            out.append(k)
        k += 1
    return out


def check_pair(body: str) -> str:
    """GenSpecs §7.9.5 check character pair of an alphanumeric key (GMN, AI 8013): each
    character's set-82 index weighted by the primes 2, 3, 5, … from the right, summed
    mod 1021, written as two characters of set 32 (quotient and remainder by 32)."""
    weights = _primes(len(body))
    total = sum(_CSET82_ORDER.index(c) * w for c, w in zip(reversed(body), weights, strict=True)) % 1021
    return _CSET32[total // 32] + _CSET32[total % 32]


def _csumalpha(v: str) -> str | None:
    if len(v) < 3:
        return "too short to carry a check character pair"
    if any(c not in CSET82 for c in v[:-2]) or any(c not in _CSET32 for c in v[-2:]):
        return "check character pair must be two characters of GS1 character set 32"
    want = check_pair(v[:-2])
    return None if v[-2:] == want else f"check characters of {v} are {v[-2:]}, expected {want}"


_GCP_MIN = 4  # the shortest GS1 Company Prefix (a GS1-8 prefix normalised) has four digits


def _gcppos(offset: int) -> Callable[[str], str | None]:
    def lint(v: str) -> str | None:
        head = v[offset : offset + _GCP_MIN]
        if len(head) < _GCP_MIN or not head.isdigit():
            where = "" if offset == 0 else " after its first digit"
            return f"{v!r} does not start with a GS1 Company Prefix{where} (at least {_GCP_MIN} digits)"
        return None

    return lint


def _date(v: str, year_digits: int, zero_day: bool) -> str | None:
    fmt = "YYMMDD" if year_digits == 2 else "YYYYMMDD"
    if len(v) != year_digits + 4 or not v.isdigit():
        return f"{v!r} is not a date ({fmt})"
    year, month, day = int(v[:year_digits]), int(v[year_digits : year_digits + 2]), int(v[-2:])
    if not 1 <= month <= 12:
        return f"{v} is not a date ({fmt}): month {month:02d}"
    if zero_day and day == 0:
        return None  # YYMM00: day not given
    # GenSpecs §7.12: a two-digit year is within 49 years back and 50 ahead of today; the only
    # century year in that window (2000) is a leap year, so YY % 4 decides February.
    leap = calendar.isleap(year) if year_digits == 4 else year % 4 == 0
    last = 29 if month == 2 and leap else calendar.monthrange(2001, month)[1]
    if not 1 <= day <= last:
        return f"{v} is not a date ({fmt}): day {day:02d} of month {month:02d}"
    return None


def _range(name: str, lo: int, hi: int) -> Callable[[str], str | None]:
    def lint(v: str) -> str | None:
        if not v.isdigit() or not lo <= int(v) <= hi:
            return f"{v!r} is not {name} ({lo:02d}–{hi:02d})"
        return None

    return lint


def _hhmi(v: str) -> str | None:
    return _range("an hour", 0, 23)(v[:2]) or _range("a minute", 0, 59)(v[2:])


def _one_of(name: str, allowed: Iterable[str]) -> Callable[[str], str | None]:
    values = frozenset(allowed)

    def lint(v: str) -> str | None:
        return None if v in values else f"{v!r} is not {name}"

    return lint


_COUNTRIES_NUMERIC = frozenset(c.numeric for c in pycountry.countries)
_COUNTRIES_ALPHA2 = frozenset(c.alpha_2 for c in pycountry.countries)
_CURRENCIES_NUMERIC = frozenset(c.numeric for c in pycountry.currencies)

# UN/ECE Recommendation 21 package type codes, as GS1 lists them for AI 7041.
_PACKAGE_TYPE_CODES = """
    1A 1B 1D 1F 1G 1W 200 201 202 203 204 205 206 210 211 212 2C 3A 3H 43 44 4A 4B 4C 4D 4F
    4G 4H 5H 5L 5M 6H 6P 7A 7B 8 8A 8B 8C 9 AA AB AC AD AF AG AH AI AJ AL AM AP APE AT AV B4
    BB BC BD BE BF BG BGE BH BI BJ BK BL BM BME BN BO BP BQ BR BRI BS BT BU BV BW BX BY BZ
    CA CB CBL CC CCE CD CE CF CG CH CI CJ CK CL CM CN CO CP CQ CR CS CT CU CV CW CX CY CZ DA
    DB DC DG DH DI DJ DK DL DM DN DP DPE DR DS DT DU DV DW DX DY E1 E2 E3 EC ED EE EF EG EH
    EI EN FB FC FD FE FI FL FO FOB FP FPE FR FT FW FX GB GI GL GR GU GY GZ HA HB HC HG HN HR
    IA IB IC ID IE IF IG IH IK IL IN IZ JB JC JG JR JT JY KG KI LAB LE LG LT LU LV LZ MA MB
    MC ME MPE MR MS MT MW MX NA NE NF NG NS NT NU NV OA OB OC OD OE OF OK OPE OT OU P2 PA
    PAE PB PC PD PE PF PG PH PI PJ PK PL PLP PN PO POP PP PPE PR PT PU PUE PV PX PY PZ QA QB
    QC QD QF QG QH QJ QK QL QM QN QP QQ QR QS RB1 RB2 RB3 RCB RD RG RJ RK RL RO RT RZ S1 SA
    SB SC SD SE SEC SH SI SK SL SM SO SP SS ST STL SU SV SW SX SY SZ T1 TB TC TD TE TEV TG
    THE TI TK TL TN TO TR TRE TS TT TTE TU TV TW TWE TY TZ UC UN UUE VA VG VI VK VL VN VO VP
    VQ VR VS VY WA WB WC WD WF WG WH WJ WK WL WM WN WP WQ WR WRP WS WT WU WV WW WX WY WZ X11
    X12 X15 X16 X17 X18 X19 X20 X3 XA XB XC XD XF XG XH XJ XK YA YB YC YD YF YG YH YJ YK YL
    YM YN YP YQ YR YS YT YV YW YX YY YZ ZA ZB ZC ZD ZF ZG ZH ZJ ZK ZL ZM ZN ZP ZQ ZR ZS ZT
    ZU ZV ZW ZX ZY ZZ"""
_PACKAGE_TYPES = frozenset(_PACKAGE_TYPE_CODES.split())
# GenSpecs "AIDC media type values" (AI 7241): 01–10 assigned by ICCBBA, 80–99 local use.
_MEDIA_TYPES = frozenset(f"{n:02d}" for n in (*range(1, 11), *range(80, 100)))
_IMPORTER_INDEX = frozenset("-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz")


def _iban(v: str) -> str | None:
    """ISO 13616: country code, two check digits, up to 30 letters/digits; mod 97 == 1."""
    if len(v) < 5:
        return f"{v!r} is too short to be an IBAN"
    if len(v) > 34:
        return f"{v!r} is too long to be an IBAN"
    if v[:2] not in _COUNTRIES_ALPHA2:
        return f"{v[:2]!r} is not an ISO 3166 country code (IBAN)"
    if not v[2:4].isdigit() or any(c not in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ" for c in v[4:]):
        return f"{v!r} is not an IBAN (letters and digits only)"
    number = int("".join(str(int(c, 36)) for c in v[4:] + v[:4]))
    return None if number % 97 == 1 else f"IBAN check digits of {v} are wrong"


def _pcenc(v: str) -> str | None:
    for m in re.finditer("%", v):
        seq = v[m.start() + 1 : m.start() + 3]
        if len(seq) != 2 or any(c not in "0123456789ABCDEFabcdef" for c in seq):
            return f"{v!r} has an invalid percent-encoding at position {m.start() + 1}"
    return None


def _pieceoftotal(v: str) -> str | None:
    if not v or len(v) % 2 or not v.isdigit():
        return f"{v!r} is not a piece number and total of equal width"
    piece, total = int(v[: len(v) // 2]), int(v[len(v) // 2 :])
    if piece == 0 or total == 0:
        return f"{v!r}: piece number and total must not be zero"
    return None if piece <= total else f"{v!r}: piece {piece} exceeds the total {total}"


def _posinseqslash(v: str) -> str | None:
    pos, slash, end = v.partition("/")
    if not slash or not pos.isdigit() or not end.isdigit():
        return f"{v!r} is not a position in a sequence (<pos>/<end>)"
    if pos[0] == "0" or end[0] == "0":
        return f"{v!r}: position and end must not start with zero"
    return None if int(pos) <= int(end) else f"{v!r}: position exceeds the end"


def _unchecked(_v: str) -> str | None:
    return None


CHECKS: Mapping[str, Callable[[str], str | None]] = {
    "check-digit": _csum,
    "check-pair": _csumalpha,
    "company-prefix": _gcppos(0),
    "company-prefix-after-first-digit": _gcppos(1),
    "date-yymmdd": lambda v: _date(v, 2, False),
    "date-yymmdd-day-00-allowed": lambda v: _date(v, 2, True),
    "date-yyyymmdd": lambda v: _date(v, 4, False),
    "date-yyyymmdd-day-00-allowed": lambda v: _date(v, 4, True),
    "hour": _range("an hour", 0, 23),
    "minute": _range("a minute", 0, 59),
    "second": _range("a second", 0, 59),
    "hour-minute": _hhmi,
    "country-numeric": _one_of("an ISO 3166 numeric country code", _COUNTRIES_NUMERIC),
    "country-numeric-or-999": _one_of(
        "an ISO 3166 numeric country code or 999", _COUNTRIES_NUMERIC | {"999"}
    ),
    "country-alpha2": _one_of("an ISO 3166 alpha-2 country code", _COUNTRIES_ALPHA2),
    "currency-numeric": _one_of("an ISO 4217 numeric currency code", _CURRENCIES_NUMERIC),
    "sex-code": _one_of("an ISO/IEC 5218 sex code (0, 1, 2 or 9)", "0129"),
    "yes-no": _one_of("0 (no) or 1 (yes)", "01"),
    "winding-direction": _one_of("a winding direction (0, 1 or 9)", "019"),
    "all-zero": lambda v: None if v and set(v) == {"0"} else f"{v!r} must be zero",
    "not-zero": lambda v: None if v.strip("0") else f"{v!r} must not be zero",
    "no-leading-zero": lambda v: None if not v.startswith("0") else f"{v!r} must not start with zero",
    "has-non-digit": lambda v: None if not v.isdigit() else f"{v!r} must contain a non-digit",
    "hyphen": lambda v: None if set(v) <= {"-"} else f"{v!r} must be a hyphen",
    "latitude": lambda v: None if int(v) <= 1_800_000_000 else f"{v} is not a latitude (0–1800000000)",
    "longitude": lambda v: None if int(v) <= 3_600_000_000 else f"{v} is not a longitude (0–3600000000)",
    "media-type": _one_of("an AIDC media type", _MEDIA_TYPES),
    "package-type": _one_of("a package type code (UN/ECE Recommendation 21)", _PACKAGE_TYPES),
    "importer-index": _one_of("an importer index character", _IMPORTER_INDEX),
    "iban": _iban,
    "percent-encoding": _pcenc,
    "piece-of-total": _pieceoftotal,
    "position-in-sequence": _posinseqslash,
    # North American coupon structures (AIs 8110, 8112): checked for format only.
    "coupon-code": _unchecked,
    "coupon-offer": _unchecked,
}
UNCHECKED = frozenset({"coupon-code", "coupon-offer"})

# The Syntax Dictionary's name of each content check ("linter") → idr's check. The table is
# generated through this mapping; a refusal is named by the linter, as GS1's tools name it.
CHECK_OF_LINTER: Mapping[str, str] = {
    "csum": "check-digit",
    "csumalpha": "check-pair",
    "gcppos1": "company-prefix",
    "gcppos2": "company-prefix-after-first-digit",
    "yymmdd": "date-yymmdd",
    "yymmd0": "date-yymmdd-day-00-allowed",
    "yyyymmdd": "date-yyyymmdd",
    "yyyymmd0": "date-yyyymmdd-day-00-allowed",
    "hh": "hour",
    "mi": "minute",
    "ss": "second",
    "hhmi": "hour-minute",
    "iso3166": "country-numeric",
    "iso3166999": "country-numeric-or-999",
    "iso3166alpha2": "country-alpha2",
    "iso4217": "currency-numeric",
    "iso5218": "sex-code",
    "yesno": "yes-no",
    "winding": "winding-direction",
    "zero": "all-zero",
    "nonzero": "not-zero",
    "nozeroprefix": "no-leading-zero",
    "hasnondigit": "has-non-digit",
    "hyphen": "hyphen",
    "latitude": "latitude",
    "longitude": "longitude",
    "mediatype": "media-type",
    "packagetype": "package-type",
    "importeridx": "importer-index",
    "iban": "iban",
    "pcenc": "percent-encoding",
    "pieceoftotal": "piece-of-total",
    "posinseqslash": "position-in-sequence",
    "couponcode": "coupon-code",
    "couponposoffer": "coupon-offer",
}
LINTER_OF_CHECK: Mapping[str, str] = {check: linter for linter, check in CHECK_OF_LINTER.items()}


# --------------------------------------------------------------------------- values


def check_value(ai: str, value: str) -> None:
    """Check ``value`` against AI ``ai``'s components and their content checks, in order."""
    r = rule(ai)
    label = r.label()
    pos = 0
    for comp in r.components:
        rest = len(value) - pos
        if rest == 0 and comp.optional:
            break
        n = comp.max if comp.min == comp.max else min(rest, comp.max)
        if rest < comp.min or (comp.min == comp.max and rest < n):
            raise Gs1Error(
                f"{label}: {value!r} has the wrong length ({r.format_text()})", ai=ai, rule="length"
            )
        chunk = value[pos : pos + n]
        allowed, name = CHARSETS[comp.charset]
        bad = next((c for c in chunk if c not in allowed), None)
        if bad is not None:
            raise Gs1Error(f"{label}: {bad!r} is not allowed ({name} only)", ai=ai, rule="charset")
        for check in comp.checks:
            problem = CHECKS[check](chunk)
            if problem is not None:
                raise Gs1Error(f"{label}: {problem}", ai=ai, rule=LINTER_OF_CHECK[check])
        pos += n
    if pos != len(value):
        raise Gs1Error(f"{label}: {value!r} has the wrong length ({r.format_text()})", ai=ai, rule="length")


def _matches(pattern: str, ai: str) -> bool:
    """An AI pattern is an AI, or a prefix then ``*``: every AI that starts with it."""
    return ai.startswith(pattern[:-1]) if pattern.endswith("*") else ai == pattern


def check_associations(ais: Iterable[str]) -> None:
    """GenSpecs §4.14: the AIs that require others (§4.14.2, mandatory associations) or may
    not appear with others (§4.14.1, invalid pairs), over every AI of one message."""
    present = list(dict.fromkeys(ais))
    for ai in present:
        r = rule(ai)
        for other in present:
            if other != ai and any(_matches(p, other) for p in r.excludes):
                raise Gs1Error(
                    f"{r.label()} may not be used with AI {other} ({rule(other).title})",
                    ai=ai,
                    rule="excludes",
                )
        for alternatives in r.requires:
            if not any(all(any(_matches(p, o) for o in present) for p in group) for group in alternatives):
                wanted = [" + ".join(group) for group in alternatives]
                text = wanted[0] if len(wanted) == 1 else ", ".join(wanted[:-1]) + " or " + wanted[-1]
                raise Gs1Error(f"{r.label()} requires AI {text}", ai=ai, rule="requires")


def check_message(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Every element of one message: each value, then duplicates and AI pairs.

    An AI repeated with the same value is one element (data may be carried by several
    symbols on one item); with another value the message is refused. Returns the elements,
    repeats dropped, in their order.
    """
    seen: dict[str, str] = {}
    out: list[tuple[str, str]] = []
    for ai, value in pairs:
        check_value(ai, value)
        if ai in seen:
            if seen[ai] != value:
                raise Gs1Error(
                    f"{rule(ai).label()} given twice with different values ({seen[ai]!r}, {value!r})",
                    ai=ai,
                    rule="duplicate",
                )
            continue
        seen[ai] = value
        out.append((ai, value))
    check_associations(seen)
    return out
