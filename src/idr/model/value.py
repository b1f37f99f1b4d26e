"""Handle values (RFC 3651 §3.1) and the admin record carried in HS_ADMIN values."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, IntFlag

# Value permission bits (RFC 3651 §3.1, Handle.Net Encoder.PERM_*).
PERM_ADMIN_READ = 0x8
PERM_ADMIN_WRITE = 0x4
PERM_PUBLIC_READ = 0x2
PERM_PUBLIC_WRITE = 0x1
PERM_DEFAULT = PERM_ADMIN_READ | PERM_ADMIN_WRITE | PERM_PUBLIC_READ  # "1110"
PERM_SECRET = PERM_ADMIN_READ | PERM_ADMIN_WRITE  # "1100", e.g. HS_SECKEY

DEFAULT_TTL = 86400

# Standard value types (RFC 3651 §3.2, Handle.Net Common.STD_TYPES).
STANDARD_TYPES = frozenset(
    {
        "URL",
        "EMAIL",
        "DESC",
        "HS_ADMIN",
        "HS_ALIAS",
        "HS_SITE",
        "HS_SITE.6",
        "HS_SITE.PREFIX",
        "HS_SERV",
        "HS_SERV.PREFIX",
        "HS_SECKEY",
        "HS_PUBKEY",
        "HS_VLIST",
        "HS_SIGNATURE",
        "HS_CERT",
        "HS_NAMESPACE",
        "HS_NA_DELEGATE",
    }
)
MAX_TYPE_LENGTH = 1024
MAX_DATA_LENGTH = 1024 * 1024  # Handle.Net Common.MAX_ARRAY_SIZE
MAX_VALUES = 2048  # Handle.Net Common.MAX_HANDLE_VALUES


class TtlType(IntEnum):
    RELATIVE = 0
    ABSOLUTE = 1


class AdminPermission(IntFlag):
    """HS_ADMIN permission mask (RFC 3651 §3.2.5); REST JSON writes it MSB-first as 12 chars."""

    ADD_HANDLE = 0x001
    DELETE_HANDLE = 0x002
    ADD_DERIVED_PREFIX = 0x004
    DELETE_DERIVED_PREFIX = 0x008
    MODIFY_VALUE = 0x010
    REMOVE_VALUE = 0x020
    ADD_VALUE = 0x040
    MODIFY_ADMIN = 0x080
    REMOVE_ADMIN = 0x100
    ADD_ADMIN = 0x200
    READ_VALUE = 0x400
    LIST_HANDLES = 0x800
    ALL = 0xFFF


@dataclass(frozen=True, slots=True)
class ValueReference:
    """A pointer to one value of another handle: ``index:handle``."""

    handle: str
    index: int

    def __str__(self) -> str:
        return f"{self.index}:{self.handle}"

    @classmethod
    def parse(cls, text: str) -> ValueReference:
        """``300:0.NA/88.100`` → ValueReference; ValueError if it is not that shape."""
        idx, sep, handle = text.partition(":")
        if not sep or not idx.isdigit() or not handle:
            raise ValueError(f"not an index:handle identity: {text!r}")
        return cls(handle, int(idx))


@dataclass(frozen=True, slots=True)
class AdminRecord:
    """The data of an HS_ADMIN value: who (``index:handle``) may do what to this handle."""

    handle: str
    index: int
    permissions: int = int(AdminPermission.ALL)

    def allows(self, perm: AdminPermission) -> bool:
        """Every right in ``perm`` (one admin record must hold them all, as in Handle.Net)."""
        return self.permissions & perm == perm


@dataclass(frozen=True, slots=True)
class HandleValue:
    index: int
    type: str
    data: bytes
    ttl: int = DEFAULT_TTL
    ttl_type: TtlType = TtlType.RELATIVE
    timestamp: int = 0
    permissions: int = PERM_DEFAULT
    references: tuple[ValueReference, ...] = field(default_factory=tuple)

    @property
    def public_read(self) -> bool:
        """Anyone may read it. Never a secret key, whatever its stored permissions say (values
        written before writes made them private, or by an older node, stay hidden too)."""
        return bool(self.permissions & PERM_PUBLIC_READ) and self.type.upper() != "HS_SECKEY"

    @property
    def admin_read(self) -> bool:
        return bool(self.permissions & PERM_ADMIN_READ)

    def type_matches(self, wanted: str) -> bool:
        """Exact type (case-insensitive), or a type ending in ``.`` (``URL.``) covering its sub-types."""
        mine = self.type.upper()
        want = wanted.upper()
        if mine == want:
            return True
        return want.endswith(".") and (mine.startswith(want) or mine == want[:-1])

    def with_timestamp(self, ts: int) -> HandleValue:
        # The constructor, not dataclasses.replace (which walks the fields each call): every
        # value of every write is stamped on the writer thread.
        return HandleValue(
            self.index, self.type, self.data, self.ttl, self.ttl_type, ts, self.permissions, self.references
        )


@dataclass(frozen=True, slots=True)
class HandleRecord:
    """A handle as stored: its name as first written, and its values sorted by index."""

    handle: str
    values: tuple[HandleValue, ...]

    def value(self, index: int) -> HandleValue | None:
        for v in self.values:
            if v.index == index:
                return v
        return None

    def of_type(self, type_: str) -> list[HandleValue]:
        return [v for v in self.values if v.type_matches(type_)]
