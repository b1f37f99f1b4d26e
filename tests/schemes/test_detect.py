"""recognise(): which scheme a piece of text is, and the handle it maps to."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idr.schemes.common import SchemeError
from idr.schemes.detect import SchemeRoots, recognise

HELD = {"GS1.9506000", "OID.1.2.156.20009", "ECODE.1.0001"}


@pytest.mark.parametrize(
    ("text", "scheme", "handle"),
    [
        ("88.100/abc", "handle", "88.100/abc"),
        ("hdl:88.100/abc", "handle", "88.100/abc"),
        ("/01/9506000134352/10/L1", "gs1", "GS1.9506000/01/09506000134352/10/L1"),
        ("https://id.gs1.org/01/09506000134352?17=290101", "gs1", "GS1.9506000/01/09506000134352"),
        ("(01)09506000134352(21)S1", "gs1", "GS1.9506000/01/09506000134352/21/S1"),
        ("9506000134352", "gs1", "GS1.9506000/01/09506000134352"),
        ("1.2.156.20009.5", "oid", "OID.1.2.156.20009/1.2.156.20009.5"),
        ("urn:oid:1.2.156.20009", "oid", "OID.1.2.156.20009/1.2.156.20009"),
        ("ecode:100011234567", "ecode", "ECODE.1.0001/100011234567"),
        ("100011234567", "ecode", "ECODE.1.0001/100011234567"),
        ("0(01)09506000134352", "ecode", "GS1.9506000/01/09506000134352"),
    ],
)
def test_recognise(text: str, scheme: str, handle: str) -> None:
    r = recognise(text, HELD.__contains__)
    assert (r.scheme, r.handle) == (scheme, handle)


def test_without_holder_the_scheme_root_is_used() -> None:
    assert recognise("/01/09506000134352").handle == "GS1/01/09506000134352"
    roots = SchemeRoots(gs1="88.500", oid="88.501", ecode="88.502")
    assert recognise("1.2.156", roots=roots).handle == "88.501/1.2.156"


@pytest.mark.parametrize("text", ["", "   ", "hello world", "1.2.156.01", "/01/09506000134353", "9" * 3000])
def test_unrecognised_or_invalid(text: str) -> None:
    with pytest.raises(SchemeError):
        recognise(text)


def test_invalid_gs1_reports_gs1() -> None:
    with pytest.raises(SchemeError) as e:
        recognise("/01/09506000134353")
    assert e.value.scheme == "gs1" and "expected 2" in e.value.message


@given(st.text(max_size=80))
def test_recognise_raises_only_scheme_errors(text: str) -> None:
    try:
        r = recognise(text)
    except SchemeError:
        return
    assert "/" in r.handle
