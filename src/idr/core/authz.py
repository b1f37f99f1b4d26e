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

# Groups may nest; a cycle or a deep chain must not make authorisation loop.
MAX_GROUP_DEPTH = 5

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


def is_member(identity: ValueReference, ref: ValueReference, lookup: LookupRecord, depth: int = 0) -> bool:
    """Whether ``identity`` is ``ref`` itself or a member of the HS_VLIST group at ``ref``."""
    if normalize_key(identity.handle) == normalize_key(ref.handle) and ref.index in (0, identity.index):
        return True
    if depth >= MAX_GROUP_DEPTH:
        return False
    record = lookup(normalize_key(ref.handle))
    if record is None:
        return False
    for v in record.values:
        if v.type.upper() != "HS_VLIST" or ref.index not in (0, v.index):
            continue
        try:
            members = decode_vlist(v.data)
        except ProtocolError:
            continue
        if any(is_member(identity, m, lookup, depth + 1) for m in members):
            return True
    return False


def grants(
    identity: ValueReference,
    admins: Iterable[AdminRecord],
    perm: AdminPermission,
    lookup: LookupRecord,
) -> bool:
    return any(
        a.allows(perm) and is_member(identity, ValueReference(a.handle, a.index), lookup) for a in admins
    )
