"""The GS1 Barcode Syntax Dictionary as idr reads it, and the linters it names."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idr.schemes import gs1_syntax as syn


def test_dictionary_is_read_whole() -> None:
    rules = syn.rules()
    assert len(rules) > 500  # 3100-3105 style ranges are expanded
    assert rules["01"].components[0].linters == ("csum", "gcppos2")
    assert rules["01"].predefined_length and rules["01"].dl_attribute
    assert rules["01"].dl_qualifiers == (("22", "10", "21"), ("235",))
    assert rules["10"].requires == ((("01",), ("02",), ("03",), ("8006",), ("8026",)),)
    assert rules["3103"].excludes == (("311n",),) or rules["3103"].excludes == (("310n",),)
    assert rules["8003"].format_text() == "N1 N13 [X..16]"
    assert {"00", "01", "414", "417", "8004", "8013"} <= set(syn.primary_keys())


def test_every_linter_the_dictionary_names_is_implemented() -> None:
    named = {lint for r in syn.rules().values() for c in r.components for lint in c.linters}
    assert named <= set(syn.LINTERS)
    assert named >= syn.UNCHECKED_LINTERS  # the only ones left to their format


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
        ("8007", "BE71096123456760", "iban"),
        ("4300", "A%2", "pcenc"),
        ("7252", "3", "iso5218"),
        ("4321", "2", "yesno"),
        ("8011", "012", "nozeroprefix"),
        ("7041", "QQQ", "packagetype"),
        ("7040", "1AB!", "importeridx"),
    ],
)
def test_linters_refuse(ai: str, value: str, rule: str) -> None:
    with pytest.raises(syn.Gs1Error) as e:
        syn.check_value(ai, value)
    assert (e.value.ai, e.value.rule) == (ai, rule) and f"AI {ai}" in e.value.message


@pytest.mark.parametrize(
    ("ai", "value"),
    [
        ("7251", "202402291200"),
        ("4309", "18000000003600000000"),
        ("7258", "1/2"),
        ("8007", "DE91100000000123456789"),
        ("4300", "A%20B"),
        ("7041", "X11"),
        ("7040", "1AB-"),
        ("8008", "25010112"),  # optional minutes and seconds left out
        ("423", "156156"),  # repeated optional country codes
    ],
)
def test_linters_accept(ai: str, value: str) -> None:
    syn.check_value(ai, value)


def test_check_pair_matches_the_general_specifications_example() -> None:
    assert syn.check_pair("1987654Ad4X4bL5ttr2310c") == "2K"


@given(st.text(max_size=40))
def test_check_value_raises_only_gs1_errors(value: str) -> None:
    for ai in ("01", "10", "17", "8003", "8030", "4309", "8007", "7040", "8013"):
        with contextlib.suppress(syn.Gs1Error):
            syn.check_value(ai, value)
