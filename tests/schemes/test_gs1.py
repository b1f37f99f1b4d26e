"""GS1 keys: check digits, AI syntax, Digital Link paths, element strings, handle mapping."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idr.schemes import gs1, gs1_syntax
from idr.schemes.common import SchemeError

GCP = "9506000"
CD = gs1.with_check_digit

# One valid key per primary key AI, its GS1 company prefix starting where the AI says.
KEYS: dict[str, str] = {
    "00": CD("0" + GCP + "123456789"),
    "01": CD("0" + GCP + "13435"),
    "253": CD(GCP + "12345") + "DOC1",
    "255": CD(GCP + "12345") + "123",
    "401": GCP + "CONS-1",
    "402": CD(GCP + "123456789"),
    "414": CD(GCP + "13437"),
    "415": CD(GCP + "13437"),
    "417": CD(GCP + "13437"),
    "8003": CD("0" + GCP + "12345") + "S1",
    "8004": GCP + "ASSET1",
    "8006": CD("0" + GCP + "13435") + "0102",
    "8010": GCP + "COMP-1",
    "8013": GCP + "GMN1" + gs1_syntax.check_pair(GCP + "GMN1"),
    "8017": CD(GCP + "1234567890"),
    "8018": CD(GCP + "1234567890"),
}


def test_every_primary_key_has_a_sample() -> None:
    assert set(KEYS) == set(gs1.PRIMARY_KEYS)


@pytest.mark.parametrize(
    ("body", "digit"),
    [("950600013435", 2), ("0950600013435", 2), ("10614141123456789", 7), ("03600029145", 2)],
)
def test_check_digit_known_values(body: str, digit: int) -> None:
    # GS1's example GTIN 9506000134352 and SSCC 106141411234567897; UPC-A 036000291452.
    assert gs1.check_digit(body) == digit


def test_check_digit_error_names_ai_and_expected_digit() -> None:
    with pytest.raises(SchemeError) as e:
        gs1.parse_path("/01/09506000134353")
    assert "AI 01" in e.value.message and "expected 2" in e.value.message


@pytest.mark.parametrize("gtin", ["9506000134352", "950600013435" + "2", "09506000134352"])
def test_gtin13_padded_to_14(gtin: str) -> None:
    assert gs1.parse_path(f"/01/{gtin}").value == "09506000134352"


def test_gtin8_and_gtin12_padded() -> None:
    g8 = CD("9501234")
    g12 = CD("61414100001")
    assert gs1.parse_path(f"/01/{g8}").value == g8.zfill(14)
    assert gs1.parse_path(f"/01/{g12}").value == g12.zfill(14)


# Qualifiers a key cannot go without (GenSpecs §4.14.2: AI 415 requires AI 8020).
REQUIRED = {"415": "/8020/INV1"}


@pytest.mark.parametrize("ai", sorted(KEYS))
def test_every_primary_key_parses_and_maps(ai: str) -> None:
    path = f"/{ai}/{KEYS[ai]}{REQUIRED.get(ai, '')}"
    dl = gs1.parse_path(path)
    assert dl.primary == ai
    assert dl.company_digits().startswith(GCP)
    handle = gs1.handle_for(dl, lambda p: p == f"GS1.{GCP}")
    assert handle == f"GS1.{GCP}{path}"
    assert gs1.from_handle(handle) == dl


def _has_check_digit(ai: str) -> bool:
    return any("check-digit" in c.checks for c in gs1_syntax.rule(ai).components)


@pytest.mark.parametrize("ai", sorted(a for a in KEYS if _has_check_digit(a)))
def test_every_check_digit_key_rejects_a_wrong_digit(ai: str) -> None:
    good = KEYS[ai]
    pos = {"00": 17, "01": 13, "253": 12, "255": 12, "402": 16, "8003": 13, "8006": 13}
    pos |= {"414": 12, "415": 12, "417": 12}
    i = pos.get(ai, len(good) - 1)
    bad = good[:i] + str((int(good[i]) + 1) % 10) + good[i + 1 :]
    with pytest.raises(SchemeError, match=f"AI {ai} .*expected {good[i]}"):
        gs1.parse_path(f"/{ai}/{bad}{REQUIRED.get(ai, '')}")


def test_qualifiers_in_order_and_canonical_path() -> None:
    dl = gs1.parse_uri(
        "https://id.example.com/some/root/01/9506000134352/22/V1/10/L%2F1/21/S-9?17=290101&x=1"
    )
    assert dl.qualifiers == (("22", "V1"), ("10", "L/1"), ("21", "S-9"))
    assert dl.attributes == (("17", "290101"),)
    assert dl.path() == "/01/09506000134352/22/V1/10/L%2F1/21/S-9"
    assert dl.element_string() == "(01)09506000134352(22)V1(10)L/1(21)S-9(17)290101"


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("/01/09506000134352/21/S/10/L", "out of order"),
        ("/01/09506000134352/10/L/10/M", "given twice"),
        ("/01/09506000134352/254/X", "not a key qualifier of AI 01"),
        ("/00/" + KEYS["00"] + "/21/S", "takes no key qualifiers"),
        ("/01/09506000134", "wrong length"),
        ("/01/0950600013435X", "not allowed"),
        ("/01/09506000134352/10/" + "L" * 21, "wrong length"),
        ("/01/09506000134352/10/a%20b", "not allowed"),
        ("/8010/" + GCP + "comp", "character set 39"),
        ("/99/123", "no GS1 primary key"),
        ("/01/09506000134352/10", "no GS1 primary key"),
        ("/01/09506000134352?17=2901", "AI 17"),
        ("/01/09506000134352?10=L1", "belongs in the path"),
    ],
)
def test_syntax_errors_say_what_is_wrong(path: str, needle: str) -> None:
    p, _, q = path.partition("?")
    with pytest.raises(SchemeError, match=needle):
        gs1.parse_path(p, q)


def test_element_string_any_order_and_attributes() -> None:
    dl = gs1.parse_element_string("(01)09506000134352(21)S1(17)290101(10)L1")
    assert dl.qualifiers == (("10", "L1"), ("21", "S1"))
    assert dl.attributes == (("17", "290101"),)
    assert gs1.parse(dl.element_string()) == dl


def test_gln_with_extension_and_grai_serial() -> None:
    gln = gs1.parse_path(f"/414/{KEYS['414']}/254/DOCK-3")
    assert gln.qualifiers == (("254", "DOCK-3"),)
    grai = gs1.parse_path(f"/8003/{KEYS['8003']}")
    assert grai.value.endswith("S1")


def test_candidate_prefixes_longest_first_then_root() -> None:
    dl = gs1.parse_path("/01/09506000134352")
    cands = gs1.candidate_prefixes(dl, "88.500")
    assert cands[0] == "88.500.950600013435" and cands[-1] == "88.500"
    assert len(cands) == 13
    assert gs1.handle_for(dl, lambda p: p in {"88.500.95", "88.500.9506000"}, "88.500") == (
        "88.500.9506000/01/09506000134352"
    )
    assert gs1.handle_for(dl, lambda p: False) is None


def test_ancestors_drop_qualifiers_from_the_right() -> None:
    dl = gs1.parse_path("/01/09506000134352/10/L/21/S")
    assert [a.path() for a in dl.ancestors()] == [
        "/01/09506000134352/10/L/21/S",
        "/01/09506000134352/10/L",
        "/01/09506000134352",
    ]


_x20 = st.text(alphabet=sorted(gs1.CSET82), min_size=1, max_size=20)


@given(
    body=st.text(alphabet="0123456789", min_size=13, max_size=13),
    cpv=st.none() | _x20,
    lot=st.none() | _x20,
    serial=st.none() | _x20,
)
def test_roundtrip_path_element_string_and_handle(
    body: str, cpv: str | None, lot: str | None, serial: str | None
) -> None:
    quals = [(ai, v) for ai, v in (("22", cpv), ("10", lot), ("21", serial)) if v is not None]
    dl = gs1.make("01", gs1.with_check_digit(body), quals)
    assert gs1.parse_path(dl.path()) == dl
    assert gs1.parse_uri(dl.uri()) == dl
    if not any("(" in v or ")" in v for _, v in quals):
        assert gs1.parse_element_string(dl.element_string()) == dl
    assert gs1.from_handle(gs1.to_handle(dl, "GS1.95")) == dl


@given(st.text(alphabet="0123456789", min_size=1, max_size=17))
def test_check_digit_always_validates(body: str) -> None:
    full = gs1.with_check_digit(body)
    assert gs1.check_digit(full[:-1]) == int(full[-1])
    wrong = full[:-1] + str((int(full[-1]) + 1) % 10)
    assert gs1.check_digit(wrong[:-1]) != int(wrong[-1])


@given(st.text(max_size=60))
def test_parse_never_raises_anything_but_scheme_error(text: str) -> None:
    with contextlib.suppress(SchemeError):
        gs1.parse(text)
