"""Object identifiers (ITU-T X.660, GB/T 17969.1) and their handles.

Accepted forms: dotted ``1.2.156.20009.5`` and ``urn:oid:1.2.156.20009.5`` (RFC 3061).
Rules checked, with the rule named in the error:

* numeric arcs only, no leading zeros (``01`` is not ``1``: the national OID registration
  centre and X.660 both write arcs without them);
* first arc 0, 1 or 2; under 0 and 1 the second arc is at most 39 (X.660 §A.2);
* at least two arcs; each label at most 63 bytes and the whole OID at most 100 bytes
  (the national registration centre's limits, which also keep an OID inside one DNS
  label per arc for ORS, X.672).

Alphanumeric and Chinese labels bound to numeric OIDs are not resolvable forms here.

Handles: an OID lives at ``<root>.<delegated arcs>/<the whole OID>``, e.g.
``OID.1.2.156.20009/1.2.156.20009.5.7`` when arc 1.2.156.20009 was delegated to the
node that holds prefix ``OID.1.2.156.20009``. Longest match picks the delegated arc, as
for GS1 company prefixes; the suffix alone gives the OID back.
"""

from __future__ import annotations

from dataclasses import dataclass

from idr.schemes.common import Holds, SchemeError, handle_suffix, longest_held

DEFAULT_ROOT = "OID"
MAX_LABEL_BYTES = 63
MAX_OID_BYTES = 100
URN_PREFIX = "urn:oid:"


def _err(message: str) -> SchemeError:
    return SchemeError("oid", message)


@dataclass(frozen=True, slots=True)
class Oid:
    arcs: tuple[int, ...]

    def __str__(self) -> str:
        return ".".join(str(a) for a in self.arcs)

    @property
    def urn(self) -> str:
        return URN_PREFIX + str(self)

    def is_under(self, other: Oid) -> bool:
        return self.arcs[: len(other.arcs)] == other.arcs


def parse(text: str) -> Oid:
    """Dotted or ``urn:oid:`` form → Oid; SchemeError naming the broken rule."""
    t = text.strip()
    if t[: len(URN_PREFIX)].lower() == URN_PREFIX:
        t = t[len(URN_PREFIX) :]
    if not t:
        raise _err("empty OID")
    if len(t.encode("utf-8")) > MAX_OID_BYTES:
        raise _err(f"OID longer than {MAX_OID_BYTES} bytes")
    labels = t.split(".")
    if len(labels) < 2:
        raise _err(f"OID {t!r} needs at least two arcs")
    arcs: list[int] = []
    for i, label in enumerate(labels, 1):
        if not label:
            raise _err(f"arc {i} of {t!r} is empty")
        if len(label.encode("utf-8")) > MAX_LABEL_BYTES:
            raise _err(f"arc {i} of {t!r} is longer than {MAX_LABEL_BYTES} bytes")
        if not (label.isascii() and label.isdigit()):
            raise _err(f"arc {i} ({label!r}) of {t!r} is not numeric")
        if len(label) > 1 and label[0] == "0":
            raise _err(f"arc {i} ({label!r}) of {t!r} has a leading zero")
        arcs.append(int(label))
    if arcs[0] > 2:
        raise _err(f"first arc of {t!r} must be 0, 1 or 2, not {arcs[0]}")
    if arcs[0] < 2 and arcs[1] > 39:
        raise _err(f"second arc of {t!r} must be at most 39 under arc {arcs[0]}, not {arcs[1]}")
    return Oid(tuple(arcs))


def looks_like_oid(text: str) -> bool:
    """Cheap shape test for detection: ``urn:oid:`` or digits and dots with at least two arcs."""
    t = text.strip()
    if t[: len(URN_PREFIX)].lower() == URN_PREFIX:
        return True
    return "." in t and all(p.isascii() and p.isdigit() for p in t.split("."))


def candidate_prefixes(oid: Oid, root: str = DEFAULT_ROOT) -> tuple[str, ...]:
    """``OID.1.2.156.20009.5``, ``OID.1.2.156.20009``, …, ``OID.1``, then ``OID``."""
    dotted = [str(a) for a in oid.arcs]
    return (*(f"{root}." + ".".join(dotted[:n]) for n in range(len(dotted), 0, -1)), root)


def to_handle(oid: Oid, prefix: str) -> str:
    return f"{prefix}/{oid}"


def from_handle(handle: str) -> Oid:
    return parse(handle_suffix(handle, "oid"))


def handle_for(oid: Oid, holds: Holds, root: str = DEFAULT_ROOT) -> str | None:
    prefix = longest_held(candidate_prefixes(oid, root), holds)
    return None if prefix is None else to_handle(oid, prefix)
