"""REST JSON mapping: exact Handle.Net shapes, lenient inputs clients rely on, clear errors,
and a property: any value survives value → JSON → text → JSON → value."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idr.codec import rest
from idr.codec.values import decode_admin, encode_admin, encode_vlist
from idr.model.errors import HandleError, ResponseCode
from idr.model.value import AdminRecord, HandleValue, TtlType, ValueReference


def test_value_shape_like_handle_net() -> None:
    v = HandleValue(1, "URL", b"http://www.handle.net/index.html", 86400, TtlType.RELATIVE, 1006381295)
    assert rest.value_to_json(v) == {
        "index": 1,
        "type": "URL",
        "data": {"format": "string", "value": "http://www.handle.net/index.html"},
        "ttl": 86400,
        "timestamp": "2001-11-21T22:21:35Z",
    }


def test_admin_shape_and_string_index() -> None:
    data = encode_admin(AdminRecord("0.NA/4263537", 200, 0b011111111111))
    assert rest.data_to_json("HS_ADMIN", data) == {
        "format": "admin",
        "value": {"handle": "0.NA/4263537", "index": 200, "permissions": "011111111111"},
    }
    # pyhandle's admin entry: string index, 12-char mask
    got = rest.value_from_json(
        {
            "index": 100,
            "type": "HS_ADMIN",
            "data": {
                "format": "admin",
                "value": {"index": "200", "handle": "0.NA/88.100", "permissions": "011111110011"},
            },
        }
    )
    assert decode_admin(got.data) == AdminRecord("0.NA/88.100", 200, 0b011111110011)


def test_formats_chosen_by_type() -> None:
    assert rest.data_to_json("HS_VLIST", encode_vlist([ValueReference("0.NA/1", 300)])) == {
        "format": "vlist",
        "value": [{"handle": "0.NA/1", "index": 300}],
    }
    assert rest.data_to_json("DESC", b"\xff\x00") == {"format": "base64", "value": "/wA="}
    assert rest.data_to_json("DESC", "中文".encode()) == {"format": "string", "value": "中文"}
    # undecodable structured data still shows, as bytes
    assert rest.data_to_json("HS_ADMIN", b"junk")["format"] == "string"


def test_permissions_and_references_only_when_unusual() -> None:
    v = HandleValue(300, "HS_SECKEY", b"k", permissions=0b1100, references=(ValueReference("88.1/x", 2),))
    j = rest.value_to_json(v)
    assert j["permissions"] == "1100" and j["references"] == [{"handle": "88.1/x", "index": 2}]
    assert "permissions" not in rest.value_to_json(HandleValue(1, "URL", b"x"))


def test_absolute_ttl() -> None:
    v = rest.value_from_json({"index": 1, "type": "URL", "data": "x", "ttl": "2030-01-01T00:00:00Z"})
    assert v.ttl_type == TtlType.ABSOLUTE and v.ttl == 1893456000
    assert rest.value_to_json(v)["ttl"] == "2030-01-01T00:00:00Z"


def test_body_forms() -> None:
    one = {"index": 1, "type": "URL", "data": "x"}
    assert (
        rest.values_from_json([one]) == rest.values_from_json({"values": [one]}) == rest.values_from_json(one)
    )
    assert rest.values_from_json({"handle": "88.1/A", "values": [one]}, "88.1/a")[0].data == b"x"
    with pytest.raises(HandleError, match="Mismatched handle"):
        rest.values_from_json({"handle": "88.1/b", "values": [one]}, "88.1/a")
    with pytest.raises(HandleError) as e:
        rest.values_from_json({"something": 1})
    assert e.value.code == ResponseCode.PROTOCOL_ERROR


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"type": "URL", "data": "x"}, "value.index is missing"),
        ({"index": True, "type": "URL", "data": "x"}, "value.index"),
        ({"index": 1, "type": 5, "data": "x"}, "value.type"),
        ({"index": 1, "type": "URL", "data": {"format": "nope", "value": "x"}}, "value.data.format"),
        ({"index": 1, "type": "URL", "data": {"format": "hex", "value": "zz"}}, "hex"),
        ({"index": 1, "type": "URL", "data": "x", "ttl": 1.5}, "value.ttl"),
        ({"index": 1, "type": "URL", "data": "x", "permissions": "11111"}, "value.permissions"),
        ({"index": 1, "type": "URL", "data": "x", "references": [{"handle": "a/b"}]}, "references[0].index"),
        (
            {
                "index": 1,
                "type": "HS_ADMIN",
                "data": {"format": "admin", "value": {"handle": "a/b", "index": 1, "permissions": "2"}},
            },
            "permissions",
        ),
        ({"index": 1, "type": "HS_PUBKEY", "data": {"format": "key", "value": {"kty": "EC"}}}, "kty"),
    ],
)
def test_errors_name_the_field(value: dict[str, Any], field: str) -> None:
    with pytest.raises(HandleError) as e:
        rest.value_from_json(value)
    assert e.value.code == ResponseCode.INVALID_VALUE and field in e.value.message


def test_malformed_json_text() -> None:
    with pytest.raises(HandleError) as e:
        rest.loads(b"[1,")
    assert e.value.code == ResponseCode.PROTOCOL_ERROR and e.value.message.startswith("malformed JSON")


def test_status_mapping() -> None:
    assert rest.http_status(1) == 200 and rest.http_status(1, created=True) == 201
    assert rest.http_status(200, resolution=True) == 200 and rest.http_status(200) == 400
    table = {
        100: 404,
        101: 409,
        201: 409,
        102: 400,
        202: 400,
        4: 400,
        301: 400,
        402: 401,
        400: 403,
        401: 403,
        403: 403,
        404: 403,
        3: 503,
        7: 503,
        5: 501,
        302: 300,
        303: 300,
        2: 500,
        300: 500,
    }
    assert {code: rest.http_status(code) for code in table} == table


def test_rsa_key_as_jwk() -> None:
    jwk = {
        "kty": "RSA",
        "n": (
            "u1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0_IzW7yWR7QkrmBL7jTK"
            "En5u-qKhbwKfBstIs-bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW_V"
            "DL5AaWTg0nLVkjRo9z-40RQzuVaE8AkAFmxZzow3x-VJYKdjykkJ0iT9wCS0DRTXu269V264Vf_3jvre"
            "dZiKRkgwlL9xNAwxXFg0x_XFw005UWVRIkdgcKWTjpBP2dPwVZ4WWC-9aGVd-Gyn1o0CLelf4rEjGoXb"
            "AAEgAqeGUxrcIlbjXfbcmw"
        ),
        "e": "AQAB",
    }
    data = rest.key_from_jwk(jwk)
    assert data.startswith(b"\x00\x00\x00\x0bRSA_PUB_KEY\x00\x00\x00\x00\x00\x03\x01\x00\x01")
    assert rest.data_to_json("HS_PUBKEY", data) == {"format": "key", "value": jwk}


# ----------------------------------------------------------------------------- property

_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
_handles = st.from_regex(r"[0-9A-Za-z.]{1,8}/[\w.-]{1,12}", fullmatch=True)
_refs = st.builds(ValueReference, _handles, st.integers(0, 2**31 - 1))
_admin = st.builds(AdminRecord, _handles, st.integers(0, 2**31 - 1), st.integers(0, 0xFFF))


@st.composite
def _values(draw: st.DrawFn) -> HandleValue:
    kind = draw(st.sampled_from(["text", "bytes", "admin", "vlist"]))
    if kind == "admin":
        type_, data = "HS_ADMIN", encode_admin(draw(_admin))
    elif kind == "vlist":
        type_, data = "HS_VLIST", encode_vlist(draw(st.lists(_refs, max_size=4)))
    else:
        type_ = draw(st.sampled_from(["URL", "DESC", "EMAIL", "10320/loc", "自定义"]))
        data = draw(_text).encode() if kind == "text" else draw(st.binary(max_size=40))
    absolute = draw(st.booleans())
    ttl = draw(st.integers(-(2**31), 2**31 - 1))  # absolute: unsigned seconds in a signed field
    return HandleValue(
        index=draw(st.integers(-(2**31), 2**31 - 1)),
        type=type_,
        data=data,
        ttl=ttl,
        ttl_type=TtlType.ABSOLUTE if absolute else TtlType.RELATIVE,
        timestamp=0,
        permissions=draw(st.integers(0, 0xF)),
        references=tuple(draw(st.lists(_refs, max_size=3))),
    )


@given(_values())
def test_round_trip(v: HandleValue) -> None:
    text = rest.dumps(rest.values_to_json([v]))
    (back,) = rest.values_from_json(rest.loads(text))
    assert back == v
