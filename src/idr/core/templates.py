"""Identifier data templates (标识数据模板): what a registration in an industry must carry.

A secondary node publishes templates per industry; a registration *claims* one with a value
at index 1001 (the index SNMS v5 reserves for the template) of type ``IDR.TEMPLATE`` whose
data is ``<template id>@<version>`` (e.g. ``battery-cell@1``). Each template field is a value
whose type is the field name (SNMS's shape: one value per attribute). A claimed template is
checked on every write, and a bad registration is refused with ``INVALID_VALUE`` whose
message is JSON listing every failing field and why, so a client can show them all at once.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from idr.model.value import HandleValue

TEMPLATE_INDEX = 1001
TEMPLATE_TYPE = "IDR.TEMPLATE"
MAX_FIELD_BYTES = 4096

# ISO 3779 / GB 16735: VIN letters exclude I, O, Q; the 9th character is a check digit
# (the North American scheme, which GB 16735 adopts for vehicles sold in China).
_VIN_VALUES = {
    **{str(d): d for d in range(10)},
    **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
    **dict(zip("JKLMN", range(1, 6), strict=True)),
    "P": 7,
    "R": 9,
    **dict(zip("STUVWXYZ", range(2, 10), strict=True)),
}
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)


def vin_check_digit(vin: str) -> str:
    """The check character (``0``–``9`` or ``X``) for a 17-character VIN."""
    total = sum(_VIN_VALUES[c] * w for c, w in zip(vin.upper(), _VIN_WEIGHTS, strict=True))
    r = total % 11
    return "X" if r == 10 else str(r)


def vin_error(vin: str) -> str | None:
    """Why ``vin`` is not a valid VIN, or None."""
    v = vin.strip().upper()
    if len(v) != 17:
        return f"a VIN has 17 characters, not {len(v)}"
    bad = sorted({c for c in v if c not in _VIN_VALUES})
    if bad:
        return f"character(s) {''.join(bad)!r} not allowed in a VIN (I, O, Q and symbols are excluded)"
    want = vin_check_digit(v)
    if v[8] != want:
        return f"check digit (9th character) is {v[8]!r}, expected {want!r}"
    return None


@dataclass(frozen=True)
class Field:
    """One attribute: its name (the value type carrying it), kind, and whether it must be there.

    Kinds: ``string``, ``integer``, ``decimal``, ``date`` (ISO ``YYYY-MM-DD``), ``handle``
    (a reference ``prefix/suffix``), ``vin``, ``enum`` (one of ``choices``).
    """

    name: str
    kind: str = "string"
    required: bool = True
    description: str = ""
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None

    def error(self, text: str) -> str | None:
        """Why ``text`` is not a good value for this field, or None."""
        if not text.strip():
            return "empty"
        if self.kind == "integer":
            if not re.fullmatch(r"-?\d{1,18}", text.strip()):
                return f"{text!r} is not an integer"
            return self._range(float(text))
        if self.kind == "decimal":
            try:
                num = float(text)
            except ValueError:
                return f"{text!r} is not a number"
            if num != num or num in (float("inf"), float("-inf")):
                return f"{text!r} is not a finite number"
            return self._range(num)
        if self.kind == "date":
            try:
                dt.date.fromisoformat(text.strip())
            except ValueError:
                return f"{text!r} is not a date YYYY-MM-DD"
            return None
        if self.kind == "handle":
            prefix, sep, suffix = text.strip().partition("/")
            if not (sep and prefix and suffix) or any(not p for p in prefix.split(".")):
                return f"{text!r} is not a handle reference prefix/suffix"
            return None
        if self.kind == "vin":
            return vin_error(text)
        if self.kind == "enum" and text.strip() not in self.choices:
            return f"{text!r} is not one of {', '.join(self.choices)}"
        return None

    def _range(self, num: float) -> str | None:
        if self.minimum is not None and num < self.minimum:
            return f"{num:g} is below the minimum {self.minimum:g}"
        if self.maximum is not None and num > self.maximum:
            return f"{num:g} is above the maximum {self.maximum:g}"
        return None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name, "kind": self.kind, "required": self.required}
        if self.description:
            out["description"] = self.description
        if self.choices:
            out["choices"] = list(self.choices)
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return out


@dataclass(frozen=True)
class Template:
    id: str
    version: int
    name: str
    industry: str
    fields: tuple[Field, ...]

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "version": self.version,
            "ref": self.ref,
            "name": self.name,
            "industry": self.industry,
            "claim": {"index": TEMPLATE_INDEX, "type": TEMPLATE_TYPE, "data": self.ref},
            "fields": [f.to_json() for f in self.fields],
        }


@dataclass(frozen=True)
class FieldError:
    field: str
    reason: str


@dataclass(frozen=True)
class TemplateErrors:
    """Every failing field of one registration."""

    template: str
    errors: tuple[FieldError, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "template": self.template,
            "errors": [{"field": e.field, "reason": e.reason} for e in self.errors],
        }

    def message(self, handle: str) -> str:
        """The INVALID_VALUE message: JSON, so HTTP and native clients can show each field."""
        return json.dumps({"handle": handle, **self.to_json()}, ensure_ascii=False, separators=(",", ":"))


BATTERY_CELL = Template(
    "battery-cell",
    1,
    "Power battery cell 动力电池电芯",
    "battery",
    (
        Field("manufacturer", description="maker's registered name"),
        Field("model"),
        Field("chemistry", "enum", choices=("LFP", "NMC", "NCA", "LMO", "LTO", "Na-ion")),
        Field("capacity_ah", "decimal", minimum=0.1, maximum=2000),
        Field("production_date", "date"),
        Field("batch"),
    ),
)
BATTERY_PACK = Template(
    "battery-pack",
    1,
    "Power battery pack 动力电池包",
    "battery",
    (
        Field("manufacturer"),
        Field("model"),
        Field("energy_kwh", "decimal", minimum=0.1, maximum=1000),
        Field("cell_count", "integer", minimum=1, maximum=10000),
        Field("cell", "handle", description="a cell of the pack (reference)"),
        Field("production_date", "date"),
    ),
)
VEHICLE = Template(
    "vehicle",
    1,
    "New-energy vehicle 新能源汽车",
    "automotive",
    (
        Field("vin", "vin", description="ISO 3779 vehicle identification number"),
        Field("model"),
        Field("production_date", "date"),
        Field("battery_pack", "handle", description="the traction battery pack (reference)"),
    ),
)


@dataclass
class TemplateRegistry:
    """The templates a node publishes, by ``id@version``."""

    templates: dict[str, Template] = field(default_factory=dict)

    @classmethod
    def builtin(cls) -> TemplateRegistry:
        return cls({t.ref: t for t in (BATTERY_CELL, BATTERY_PACK, VEHICLE)})

    def add(self, t: Template) -> None:
        self.templates[t.ref] = t

    def all(self) -> list[Template]:
        return sorted(self.templates.values(), key=lambda t: (t.id, t.version))

    def get(self, ref: str) -> Template | None:
        """By ``id@version``, or by ``id`` alone for its newest version."""
        if "@" in ref:
            return self.templates.get(ref)
        versions = [t for t in self.templates.values() if t.id == ref]
        return max(versions, key=lambda t: t.version) if versions else None

    def check(self, values: Sequence[HandleValue]) -> TemplateErrors | None:
        """Field errors of a registration that claims a template; None if it is fine or claims none."""
        claim = next((v for v in values if v.type.upper() == TEMPLATE_TYPE), None)
        if claim is None:
            return None
        ref = claim.data.decode("utf-8", "replace").strip()
        template = self.templates.get(ref)
        if template is None:
            known = ", ".join(sorted(self.templates))
            return TemplateErrors(
                ref, (FieldError(TEMPLATE_TYPE, f"unknown template {ref!r} (known: {known})"),)
            )
        errors = list(_field_errors(template, values))
        return TemplateErrors(ref, tuple(errors)) if errors else None


def _field_errors(template: Template, values: Iterable[HandleValue]) -> Iterable[FieldError]:
    by_type: dict[str, list[HandleValue]] = {}
    for v in values:
        by_type.setdefault(v.type.lower(), []).append(v)
    for f in template.fields:
        found = by_type.get(f.name.lower(), [])
        if not found:
            if f.required:
                yield FieldError(f.name, "required field is missing")
            continue
        for v in found:
            if len(v.data) > MAX_FIELD_BYTES:
                yield FieldError(f.name, f"longer than {MAX_FIELD_BYTES} bytes")
                continue
            try:
                text = v.data.decode("utf-8")
            except UnicodeDecodeError:
                yield FieldError(f.name, "not UTF-8 text")
                continue
            reason = f.error(text)
            if reason:
                yield FieldError(f.name, reason)
