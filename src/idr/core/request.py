"""The one request and response type that every front-end (UDP, TCP, HTTP) hands the core."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from idr.codec.envelope import OpCode
from idr.model.errors import ResponseCode
from idr.model.value import HandleValue, ValueReference


class Op(IntEnum):
    """The operations the core serves: a subset of the Handle protocol's opcodes
    (RFC 3652 §2.2.2.1), with the numbers taken from ``OpCode`` so they are written once."""

    RESOLUTION = OpCode.RESOLUTION
    GET_SITE_INFO = OpCode.GET_SITE_INFO
    CREATE_HANDLE = OpCode.CREATE_HANDLE
    DELETE_HANDLE = OpCode.DELETE_HANDLE
    ADD_VALUE = OpCode.ADD_VALUE
    REMOVE_VALUE = OpCode.REMOVE_VALUE
    MODIFY_VALUE = OpCode.MODIFY_VALUE
    LIST_HANDLES = OpCode.LIST_HANDLES
    HOME_NA = OpCode.HOME_NA
    UNHOME_NA = OpCode.UNHOME_NA
    LIST_HOMED_NAS = OpCode.LIST_HOMED_NAS
    # idr's own, with no wire opcode (negative: no u32 opcode maps to it): reverse lookup,
    # Handle.Net's separate /hrls service, answered by the core like any request.
    SEARCH = -1


WRITE_OPS = frozenset(
    {
        Op.CREATE_HANDLE,
        Op.DELETE_HANDLE,
        Op.ADD_VALUE,
        Op.REMOVE_VALUE,
        Op.MODIFY_VALUE,
        Op.HOME_NA,
        Op.UNHOME_NA,
    }
)


@dataclass(frozen=True, slots=True)
class Request:
    op: Op
    handle: str = ""
    indexes: tuple[int, ...] = ()  # resolution filter, or the values to remove/delete
    types: tuple[str, ...] = ()  # resolution filter
    values: tuple[HandleValue, ...] = ()  # create / add / modify
    identity: ValueReference | None = None  # authenticated caller, None for anonymous
    overwrite: bool = False  # create: replace an existing handle; add: replace existing values
    mint: bool = False  # create: append a server-minted unique suffix to ``handle``
    public_only: bool = True  # resolution: only publicly readable values
    authoritative: bool = False
    page: int | None = None  # list: zero-based page (None = all)
    page_size: int | None = None
    after: str | None = None  # list: continue after this handle (key paging)
    # A multi-server site (idr.core.site): a request about a handle another server of the
    # site holds is relayed to it — for clients that do not hash (HTTP). False: answered
    # 301 "hashed incorrectly", as the Handle protocol says (native clients hash themselves).
    relay: bool = True
    terms: tuple[tuple[str, str], ...] = ()  # search: (type, pattern) pairs, all must hold
    offset: int = 0  # search: matches to skip (the reverse-lookup service's ``page``)


@dataclass(frozen=True, slots=True)
class Response:
    code: ResponseCode
    handle: str = ""
    values: tuple[HandleValue, ...] = ()
    message: str = ""
    handles: tuple[str, ...] = ()  # list handles / homed prefixes
    total: int | None = None  # list: total number of handles under the prefix
    seq: int = 0  # for writes: the transaction log sequence number that made it durable
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.code == ResponseCode.SUCCESS
