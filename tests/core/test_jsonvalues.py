"""One reading of records that hold a JSON object (applications, filings, statistics): a
damaged value reads as absent, never as a traceback."""

from __future__ import annotations

from idr.core.jsonvalues import json_of, json_value
from idr.model.value import PERM_SECRET, HandleRecord, HandleValue


def test_a_value_round_trips_as_compact_sorted_json() -> None:
    v = json_value(1, "IDR.X", {"b": 1, "a": "重庆"}, permissions=PERM_SECRET)
    assert v.data == '{"a":"重庆","b":1}'.encode() and v.permissions == PERM_SECRET
    assert json_of(HandleRecord("0.X/1", (v,)), "idr.x") == {"a": "重庆", "b": 1}


def test_anything_but_a_json_object_of_that_type_reads_as_absent() -> None:
    def rec(data: bytes, type_: str = "IDR.X") -> HandleRecord:
        return HandleRecord("0.X/1", (HandleValue(1, type_, data),))

    assert json_of(None, "IDR.X") is None
    assert json_of(rec(b'{"a":1}', "URL"), "IDR.X") is None
    for damaged in (b"{not json", b"\xff\xfe", b"[1,2]", b'"text"', b""):
        assert json_of(rec(damaged), "IDR.X") is None, damaged
