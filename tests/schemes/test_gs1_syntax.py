"""idr's GS1 AI rule table (the Syntax Dictionary's facts) and the content checks it names."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idr.schemes import gs1_syntax as syn

# Every AI the Syntax Dictionary release 2026-01-27 lists, as ranges (taken from that
# release's AI column when the table was generated).
RELEASE_AIS = """
    00-03 10-13 15-17 20-22 235 240-243 250-251 253-255 30 3100-3105 3110-3115 3120-3125
    3130-3135 3140-3145 3150-3155 3160-3165 3200-3205 3210-3215 3220-3225 3230-3235 3240-3245
    3250-3255 3260-3265 3270-3275 3280-3285 3290-3295 3300-3305 3310-3315 3320-3325 3330-3335
    3340-3345 3350-3355 3360-3365 3370-3375 3400-3405 3410-3415 3420-3425 3430-3435 3440-3445
    3450-3455 3460-3465 3470-3475 3480-3485 3490-3495 3500-3505 3510-3515 3520-3525 3530-3535
    3540-3545 3550-3555 3560-3565 3570-3575 3600-3605 3610-3615 3620-3625 3630-3635 3640-3645
    3650-3655 3660-3665 3670-3675 3680-3685 3690-3695 37 3900-3943 3950-3955 400-403 410-417
    420-427 4300-4326 4330-4333 7001-7011 7020-7023 7030-7041 710-717 7230-7242 7250-7259
    8001-8014 8017-8020 8026 8030 8040-8043 8110-8112 8200 90-99"""


def _expand(ranges: str) -> list[str]:
    out: list[str] = []
    for r in ranges.split():
        first, _, last = r.partition("-")
        out += [first] if not last else [str(n).zfill(len(first)) for n in range(int(first), int(last) + 1)]
    return out


def test_table_covers_every_ai_of_the_release() -> None:
    assert syn.release() == "2026-01-27"
    assert list(syn.rules()) == _expand(RELEASE_AIS)
    assert len(syn.rules()) == 541


def test_table_states_the_rules() -> None:
    rules = syn.rules()
    assert rules["3103"].format_text() == "N6" and rules["3103"].excludes == ("310*",)
    assert rules["17"].components[0].checks == ("date-yymmdd-day-00-allowed",)
    assert rules["01"].components[0].checks == ("check-digit", "company-prefix-after-first-digit")
    assert rules["01"].predefined_length and rules["01"].dl_attribute
    assert rules["01"].dl_qualifiers == (("22", "10", "21"), ("235",))
    assert rules["00"].dl_qualifiers == () and rules["10"].dl_qualifiers is None
    assert rules["10"].requires == ((("01",), ("02",), ("03",), ("8006",), ("8026",)),)
    assert rules["415"].requires == ((("8020",),),)
    assert rules["3920"].requires[1] == (("30",), ("31*",), ("32*",), ("35*",), ("36*",))
    assert rules["8030"].components[0].charset == "Z"
    assert rules["8003"].format_text() == "N1 N13 [X..16]"
    assert not rules["21"].predefined_length and not rules["21"].dl_attribute
    assert {"00", "01", "414", "417", "8004", "8013"} <= set(syn.primary_keys())


def test_every_check_the_table_names_is_implemented() -> None:
    named = {check for r in syn.rules().values() for c in r.components for check in c.checks}
    assert named <= set(syn.CHECKS)
    assert set(syn.CHECK_OF_LINTER.values()) == set(syn.CHECKS)
    assert len(syn.LINTER_OF_CHECK) == len(syn.CHECK_OF_LINTER)  # one linter name per check
    assert named >= syn.UNCHECKED  # the only ones left to their format


@pytest.mark.parametrize(
    ("ai", "value", "rule"),
    [
        ("17", "251301", "yymmd0"),
        ("7006", "250100", "yymmdd"),
        ("7251", "202502291200", "yyyymmdd"),  # 2025 is no leap year
        ("7003", "2501012460", "hhmi"),
        ("8013", "1987654Ad4X4bL5ttr2310c2L", "csumalpha"),
        ("4309", "18000000013600000000", "latitude"),
        ("7258", "0/2", "posinseqslash"),
        ("8007", "BE71096123456760", "iban"),  # observed in gs1/gs1-syntax-dictionary src/lint_iban.c tests
        ("4300", "A%2", "pcenc"),
        ("7252", "3", "iso5218"),
        ("4321", "2", "yesno"),
        ("8011", "012", "nozeroprefix"),
        ("7041", "QQQ", "packagetype"),
        ("7040", "1AB!", "importeridx"),
    ],
)
def test_checks_refuse_naming_the_gs1_linter(ai: str, value: str, rule: str) -> None:
    with pytest.raises(syn.Gs1Error) as e:
        syn.check_value(ai, value)
    assert (e.value.ai, e.value.rule) == (ai, rule) and f"AI {ai}" in e.value.message


@pytest.mark.parametrize(
    ("ai", "value"),
    [
        ("7251", "202402291200"),
        ("4309", "18000000003600000000"),
        ("7258", "1/2"),
        ("8007", "DE91100000000123456789"),  # observed in gs1/gs1-syntax-dictionary src/lint_iban.c tests
        ("4300", "A%20B"),
        ("7041", "X11"),
        ("7040", "1AB-"),
        ("8008", "25010112"),  # optional minutes and seconds left out
        ("423", "156156"),  # repeated optional country codes
    ],
)
def test_checks_accept(ai: str, value: str) -> None:
    syn.check_value(ai, value)


def test_check_pair_matches_the_general_specifications_example() -> None:
    # GenSpecs §7.9.5's worked example (also observed in gs1/gs1-syntax-dictionary's
    # src/lint_csumalpha.c tests).
    assert syn.check_pair("1987654Ad4X4bL5ttr2310c") == "2K"


@given(st.text(max_size=40))
def test_check_value_raises_only_gs1_errors(value: str) -> None:
    for ai in ("01", "10", "17", "8003", "8030", "4309", "8007", "7040", "8013"):
        with contextlib.suppress(syn.Gs1Error):
            syn.check_value(ai, value)
