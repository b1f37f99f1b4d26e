"""encode → decode is the identity, for every body layout and every value encoding."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from idr.codec import bodies as b
from idr.codec.envelope import OpCode, OpFlag
from idr.codec.message import Message, decode_message, encode_message
from idr.codec.site import decode_site, encode_site
from idr.codec.values import (
    decode_admin,
    decode_values,
    decode_vlist,
    encode_admin,
    encode_values,
    encode_vlist,
)
from idr.model.errors import ResponseCode
from idr.model.site import HashOption, InterfaceType, ServerInfo, ServerInterface, SiteInfo, TransportProtocol
from idr.model.value import AdminRecord, HandleValue, TtlType, ValueReference

i32 = st.integers(-(2**31), 2**31 - 1)
u32 = st.integers(0, 2**32 - 1)
u16 = st.integers(0, 0xFFFF)
u8 = st.integers(0, 0xFF)
text = st.text(max_size=20)
handles = st.text(min_size=0, max_size=40)
blobs = st.binary(max_size=64)
refs = st.builds(ValueReference, handles, i32)
values = st.builds(
    HandleValue,
    index=i32,
    type=st.text(max_size=12),
    data=blobs,
    ttl=i32,
    ttl_type=st.sampled_from(TtlType),
    timestamp=u32,
    permissions=st.integers(0, 15),
    references=st.lists(refs, max_size=3).map(tuple),
)
value_tuples = st.lists(values, max_size=4).map(tuple)
digests = st.one_of(
    st.builds(b.RequestDigest, st.just(1), st.binary(min_size=16, max_size=16)),
    st.builds(b.RequestDigest, st.just(2), st.binary(min_size=20, max_size=20)),
    st.builds(b.RequestDigest, st.just(3), st.binary(min_size=32, max_size=32)),
    st.builds(b.RequestDigest, st.just(0), st.binary(max_size=32)),
)
interfaces = st.builds(
    ServerInterface, st.sampled_from(InterfaceType), st.sampled_from(TransportProtocol), i32
)
servers = st.builds(
    ServerInfo, i32, st.binary(min_size=16, max_size=16), blobs, st.lists(interfaces, max_size=3).map(tuple)
)
sites = st.builds(
    SiteInfo,
    serial=u16,
    primary=st.booleans(),
    multi_primary=st.booleans(),
    hash_option=st.sampled_from(HashOption),
    hash_filter=text,
    attributes=st.lists(st.tuples(text, text), max_size=3).map(tuple),
    servers=st.lists(servers, max_size=3).map(tuple),
    protocol_major=u8,
    protocol_minor=u8,
    data_format_version=u16,
)
session_setup = st.one_of(
    st.builds(b.SessionSetupRequest, st.just(2), i32, handles, i32),
    st.builds(b.SessionSetupRequest, st.sampled_from([1, 4]), i32, handles, i32, blobs),
    st.builds(b.SessionSetupRequest, st.just(3), i32, handles, i32, st.just(b""), handles, i32),
)

# (opcode, response code, body strategy) for every layout the codec knows.
REQUESTS: list[tuple[int, Any]] = [
    (
        OpCode.RESOLUTION,
        st.builds(
            b.ResolutionRequest, handles, st.lists(i32).map(tuple), st.lists(text, max_size=4).map(tuple)
        ),
    ),
    *[
        (op, st.builds(b.GenericRequest, handles))
        for op in (
            OpCode.GET_SITE_INFO,
            OpCode.DELETE_HANDLE,
            OpCode.HOME_NA,
            OpCode.UNHOME_NA,
            OpCode.SESSION_TERMINATE,
            OpCode.GET_NEXT_TXN_ID,
            OpCode.BACKUP_SERVER,
        )
    ],
    (OpCode.LIST_HANDLES, st.builds(b.ListHandlesRequest, handles)),
    (OpCode.LIST_HOMED_NAS, st.builds(b.ListHandlesRequest, handles)),
    (OpCode.CREATE_HANDLE, st.builds(b.CreateHandleRequest, handles, value_tuples)),
    (OpCode.ADD_VALUE, st.builds(b.AddValueRequest, handles, value_tuples)),
    (OpCode.MODIFY_VALUE, st.builds(b.ModifyValueRequest, handles, value_tuples)),
    (OpCode.REMOVE_VALUE, st.builds(b.RemoveValueRequest, handles, st.lists(i32).map(tuple))),
    (
        OpCode.RESPONSE_TO_CHALLENGE,
        st.builds(b.ChallengeAnswerRequest, st.sampled_from(["HS_PUBKEY", "HS_SECKEY"]), handles, i32, blobs),
    ),
    (OpCode.VERIFY_CHALLENGE, st.builds(b.VerifyChallengeRequest, handles, i32, blobs, digests, blobs)),
    (OpCode.SESSION_SETUP, session_setup),
    (OpCode.SESSION_EXCHANGEKEY, st.builds(b.SessionExchangeKeyRequest, st.none() | blobs)),
    (OpCode.RETRIEVE_TXN_LOG, st.builds(b.OpaqueBody, blobs)),
    (OpCode.DUMP_HANDLES, st.builds(b.OpaqueBody, blobs)),
]
SUCCESSES: list[tuple[int, Any]] = [
    (OpCode.RESOLUTION, st.builds(b.ResolutionResponse, handles, value_tuples)),
    (OpCode.GET_SITE_INFO, st.builds(b.SiteInfoResponse, sites)),
    (OpCode.CREATE_HANDLE, st.builds(b.CreateHandleResponse, st.none() | handles)),
    (OpCode.LIST_HANDLES, st.builds(b.ListHandlesResponse, st.lists(handles, max_size=5).map(tuple))),
    (OpCode.LIST_HOMED_NAS, st.builds(b.ListHomedNAsResponse, st.lists(handles, max_size=5).map(tuple))),
    (OpCode.VERIFY_CHALLENGE, st.builds(b.VerifyChallengeResponse, st.booleans())),
    (OpCode.SESSION_SETUP, st.builds(b.SessionSetupResponse, u16, blobs)),
    (OpCode.GET_NEXT_TXN_ID, st.builds(b.NextTxnIdResponse, st.integers(0, 2**64 - 1))),
    (OpCode.RETRIEVE_TXN_LOG, st.builds(b.OpaqueBody, blobs)),
    *[
        (op, st.just(b.EmptyBody()))
        for op in (
            OpCode.DELETE_HANDLE,
            OpCode.ADD_VALUE,
            OpCode.REMOVE_VALUE,
            OpCode.MODIFY_VALUE,
            OpCode.HOME_NA,
            OpCode.UNHOME_NA,
            OpCode.SESSION_TERMINATE,
            OpCode.SESSION_EXCHANGEKEY,
            OpCode.BACKUP_SERVER,
        )
    ],
]
OTHER_RESPONSES: list[tuple[int, Any]] = [
    (ResponseCode.SERVICE_REFERRAL, st.builds(b.ServiceReferral, handles, st.none() | value_tuples)),
    (ResponseCode.PREFIX_REFERRAL, st.builds(b.ServiceReferral, handles, st.none() | value_tuples)),
    (ResponseCode.AUTHENTICATION_NEEDED, st.builds(b.ChallengeResponse, st.binary(min_size=16, max_size=16))),
    *[
        (rc, st.builds(b.ErrorResponse, text))
        for rc in ResponseCode
        if rc
        not in (
            0,
            1,
            ResponseCode.SERVICE_REFERRAL,
            ResponseCode.PREFIX_REFERRAL,
            ResponseCode.AUTHENTICATION_NEEDED,
        )
    ],
]


@st.composite
def messages(draw: st.DrawFn) -> Message:
    kind = draw(st.sampled_from(["request", "success", "other"]))
    minor = draw(st.integers(5, 11))
    flags = draw(u32)
    digest = None
    if kind == "request":
        opcode, body = draw(st.sampled_from(REQUESTS))
        rc = 0
    else:
        if kind == "success":
            opcode, body = draw(st.sampled_from(SUCCESSES))
            rc = ResponseCode.SUCCESS
        else:
            rc, body = draw(st.sampled_from(OTHER_RESPONSES))
            opcode = draw(st.sampled_from(OpCode))
        digest = draw(st.none() | digests.filter(lambda d: d.alg != 0))
        flags = (flags & ~OpFlag.RD) | (OpFlag.RD if digest else 0)
    return Message(
        opcode=opcode,
        body=draw(body),
        response_code=rc,
        opflags=flags,
        request_id=draw(u32),
        session_id=draw(u32),
        major=2,
        minor=minor,
        suggested_major=draw(st.integers(0, 3)),
        suggested_minor=draw(u8),
        env_flags=draw(st.sampled_from([0, 0x20])),
        site_info_serial=draw(u16),
        recursion_count=draw(u8),
        expiration=draw(u32),
        request_digest=digest,
    )


@settings(max_examples=400, deadline=None)
@given(messages())
def test_message_roundtrip(msg: Message) -> None:
    data = encode_message(msg)
    back = decode_message(data)
    assert back == msg
    assert encode_message(back) == data


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16))
def test_legacy_challenge_roundtrip(nonce: bytes, digest: bytes) -> None:
    msg = Message(
        OpCode.CREATE_HANDLE,
        b.ChallengeResponse(nonce),
        ResponseCode.AUTHENTICATION_NEEDED,
        major=2,
        minor=0,
        request_digest=b.RequestDigest(0, digest),
    )
    data = encode_message(msg)
    assert not decode_message(data).opflags & OpFlag.RD
    assert decode_message(data) == msg


@settings(max_examples=200, deadline=None)
@given(value_tuples)
def test_values_roundtrip(vals: tuple[HandleValue, ...]) -> None:
    assert decode_values(encode_values(vals)) == vals


@settings(max_examples=200, deadline=None)
@given(st.builds(AdminRecord, handles, i32, u16))
def test_admin_roundtrip(a: AdminRecord) -> None:
    assert decode_admin(encode_admin(a)) == a


@settings(max_examples=200, deadline=None)
@given(st.lists(refs, max_size=5).map(tuple))
def test_vlist_roundtrip(items: tuple[ValueReference, ...]) -> None:
    assert decode_vlist(encode_vlist(items)) == items


@settings(max_examples=200, deadline=None)
@given(sites)
def test_site_roundtrip(site: SiteInfo) -> None:
    assert decode_site(encode_site(site)) == site


def test_site_ipv4_is_right_aligned() -> None:
    site = SiteInfo(servers=(ServerInfo(1, bytes([127, 0, 0, 1])),))
    back = decode_site(encode_site(site))
    assert back.servers[0].address == bytes(12) + bytes([127, 0, 0, 1])
    assert back.servers[0].host == "127.0.0.1"
