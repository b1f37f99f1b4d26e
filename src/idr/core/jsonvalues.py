"""Records whose value holds a JSON object: prefix applications and filings, statistics
(report entries, periods, counters). One encoding, and one reading: a record without the
value, or whose value is not a JSON object, reads as absent."""

from __future__ import annotations

import json
from typing import Any

from idr.model.value import HandleRecord, HandleValue


def json_value(index: int, type_: str, obj: object, *, permissions: int | None = None) -> HandleValue:
    """A value whose data is compact JSON, keys sorted (so equal objects store equal bytes)."""
    data = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")
    if permissions is None:
        return HandleValue(index, type_, data)
    return HandleValue(index, type_, data, permissions=permissions)


def json_of(record: HandleRecord | None, type_: str) -> dict[str, Any] | None:
    """The object in ``record``'s first value of ``type_``; None when there is none."""
    if record is None:
        return None
    for v in record.values:
        if v.type.upper() == type_.upper():
            try:
                obj = json.loads(v.data)
            except ValueError:  # not JSON, or not UTF-8 (UnicodeDecodeError is a ValueError)
                return None
            return obj if isinstance(obj, dict) else None
    return None


__all__ = ["json_of", "json_value"]
