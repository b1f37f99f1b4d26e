"""Checks on values a client asks us to store; anything that fails is never written."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import replace

from idr.codec.keys import decode_public_key
from idr.codec.site import decode_site
from idr.codec.values import MAX_RECORD_BYTES, decode_admin, decode_vlist, values_size
from idr.codec.wire import ProtocolError
from idr.model.errors import HandleError, ResponseCode
from idr.model.handle import Handle
from idr.model.value import (
    MAX_DATA_LENGTH,
    MAX_TYPE_LENGTH,
    MAX_VALUES,
    PERM_PUBLIC_READ,
    PERM_PUBLIC_WRITE,
    STANDARD_TYPES,
    HandleValue,
    ValueReference,
)

MAX_INDEX = 2**31 - 1

_CONTROL = re.compile("[\\x00-\\x1f\\x7f]")


def _bad(message: str) -> HandleError:
    return HandleError(ResponseCode.INVALID_VALUE, message)


def check_type(type_: str) -> None:
    if not type_:
        raise _bad("value type is empty")
    if len(type_.encode("utf-8")) > MAX_TYPE_LENGTH:
        raise _bad(f"value type longer than {MAX_TYPE_LENGTH} bytes")
    if _CONTROL.search(type_):
        raise _bad(f"value type {type_!r} contains a control character")
    upper = type_.upper()
    # HS_ types are the Handle System's own; an unknown one is a typo, not a custom type.
    if upper.startswith("HS_") and upper not in STANDARD_TYPES and not upper.startswith("HS_SITE."):
        raise _bad(f"unknown reserved type {type_!r}")


def _check_reference(ref: ValueReference, what: str) -> None:
    """An identity in an HS_ADMIN or HS_VLIST: a real handle and an index ≥ 0 (0: any index)."""
    Handle.parse(ref.handle)
    if ref.index < 0:
        raise _bad(f"{what} index {ref.index} is negative")


def check_data(v: HandleValue) -> None:
    """Structured types must decode to something usable, so nothing downstream (authorisation,
    referrals, challenge–response) trips over what we stored: an admin or group member that
    names no handle, a key that is no key."""
    if len(v.data) > MAX_DATA_LENGTH:
        raise _bad(f"value {v.index} data longer than {MAX_DATA_LENGTH} bytes")
    t = v.type.upper()
    try:
        if t == "HS_ADMIN":
            admin = decode_admin(v.data)
            _check_reference(ValueReference(admin.handle, admin.index), "admin")
        elif t == "HS_VLIST":
            for ref in decode_vlist(v.data):
                _check_reference(ref, "member")
        elif t == "HS_PUBKEY":
            decode_public_key(v.data)
        elif t == "HS_SECKEY":
            if not v.data:
                raise _bad("an empty secret key would let anyone authenticate with no secret")
        elif t in ("HS_SITE", "HS_SITE.6", "HS_SITE.PREFIX"):
            decode_site(v.data)
        elif t in ("HS_ALIAS", "HS_SERV", "HS_SERV.PREFIX"):
            Handle.parse(v.data.decode("utf-8"))
    except (ProtocolError, UnicodeDecodeError, HandleError) as e:
        msg = e.message if isinstance(e, HandleError) else str(e)
        raise _bad(f"value {v.index} of type {v.type}: {msg}") from e


def _private_secret(v: HandleValue) -> HandleValue:
    """A secret key is never public, whatever permissions it was written with (a REST value
    without ``permissions`` gets the default 1110): public read and write are cleared."""
    if v.type.upper() == "HS_SECKEY" and v.permissions & (PERM_PUBLIC_READ | PERM_PUBLIC_WRITE):
        return replace(v, permissions=v.permissions & ~(PERM_PUBLIC_READ | PERM_PUBLIC_WRITE))
    return v


def check_values(values: Iterable[HandleValue], *, allow_empty: bool = False) -> tuple[HandleValue, ...]:
    """The values as they will be stored (secret keys made private), or INVALID_VALUE."""
    vals = tuple(_private_secret(v) for v in values)
    if not vals and not allow_empty:
        raise _bad("no values given")
    if len(vals) > MAX_VALUES:
        raise _bad(f"more than {MAX_VALUES} values")
    seen: set[int] = set()
    for v in vals:
        if not 1 <= v.index <= MAX_INDEX:
            raise _bad(f"value index {v.index} out of range 1..{MAX_INDEX}")
        if v.index in seen:
            raise _bad(f"value index {v.index} given twice")
        seen.add(v.index)
        check_type(v.type)
        if v.ttl_type == 0 and v.ttl < 0:
            raise _bad(f"value {v.index} has a negative relative TTL")
        if not 0 <= v.permissions <= 0xF:
            raise _bad(f"value {v.index} has bad permissions {v.permissions}")
        for ref in v.references:
            Handle.parse(ref.handle)
        check_data(v)
    return vals


def check_record_size(
    handle: str,
    values: Iterable[HandleValue],
    limit: int = MAX_RECORD_BYTES,
    before: Callable[[], Iterable[HandleValue] | None] | None = None,
) -> None:
    """A record's values together within ``limit`` encoded bytes (``[limits] max_record_bytes``),
    so its answer fits the Handle protocol's framing and the node's memory bounds. ``before``:
    the values it replaces (asked only when over the limit): a record stored larger before the
    limit was set or lowered may still shrink, just not grow."""
    size = values_size(values)
    old = before() if before is not None and size > limit else None
    if size > limit and (old is None or values_size(old) < size):
        raise _bad(
            f"record {handle} would take {size:,} bytes, more than the {limit:,} a record may hold "
            "(max_record_bytes): split it over several handles"
        )
