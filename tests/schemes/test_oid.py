"""OIDs: the national registration rules, urn:oid:, and the handle mapping."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idr.schemes import oid
from idr.schemes.common import SchemeError


def test_dotted_and_urn_forms() -> None:
    a = oid.parse("1.2.156.20009.5")
    assert a == oid.parse("urn:oid:1.2.156.20009.5") == oid.parse("URN:OID:1.2.156.20009.5")
    assert str(a) == "1.2.156.20009.5" and a.urn == "urn:oid:1.2.156.20009.5"
    assert a.is_under(oid.parse("1.2.156"))


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("1.2.156.020009", "leading zero"),
        ("1.2.156.x1", "not numeric"),
        ("1.2..156", "empty"),
        ("1", "at least two arcs"),
        ("3.1", "first arc"),
        ("1.40", "second arc"),
        ("1.2." + "9" * 64, "longer than 63 bytes"),
        ("1.2." + ".".join(["156"] * 30), "longer than 100 bytes"),
        ("1.2.１５６", "not numeric"),  # full-width digits are not arcs
        ("", "empty"),
    ],
)
def test_rule_violations_are_named(text: str, needle: str) -> None:
    with pytest.raises(SchemeError, match=needle):
        oid.parse(text)


def test_arc_2_may_have_large_second_arc() -> None:
    assert oid.parse("2.999.1").arcs == (2, 999, 1)


def test_longest_delegated_arc_holds_the_oid() -> None:
    o = oid.parse("1.2.156.20009.5.7")
    held = {"OID.1.2.156", "OID.1.2.156.20009"}
    assert oid.handle_for(o, held.__contains__) == "OID.1.2.156.20009/1.2.156.20009.5.7"
    assert oid.candidate_prefixes(o)[-1] == "OID"
    assert oid.from_handle("OID.1.2.156.20009/1.2.156.20009.5.7") == o
    assert oid.handle_for(o, lambda p: False) is None


arcs = st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=8)


@given(first=st.integers(0, 2), second=st.integers(0, 39), rest=arcs)
def test_roundtrip(first: int, second: int, rest: list[int]) -> None:
    o = oid.Oid((first, second, *rest))
    if len(str(o)) > oid.MAX_OID_BYTES:
        return
    assert oid.parse(str(o)) == o == oid.parse(o.urn)
    assert oid.from_handle(oid.to_handle(o, "OID.1")) == o
