"""Converged resolution's first step: which scheme is this text, and which handle does it map to.

Shared by every front-end (HTTP ``/api/resolve``, the native protocol), so the rules live
once. In order:

1. ``urn:oid:…`` → OID; ``ecode:…`` / ``urn:ecode:…`` → Ecode (explicit markers win);
2. what a scanner sends — a symbology identifier (``]d2…``, ``]C1…``, ``]Q3…``), FNC1 as
   ``^`` or a GS (0x1D) separator — → GS1 scan;
3. ``(01)…`` → GS1 element string; ``/01/…`` or ``scheme://…`` → GS1 Digital Link (http
   and https only; other schemes are refused as such);
4. text with a ``/`` (optionally ``hdl:``-prefixed) → Handle;
5. digits and dots → OID;
6. 8/12/13/14 digits with a valid GS1 check digit → GTIN;
7. raw AI data that is a complete, valid GS1 message (``0109506000134352…``) → GS1;
8. other text → Ecode if it parses.

Rules 6 and 7 make a digit string GS1 when it could also be an Ecode; write ``ecode:…`` to
force an Ecode.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from idr.model.errors import HandleError
from idr.model.handle import Handle
from idr.schemes import ecode, gs1, oid
from idr.schemes.common import Holds, SchemeError, longest_held

Scheme = Literal["handle", "gs1", "oid", "ecode"]
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
MAX_INPUT = 2048  # as long as a handle may be; nothing longer is any of these schemes


@dataclass(frozen=True, slots=True)
class SchemeRoots:
    """The prefixes under which each scheme's identifiers live in this federation."""

    gs1: str = gs1.DEFAULT_ROOT
    oid: str = oid.DEFAULT_ROOT
    ecode: str = ecode.DEFAULT_ROOT


@dataclass(frozen=True, slots=True)
class Recognised:
    """``handle``: under the longest prefix ``holds`` accepted, else under the scheme root.

    ``candidates``: every prefix that could hold it, most specific first. ``key``: the
    parsed identifier (gs1.DigitalLink, oid.Oid, ecode.Ecode or model.Handle).
    """

    scheme: Scheme
    handle: str
    details: Mapping[str, object] = field(default_factory=dict)
    candidates: tuple[str, ...] = ()
    key: object = None


def _pick(candidates: tuple[str, ...], holds: Holds | None) -> str:
    if holds is not None:
        held = longest_held(candidates, holds)
        if held is not None:
            return held
    return candidates[-1]


def gs1_details(dl: gs1.DigitalLink) -> dict[str, object]:
    return {
        "primaryKey": dl.primary,
        "keyName": gs1.ai_title(dl.primary),
        "value": dl.value,
        "qualifiers": dict(dl.qualifiers),
        "attributes": dict(dl.attributes),
        "path": dl.path(),
        "elementString": dl.element_string(),
    }


def _gs1(dl: gs1.DigitalLink, holds: Holds | None, roots: SchemeRoots) -> Recognised:
    cands = gs1.candidate_prefixes(dl, roots.gs1)
    return Recognised("gs1", gs1.to_handle(dl, _pick(cands, holds)), gs1_details(dl), cands, dl)


def _oid(o: oid.Oid, holds: Holds | None, roots: SchemeRoots) -> Recognised:
    cands = oid.candidate_prefixes(o, roots.oid)
    details = {"oid": str(o), "urn": o.urn}
    return Recognised("oid", oid.to_handle(o, _pick(cands, holds)), details, cands, o)


def _ecode(e: ecode.Ecode, holds: Holds | None, roots: SchemeRoots) -> Recognised:
    if e.gs1 is not None:  # V0: GS1-compatible, resolved as GS1
        r = _gs1(e.gs1, holds, roots)
        details = {"version": 0, "ecode": str(e), "resolvedAs": "gs1", "gs1": r.details}
        return Recognised("ecode", r.handle, details, r.candidates, e)
    cands = ecode.candidate_prefixes(e, roots.ecode)
    details = {"version": e.version, "nsi": e.nsi, "md": e.md, "ecode": str(e)}
    return Recognised("ecode", ecode.to_handle(e, _pick(cands, holds)), details, cands, e)


def _handle(text: str) -> Recognised:
    try:
        h = Handle.parse(text)
    except HandleError as e:
        raise SchemeError("handle", e.message) from e
    return Recognised("handle", str(h), {"prefix": h.prefix, "suffix": h.suffix}, (h.prefix,), h)


def recognise(text: str, holds: Holds | None = None, roots: SchemeRoots | None = None) -> Recognised:
    """Classify ``text`` and map it to a handle; SchemeError says why it is none of them."""
    roots = roots or SchemeRoots()
    t = text.strip()
    if not t:
        raise SchemeError("unknown", "empty identifier")
    if len(t.encode("utf-8", "surrogatepass")) > MAX_INPUT:
        raise SchemeError("unknown", f"identifier longer than {MAX_INPUT} bytes")
    low = t[:16].lower()
    if low.startswith(oid.URN_PREFIX):
        return _oid(oid.parse(t), holds, roots)
    if low.startswith(ecode.EXPLICIT_PREFIXES):
        return _ecode(ecode.parse(t), holds, roots)
    if t[0] in "]^(/" or gs1.GS in t or _URI.match(t):
        return _gs1(gs1.parse(t), holds, roots)
    if low.startswith("hdl:"):
        return _handle(t[4:])
    if "/" in t:
        return _handle(t)
    if oid.looks_like_oid(t):
        return _oid(oid.parse(t), holds, roots)
    if t.isdigit() and len(t) in (8, 12, 13, 14) and gs1.check_digit(t[:-1]) == int(t[-1]):
        return _gs1(gs1.make("01", gs1.pad_gtin(t)), holds, roots)
    raw_error: SchemeError | None = None
    if gs1.looks_raw(t):
        try:
            return _gs1(gs1.parse_raw(t), holds, roots)
        except SchemeError as e:
            raw_error = e
    try:
        return _ecode(ecode.parse(t), holds, roots)
    except SchemeError as e:
        if raw_error is not None:  # it read as GS1 data first: say what GS1 refused
            raise raw_error from e
        raise SchemeError(
            "unknown",
            f"{text!r} is not a Handle (prefix/suffix), GS1 key, OID or Ecode ({e.message})",
        ) from e


def root_candidates(handle: str, roots: SchemeRoots | None = None) -> tuple[str, ...] | None:
    """Candidate prefixes of a *root-form* handle (``GS1/01/…``, ``OID/1.2.…``, ``ECODE/…``).

    A node that holds no prefixes (a recursive node) cannot pick the longest held prefix
    itself, so clients send the identifier under its scheme root and the node locates the
    delegated prefix across the federation. None when ``handle`` is not under a scheme root
    or its suffix is not that scheme's canonical form (then it is an ordinary handle).
    """
    roots = roots or SchemeRoots()
    prefix, sep, suffix = handle.partition("/")
    if not sep or not suffix:
        return None
    p = prefix.upper()
    try:
        if p == roots.gs1.upper():
            return gs1.candidate_prefixes(gs1.from_handle(handle), roots.gs1)
        if p == roots.oid.upper():
            return oid.candidate_prefixes(oid.from_handle(handle), roots.oid)
        if p == roots.ecode.upper():
            code = ecode.from_handle(handle)
            if code.gs1 is not None:
                return None  # V0 is written under the GS1 root
            return ecode.candidate_prefixes(code, roots.ecode)
    except SchemeError:
        return None
    return None
