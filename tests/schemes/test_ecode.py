"""Ecode: V/NSI/MD structure per version, V0 as GS1, and the handle mapping."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idr.schemes import ecode
from idr.schemes.common import SchemeError


def test_v1_parse_and_map() -> None:
    e = ecode.parse("ecode:100011234567")
    assert (e.version, e.nsi, e.md) == (1, "0001", "1234567")
    assert str(e) == "100011234567"
    assert ecode.handle_for(e, {"ECODE.1.0001"}.__contains__) == "ECODE.1.0001/100011234567"
    assert ecode.from_handle("ECODE.1.0001/100011234567") == e


def test_v3_alphanumeric() -> None:
    e = ecode.parse("310001ABC123")
    assert (e.version, e.nsi, e.md) == (3, "10001", "ABC123")


def test_v0_is_gs1() -> None:
    e = ecode.parse("0(01)09506000134352(10)L1")
    assert e.version == 0 and e.gs1 is not None and e.gs1.path() == "/01/09506000134352/10/L1"
    assert ecode.parse("09506000134352").gs1 == e.gs1.ancestors()[-1]
    with pytest.raises(SchemeError):
        ecode.candidate_prefixes(e)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("X0001123", "version digit"),
        ("70001123", "reserved"),
        ("1000", "NSI must be 4 digits"),
        ("1A001123", "NSI must be 4 digits"),
        ("10001", "1..20"),
        ("10001" + "1" * 21, "1..20"),
        ("100011234X", "not allowed"),
        ("310001abc", "not allowed"),
        ("0(01)09506000134353", "V0 Ecode"),
        ("410001a b", "printable"),
    ],
)
def test_structure_errors(text: str, needle: str) -> None:
    with pytest.raises(SchemeError, match=needle):
        ecode.parse(text)


@given(
    v=st.sampled_from([1, 2]),
    nsi=st.text("0123456789", min_size=4, max_size=4),
    md=st.text("0123456789", min_size=1, max_size=20),
)
def test_roundtrip(v: int, nsi: str, md: str) -> None:
    e = ecode.parse(f"{v}{nsi}{md}")
    assert ecode.from_handle(ecode.to_handle(e, "ECODE")) == e
