"""Domain types of the Handle System (RFC 3651): handles, values, admins, sites.

Pure data: nothing here does I/O or knows a wire format (that is ``idr.codec``).
"""

from idr.model.errors import HandleError, ResponseCode
from idr.model.handle import Handle, normalize_key, prefix_handle
from idr.model.value import (
    PERM_ADMIN_READ,
    PERM_ADMIN_WRITE,
    PERM_DEFAULT,
    PERM_PUBLIC_READ,
    PERM_PUBLIC_WRITE,
    AdminPermission,
    AdminRecord,
    HandleRecord,
    HandleValue,
    TtlType,
    ValueReference,
)

__all__ = [
    "PERM_ADMIN_READ",
    "PERM_ADMIN_WRITE",
    "PERM_DEFAULT",
    "PERM_PUBLIC_READ",
    "PERM_PUBLIC_WRITE",
    "AdminPermission",
    "AdminRecord",
    "Handle",
    "HandleError",
    "HandleRecord",
    "HandleValue",
    "ResponseCode",
    "TtlType",
    "ValueReference",
    "normalize_key",
    "prefix_handle",
]
