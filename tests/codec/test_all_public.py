"""``all_public`` judges encoded values without decoding them, and agrees with the decoded
values' own ``public_read`` — for any values, and for bytes that are not an exact encoding."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from idr.codec.values import all_public, decode_values, encode_values
from idr.codec.wire import ProtocolError
from idr.model.value import HandleValue, ValueReference

refs = st.builds(ValueReference, st.text(max_size=20), st.integers(-(2**31), 2**31 - 1))
types = st.one_of(st.text(max_size=12), st.sampled_from(["HS_SECKEY", "hs_seckey", "Hs_SecKey", "HS_ADMIN"]))
values = st.builds(
    HandleValue,
    index=st.integers(-(2**31), 2**31 - 1),
    type=types,
    data=st.binary(max_size=64),
    permissions=st.integers(0, 15),
    references=st.lists(refs, max_size=3).map(tuple),
)
value_lists = st.lists(values, max_size=4)


@given(value_lists)
def test_agrees_with_public_read(vals: list[HandleValue]) -> None:
    assert all_public(encode_values(vals)) == (bool(vals) and all(v.public_read for v in vals))


@given(value_lists.filter(bool), st.data())
def test_inexact_encodings_are_never_public(vals: list[HandleValue], data: st.DataObject) -> None:
    whole = encode_values(vals)
    cut = data.draw(st.integers(0, len(whole) - 1))
    assert not all_public(whole[:cut])
    assert not all_public(whole + data.draw(st.binary(min_size=1, max_size=8)))


@given(st.binary(max_size=200))
def test_arbitrary_bytes_judged_public_decode_to_public_values(raw: bytes) -> None:
    if all_public(raw):
        try:
            vals = decode_values(raw)
        except ProtocolError:
            return  # e.g. a TTL type byte the decoder refuses: the slow path answers such rows
        assert vals and all(v.public_read for v in vals)
