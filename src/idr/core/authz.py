"""Who may do what: HS_ADMIN values and HS_VLIST groups (RFC 3651 §3.2.5, §3.2.7).

An identity ``index:handle`` holds a permission on a record when one of the record's
HS_ADMIN values grants it to that identity, directly (index 0 in the admin record means
any index of that handle) or through an HS_VLIST group it belongs to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from idr.codec.values import decode_admin, decode_vlist
from idr.codec.wire import ProtocolError
from idr.model.handle import normalize_key
from idr.model.value import AdminPermission, AdminRecord, HandleRecord, HandleValue, ValueReference

# Groups may nest; a cycle, a deep chain or a wide fan-out must not make authorisation loop.
# One question ("is X among these admins?") walks each group value once, at most
# MAX_GROUP_DEPTH deep, reading at most MAX_GROUP_LOOKUPS records; what lies beyond grants nothing.
MAX_GROUP_DEPTH = 5
MAX_GROUP_LOOKUPS = 256

LookupRecord = Callable[[str], HandleRecord | None]


def admin_records(values: Iterable[HandleValue]) -> list[AdminRecord]:
    """The decodable HS_ADMIN records among ``values`` (an undecodable one grants nothing)."""
    out = []
    for v in values:
        if v.type.upper() == "HS_ADMIN":
            try:
                out.append(decode_admin(v.data))
            except ProtocolError:
                continue
    return out


class _Walk:
    """What one membership question has visited and may still read."""

    __slots__ = ("lookups", "seen")

    def __init__(self) -> None:
        self.seen: set[tuple[str, int]] = set()
        self.lookups = MAX_GROUP_LOOKUPS


def _is(identity: ValueReference, ref: ValueReference) -> bool:
    return normalize_key(identity.handle) == normalize_key(ref.handle) and ref.index in (0, identity.index)


def is_member(
    identity: ValueReference, ref: ValueReference, lookup: LookupRecord, walk: _Walk | None = None
) -> bool:
    """Whether ``identity`` is ``ref`` itself or a member of the HS_VLIST group at ``ref``,
    breadth first: each group value once, the nearest first, within the walk's budget."""
    if _is(identity, ref):
        return True
    walk = walk if walk is not None else _Walk()
    frontier = [ref]
    for _ in range(MAX_GROUP_DEPTH):
        deeper: list[ValueReference] = []
        for group in frontier:
            key = (normalize_key(group.handle), group.index)
            if key in walk.seen or walk.lookups <= 0:
                continue
            walk.seen.add(key)
            walk.lookups -= 1
            record = lookup(key[0])
            for v in record.values if record is not None else ():
                if v.type.upper() != "HS_VLIST" or group.index not in (0, v.index):
                    continue
                try:
                    members = decode_vlist(v.data)
                except ProtocolError:
                    continue
                for m in members:
                    if _is(identity, m):
                        return True
                    if len(deeper) < walk.lookups:  # no more could ever be read
                        deeper.append(m)
        if not deeper:
            return False
        frontier = deeper
    return False


def grants(
    identity: ValueReference,
    admins: Iterable[AdminRecord],
    perm: AdminPermission,
    lookup: LookupRecord,
) -> bool:
    walk = _Walk()  # one budget for the whole question
    return any(
        a.allows(perm) and is_member(identity, ValueReference(a.handle, a.index), lookup, walk)
        for a in admins
    )
