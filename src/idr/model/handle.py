"""Handle names: ``prefix/suffix`` in UTF-8 (RFC 3651 §2).

The Handle System compares with ASCII case folding only (no Unicode normalisation);
Handle.Net's default, which idr follows, folds the whole handle. ``normalize_key``
is the one place that rule lives: every index, cache and store is keyed by it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from idr.model.errors import HandleError, ResponseCode

MAX_HANDLE_LENGTH = 2048  # bytes, Handle.Net Common.MAX_HANDLE_LENGTH
NA_PREFIX = "0.NA"

_ASCII_UPPER = bytes.maketrans(b"abcdefghijklmnopqrstuvwxyz", b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
# One scan in C instead of a Python loop per character (every request parses a handle).
_CONTROL = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
_SPACE = re.compile(r"\s")  # str patterns: exactly str.isspace()


def normalize_key(handle: str) -> str:
    """The comparison key of a handle: ASCII letters upper-cased, everything else as is."""
    if handle.isascii():
        return handle.upper()
    return handle.encode("utf-8").translate(_ASCII_UPPER).decode("utf-8")


def _check_text(text: str, what: str) -> None:
    if _CONTROL.search(text) is not None:
        raise HandleError(ResponseCode.INVALID_HANDLE, f"{what} contains a control character")


def check_prefix(prefix: str) -> None:
    """A prefix is dot-separated non-empty segments, without '/' or white space."""
    if not prefix:
        raise HandleError(ResponseCode.INVALID_HANDLE, "empty prefix")
    _check_text(prefix, "prefix")
    if "/" in prefix:
        raise HandleError(ResponseCode.INVALID_HANDLE, f"prefix {prefix!r} contains '/'")
    if "" in prefix.split("."):
        raise HandleError(ResponseCode.INVALID_HANDLE, f"prefix {prefix!r} has an empty segment")
    if _SPACE.search(prefix) is not None:
        raise HandleError(ResponseCode.INVALID_HANDLE, f"prefix {prefix!r} contains a space")


@dataclass(frozen=True, slots=True)
class Handle:
    prefix: str
    suffix: str

    @classmethod
    def parse(cls, text: str) -> Handle:
        """Split and validate; raises ``HandleError(INVALID_HANDLE)`` with a reason."""
        if not isinstance(text, str):
            raise HandleError(ResponseCode.INVALID_HANDLE, "handle must be text")
        if not text:
            raise HandleError(ResponseCode.INVALID_HANDLE, "empty handle")
        if len(text.encode("utf-8", "surrogatepass")) > MAX_HANDLE_LENGTH:
            raise HandleError(ResponseCode.INVALID_HANDLE, f"handle longer than {MAX_HANDLE_LENGTH} bytes")
        _check_text(text, "handle")
        prefix, sep, suffix = text.partition("/")
        if not sep:
            raise HandleError(ResponseCode.INVALID_HANDLE, f"handle {text!r} has no '/'")
        if not prefix:
            raise HandleError(ResponseCode.INVALID_HANDLE, f"handle {text!r} has an empty prefix")
        if not suffix:
            raise HandleError(ResponseCode.INVALID_HANDLE, f"handle {text!r} has an empty suffix")
        check_prefix(prefix)
        if normalize_key(prefix) == NA_PREFIX.upper():
            check_prefix(suffix)  # a prefix handle names a prefix
        return cls(prefix, suffix)

    def __str__(self) -> str:
        return f"{self.prefix}/{self.suffix}"

    @property
    def key(self) -> str:
        return normalize_key(str(self))

    @property
    def is_prefix_handle(self) -> bool:
        """``0.NA/<prefix>``: the record that says who administers and serves a prefix."""
        return normalize_key(self.prefix) == "0.NA"


def prefix_handle(prefix: str) -> str:
    """``88.100`` → ``0.NA/88.100``."""
    return f"{NA_PREFIX}/{prefix}"
