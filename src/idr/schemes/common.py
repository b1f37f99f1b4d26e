"""What every scheme shares: one error type, the longest-match choice of a prefix and the
way back from a handle to the identifier it names."""

from __future__ import annotations

from collections.abc import Callable, Iterable

# Whether this node (or the federation it can see) holds a prefix, e.g. ``GS1.6901234``.
Holds = Callable[[str], bool]


class SchemeError(ValueError):
    """An identifier that does not follow its scheme's syntax; the message says which rule."""

    def __init__(self, scheme: str, message: str) -> None:
        super().__init__(message)
        self.scheme = scheme
        self.message = message


def longest_held(candidates: Iterable[str], holds: Holds) -> str | None:
    """The first (longest) candidate prefix ``holds`` accepts.

    A scheme's identifiers do not say where the delegated part ends (a GTIN does not
    encode the length of its company prefix, an OID not which arc was delegated), so the
    node tries the candidates from the most specific down — as DNS walks labels.
    """
    for prefix in candidates:
        if holds(prefix):
            return prefix
    return None


def handle_suffix(handle: str, scheme: str) -> str:
    """The identifier part of ``handle`` (after the first '/'): every scheme writes its
    identifier there, so the suffix alone gives it back."""
    _, sep, suffix = handle.partition("/")
    if not sep:
        raise SchemeError(scheme, f"{handle!r} is not a handle")
    return suffix
