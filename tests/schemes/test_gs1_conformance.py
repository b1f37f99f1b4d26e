"""GS1 conformance table: one case per rule, each citing where GS1 states it.

Sources (section numbers as in the documents; titles quoted where the number may move):
- GenSpecs: GS1 General Specifications (Release 25): §3.2 the AI table (format of every AI),
  §4.14.1 "Invalid pairs of element strings", §4.14.2 "Mandatory association of element
  strings", §5.1.2 symbology identifiers (Figure 5.1.2-2), §7.8 processing of AI data
  (predefined-length AIs need no FNC1; FNC1 sent as GS, GSCN 16-477), §7.9.1 mod-10 check
  digit, §7.9.5 check character pair, §7.11 character sets 82/39/64, §7.12 century of a
  YY year.
- Dictionary: the GS1 Barcode Syntax Dictionary (release 2026-01-27) entry of the AI named,
  as restated in idr's table (src/idr/schemes/data/gs1_ai_rules.json).
- DL: GS1 Digital Link URI Syntax (1.2+): "URI syntax" (http/https, primary key then key
  qualifiers in the listed order, data attributes in the query, each AI once) and the
  GTIN-8/12/13 → GTIN-14 rule for the path.
- DLC: GS1 Digital Link 1.1 "compression" (binary AI/value encoding, table Opt, base64url);
  vectors observed from GS1DigitalLinkToolkit.js (gs1/GS1DigitalLinkCompressionPrototype)
  and Solidsoft-Reply/Gs1DigitalLinkLib's CompressGs1DigitalLink.feature.

Each case is run through ``gs1.parse`` and ``detect.recognise`` (what ``idr resolve``,
``/api/resolve``, the console and the GS1 resolver all use). ``OK`` cases give the canonical
Digital Link path of the key (data attributes dropped); refusals give (AI, rule).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from idr.schemes import gs1
from idr.schemes.common import SchemeError
from idr.schemes.detect import recognise
from idr.schemes.gs1_syntax import Gs1Error

G = "09506000134352"  # GS1's example GTIN (GenSpecs examples use 9506000…)
GS = "\x1d"
SSCC = "095060001234567893"
PAY_TO = gs1.with_check_digit("950600013437")
CSET82_SAMPLE = "%21%22%25%26%27%28%29%2A%2B%2C-.%2F%3A%3B%3C%3D%3E"  # !"%&'()*+,-./:;<=>


@dataclass(frozen=True)
class Ok:
    path: str


@dataclass(frozen=True)
class Refused:
    ai: str
    rule: str


CASES: list[tuple[str, str, Ok | Refused]] = [
    # --- AI values against the Syntax Dictionary (issue 18, item 1) ---------------------
    # GenSpecs §3.2 / Dictionary 3100-3105 "N6": exactly six digits.
    ("3103-short", f"/01/{G}?3103=12345", Refused("3103", "length")),
    ("3103-long", f"/01/{G}?3103=1234567", Refused("3103", "length")),
    ("3103-ok", f"/01/{G}?3103=000195", Ok(f"/01/{G}")),
    # GenSpecs §3.2, §7.12 / Dictionary 17 "N6,yymmd0": a real date, DD=00 allowed.
    ("17-month-13", f"/01/{G}?17=251301", Refused("17", "yymmd0")),
    ("17-feb-30", f"/01/{G}?17=250230", Refused("17", "yymmd0")),
    ("17-feb-29-common-year", f"/01/{G}?17=250229", Refused("17", "yymmd0")),
    ("17-feb-29-leap-year", f"/01/{G}?17=240229", Ok(f"/01/{G}")),
    ("17-day-00", f"/01/{G}?17=251200", Ok(f"/01/{G}")),
    # Dictionary 7007 "N6,yymmdd [N6],yymmdd": no day 00, optional second date.
    ("7007-day-00", f"/01/{G}?7007=250100", Refused("7007", "yymmdd")),
    ("7007-range", f"/01/{G}?7007=250101250131", Ok(f"/01/{G}")),
    # Dictionary 8008 "N6,yymmdd N2,hh [N2],mi [N2],ss": hour 24 is not an hour.
    ("8008-hour-24", f"(01){G}(8008)25010124", Refused("8008", "hh")),
    # GenSpecs §3.2: AIs GS1 has not assigned are not AIs (query, element string, scan).
    ("unassigned-9999", f"/01/{G}?9999=1", Refused("9999", "unknown-ai")),
    ("unassigned-89", f"/01/{G}?89=1", Refused("89", "unknown-ai")),
    ("unassigned-89-es", "(01)79985645263358(89)4035", Refused("89", "unknown-ai")),
    ("unassigned-raw", f"01{G}89ABC", Refused("89", "unknown-ai")),
    # GenSpecs §7.9.1 / Dictionary "csum": mod-10 check digit of every key that has one.
    ("csum-gtin", "/01/09506000134353", Refused("01", "csum")),
    ("csum-sscc", "/00/095060001234567894", Refused("00", "csum")),
    ("csum-gln", "/414/9506000134377", Refused("414", "csum")),
    ("csum-grai", "/8003/095060001234591", Refused("8003", "csum")),
    # GenSpecs §7.9.5 / Dictionary 8013 "csumalpha": GMN check character pair (GenSpecs example).
    ("csumalpha-ok", "/8013/1987654Ad4X4bL5ttr2310c2K", Ok("/8013/1987654Ad4X4bL5ttr2310c2K")),
    ("csumalpha-bad", "/8013/1987654Ad4X4bL5ttr2310c2L", Refused("8013", "csumalpha")),
    # Dictionary 8003 "N1,zero …": a GRAI starts with a 0 filler.
    ("grai-filler", "/8003/195060001234591", Refused("8003", "zero")),
    # Dictionary 8006 "N4,pieceoftotal": piece ≤ total, neither zero.
    ("itip-piece-over-total", f"/8006/{G}0302", Refused("8006", "pieceoftotal")),
    # GenSpecs §7.11: character set 82 (X), 39 (Y), 64 (Z).
    ("cset82-space", f"/01/{G}/10/A%20B", Refused("10", "charset")),
    ("cset82-all", f"/01/{G}/10/{CSET82_SAMPLE}", Ok(f"/01/{G}/10/{CSET82_SAMPLE}")),
    ("cset39-lowercase", "/8010/9506000comp", Refused("8010", "charset")),
    ("cset64-digsig", f"(01){G}(21)S1(8030)not%base64", Refused("8030", "charset")),
    # Dictionary code lists: ISO 3166 (422; 7030 also 999), ISO 3166 alpha-2 (4307), ISO 4217
    # (393n), AIDC media type (7241), IBAN (8007).
    ("iso3166-ok", f"(01){G}(422)156", Ok(f"/01/{G}")),
    ("iso3166-bad", f"(01){G}(422)999", Refused("422", "iso3166")),
    ("iso3166-999-ok", f"(01){G}(7030)999APPROVAL1", Ok(f"/01/{G}")),
    ("iso3166alpha2-bad", f"(00){SSCC}(4307)XX", Refused("4307", "iso3166alpha2")),
    ("iso4217-bad", f"(01){G}(30)5(3932)000123", Refused("3932", "iso4217")),
    ("iso4217-ok", f"(01){G}(30)5(3932)156123", Ok(f"/01/{G}")),
    ("mediatype-bad", "(8018)950600012345678907(7241)50", Refused("7241", "mediatype")),
    (
        "iban-bad",
        f"(415){PAY_TO}(8020)INV1(8007)BE71096123456760",
        Refused("8007", "iban"),
    ),
    # --- AI pairs (GenSpecs §4.14) --------------------------------------------------------
    # §4.14.2 / Dictionary 17 "req=01,02,03,255,8006,8026": a date needs a trade item.
    ("req-17-on-sscc", f"/00/{SSCC}?17=290101", Refused("17", "requires")),
    # §4.14.2 / Dictionary 415 "req=8020": pay-to GLN needs its payment slip reference.
    ("req-415-8020", f"/415/{PAY_TO}", Refused("415", "requires")),
    (
        "req-415-8020-ok",
        f"/415/{PAY_TO}/8020/INV1",
        Ok(f"/415/{PAY_TO}/8020/INV1"),
    ),
    # §4.14.2 / Dictionary 02 "req=37": contained-item GTIN needs a count; then a key is missing.
    ("req-02-37", f"(00){SSCC}(02){G}", Refused("02", "requires")),
    ("req-02-37-ok", f"(00){SSCC}(02){G}(37)10", Ok(f"/00/{SSCC}")),
    # §4.14.1 / Dictionary 01 "ex=255,37": a GTIN and a count may not be together.
    ("ex-01-37", f"(01){G}(37)10", Refused("01", "excludes")),
    # §4.14.1 / Dictionary 21 "ex=235": serial and third-party serial exclude each other.
    ("ex-21-235", f"(01){G}(21)S1(235)T1", Refused("21", "excludes")),
    # §4.14.1 / Dictionary 3100 "ex=310n": one net weight per item.
    ("ex-310n", f"/01/{G}?3100=000001&3101=000001", Refused("3100", "excludes")),
    # --- Digital Link URI syntax (issue 18, items 2 and 4) --------------------------------
    # DL: each AI at most once; a query AI given twice is refused, not joined.
    ("dl-query-twice", f"/01/{G}?17=200904&17=901007", Refused("17", "duplicate")),
    ("dl-path-and-query", f"/01/{G}/10/L1?10=L1", Refused("10", "duplicate")),
    # DL: only http and https URIs are Digital Links (scheme case-insensitive, RFC 3986 §3.1).
    ("dl-ftp", f"ftp://id.gs1.org/01/{G}", Refused("", "digital-link")),
    ("dl-https-upper", f"HTTPS://ID.GS1.ORG/01/{G}", Ok(f"/01/{G}")),
    ("dl-http", f"http://example.com/01/{G}", Ok(f"/01/{G}")),
    # DL: a resolver may put the key under its own path (custom base path).
    ("dl-custom-base", f"https://example.com/some/where/01/{G}/21/S1", Ok(f"/01/{G}/21/S1")),
    # DL / Dictionary 01 "dlpkey=22,10,21|235": qualifiers in order, from one sequence.
    ("dl-qualifier-order", f"/01/{G}/21/S/10/L", Refused("10", "digital-link")),
    ("dl-qualifier-twice", f"/01/{G}/10/L/10/M", Refused("10", "duplicate")),
    ("dl-qualifier-mix", f"/01/{G}/10/L/235/T", Refused("235", "digital-link")),
    ("dl-235", f"/01/{G}/235/T1", Ok(f"/01/{G}/235/T1")),
    ("dl-no-qualifiers", f"/00/{SSCC}/21/S", Refused("21", "digital-link")),
    # Dictionary 414 "dlpkey=254|7040", 417 "dlpkey=7040" (party GLN).
    ("dl-414-7040", "/414/9506000134376/7040/1ABC", Ok("/414/9506000134376/7040/1ABC")),
    ("dl-417", "/417/9506000134376", Ok("/417/9506000134376")),
    # DL: a key qualifier of the path's key belongs in the path; an AI without the
    # Dictionary's "?" flag is no data attribute; non-AI parameters are not data.
    ("dl-qualifier-in-query", f"/01/{G}?10=L1", Refused("10", "digital-link")),
    ("dl-not-an-attribute", f"/00/{SSCC}?21=S1", Refused("21", "digital-link")),
    ("dl-other-params", f"/01/{G}?linkType=gs1:pip&context=x", Ok(f"/01/{G}")),
    # DL: GTIN-8/12/13 in the path are read as GTIN-14 …
    ("dl-gtin13-padded", "/01/9506000134352", Ok(f"/01/{G}")),
    ("dl-gtin12-padded", "/01/614141000012", Ok("/01/00614141000012")),
    ("dl-gtin8-padded", "/01/95012346", Ok("/01/00000095012346")),
    # … but GenSpecs §3.2 AI 01 is N14 in an element string (issue 18, item 4).
    ("es-gtin13-refused", "(01)9506000134352", Refused("01", "length")),
    ("raw-gtin13-refused", "019506000134352", Refused("01", "length")),
    # --- element strings (human-readable, GenSpecs §3.2) -----------------------------------
    ("es-any-order", f"(01){G}(21)S1(17)290101(10)L1", Ok(f"/01/{G}/10/L1/21/S1")),
    ("es-duplicate-different", f"(01){G}(10)A(10)B", Refused("10", "duplicate")),
    ("es-duplicate-same", f"(01){G}(10)A(10)A", Ok(f"/01/{G}/10/A")),
    ("es-empty-value", f"(01){G}(10)", Refused("10", "length")),
    ("es-no-key", "(10)ABC(17)290101", Refused("", "digital-link")),
    # --- raw scanner data (issue 18, item 3) ------------------------------------------------
    # GenSpecs §7.8: 01 and 17 have predefined lengths (no separator after them); 10 is
    # variable and ends at GS (FNC1 transmitted as GS, GSCN 16-477) or the end.
    ("raw-plain", "0179506000680971", Ok("/01/79506000680971")),
    ("raw-gs", f"01{G}10ABC{GS}21XYZ", Ok(f"/01/{G}/10/ABC/21/XYZ")),
    ("raw-fixed-then-variable", f"01{G}17290101" + "10ABC", Ok(f"/01/{G}/10/ABC")),
    ("raw-fnc1-caret", f"^01{G}10ABC^21XYZ", Ok(f"/01/{G}/10/ABC/21/XYZ")),
    ("raw-separator-after-fixed", f"01{G}{GS}10ABC", Ok(f"/01/{G}/10/ABC")),
    # Without a GS the variable value runs on: "ABC21XYZ" is the lot.
    ("raw-no-separator", f"01{G}10ABC21XYZ", Ok(f"/01/{G}/10/ABC21XYZ")),
    ("raw-bad-check-digit", "0109506000134353", Refused("01", "csum")),
    # GenSpecs §5.1.2 (Figure 5.1.2-2): symbology identifiers of GS1 symbols with AI data …
    ("sym-datamatrix", f"]d201{G}10ABC{GS}17290101", Ok(f"/01/{G}/10/ABC")),
    ("sym-gs1-128", f"]C101{G}10ABC", Ok(f"/01/{G}/10/ABC")),
    ("sym-qr", f"]Q301{G}21S1", Ok(f"/01/{G}/21/S1")),
    ("sym-databar", f"]e001{G}", Ok(f"/01/{G}")),
    ("sym-dotcode", f"]J101{G}", Ok(f"/01/{G}")),
    # … of EAN/UPC and ITF-14 (a GTIN, padded like a bare GTIN) …
    ("sym-ean13", "]E09506000134352", Ok(f"/01/{G}")),
    ("sym-ean8", "]E495012346", Ok("/01/00000095012346")),
    ("sym-itf14", f"]I1{G}", Ok(f"/01/{G}")),
    # … and of plain QR / DataMatrix carrying a Digital Link URI.
    ("sym-qr-url", f"]Q1https://id.gs1.org/01/{G}", Ok(f"/01/{G}")),
    ("sym-garbage", "]Y", Refused("", "symbology")),
    # --- compressed Digital Links (issue 18, item 5) -----------------------------------------
    # DLC vectors observed from GS1DigitalLinkToolkit.js and Gs1DigitalLinkLib (see the top).
    ("dlc-gtin", "https://id.gs1.org/AQnYUc1gmg", Ok("/01/05412345000013")),
    (
        "dlc-gtin-lot-serial",
        "https://id.gs1.org/AQnYUc1gmiCNV4JGQhcNT6K6c",
        Ok("/01/05412345000013/10/ABC123/21/72292641703"),
    ),
    ("dlc-sscc", "https://id.gs1.org/AN2yxDhfaiaw", Ok("/00/998440410914660971")),
    ("dlc-gln-ext", "https://id.gs1.org/JUa0T-eifdtOO9UFEmlYwv3Q", Ok("/414/5060917510004/254/RP56J920471")),
    # DLC optimisation code 0B (01 then 10), as GS1DigitalLinkToolkit.js writes it.
    ("dlc-optimised", "https://id.gs1.org/CwnYUc1gmo1XgkY", Ok("/01/05412345000013/10/ABC123")),
    # DLC: partially compressed, /{primary}/{value}/{compressed rest} (Gs1DigitalLinkLib's vector).
    ("dlc-partial", "https://id.gs1.org/01/05412345000013/EEarwSM", Ok("/01/05412345000013/10/ABC123")),
    # A compressed link is validated like any other (GenSpecs §7.9.1 after decoding).
    ("dlc-then-rules", "https://id.gs1.org/AQnYUc1gmA", Refused("01", "csum")),
    ("dlc-bad-padding", "https://id.gs1.org/AQnYUc1gmiCNV4JH", Refused("", "digital-link")),
]


@pytest.mark.parametrize(("text", "want"), [(t, w) for _, t, w in CASES], ids=[c[0] for c in CASES])
def test_conformance(text: str, want: Ok | Refused) -> None:
    if isinstance(want, Ok):
        assert gs1.parse(text).path() == want.path
        assert recognise(text).handle == "GS1" + want.path
        return
    with pytest.raises(Gs1Error) as e:
        gs1.parse(text)
    assert (e.value.ai, e.value.rule) == (want.ai, want.rule), e.value.message
    if want.ai:
        assert f"AI {want.ai}" in e.value.message
    with pytest.raises(SchemeError) as e2:
        recognise(text)
    assert e2.value.scheme == "gs1" and e2.value.message == e.value.message


def test_table_covers_every_linter_the_issue_names() -> None:
    rules = {w.rule for _, _, w in CASES if isinstance(w, Refused)}
    assert {"length", "yymmd0", "unknown-ai", "duplicate", "csum", "requires", "excludes"} <= rules
    assert {"iso3166", "iso4217", "charset", "digital-link", "symbology"} <= rules
